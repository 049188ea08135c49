"""What a cluster of workers shares while it is live: Redis (or Valkey) holds calls admitted,
chat sessions between turns, the desk, throttles, leases and notifications; PostgreSQL stays the
record. Without `VOXGATE_REDIS_URL` one process holds all of it in memory, as it always has."""
