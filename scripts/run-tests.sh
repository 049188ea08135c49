#!/usr/bin/env bash
# The test command behind `make test`: start a throwaway PostgreSQL and Redis, then run pytest once over
# pytest-xdist workers; every database test is parametrised over SQLite and that PostgreSQL (each
# worker has its own database in the cluster, tests/helpers/databases.py).
#   VOXGATE_TEST_PG_PORT   the cluster's port (default 55432)
#   VOXGATE_TEST_REDIS_PORT the throwaway Redis's port (default PG port + 1000); each xdist worker
#                          uses its own numbered database in it (tests/helpers/redis.py)
#   VOXGATE_TEST_WORKERS   pytest-xdist workers (default three per core, at most 12: the real-time tests
#                          mostly wait, so more workers than cores pays, but each worker also loads the
#                          app and its models: on 2 cores 6 workers ran the suite in 405 s, 8 in 419 s and
#                          5 in 408 s; 0 runs in this process)
# Extra arguments go to pytest, e.g. `scripts/run-tests.sh -m "not slow"` for everything but the
# real-model, real-time acceptance tests.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${VOXGATE_TEST_PG_PORT:-55432}
cores=$(nproc)
workers=${VOXGATE_TEST_WORKERS:-$((cores * 3 > 12 ? 12 : cores * 3))}
redis_port=${VOXGATE_TEST_REDIS_PORT:-$((port + 1000))}
pgdir=$(mktemp -d /tmp/voxgate-pg.XXXXXX)
redisdir=$(mktemp -d /tmp/voxgate-redis.XXXXXX)
speechdir=$(mktemp -d /tmp/voxgate-speech.XXXXXX)
chmod 755 "$pgdir"
trap 'scripts/pg-throwaway.sh stop "$pgdir"; scripts/redis-throwaway.sh stop "$redisdir"; rm -rf "$speechdir"' EXIT
# the test modules' rewritten asserts, cached once while the databases start (each xdist worker
# would rewrite every module itself: tests/helpers/assert_cache.py)
.venv/bin/python -m tests.helpers.assert_cache tests &
warming=$!
url=$(scripts/pg-throwaway.sh start "$pgdir" "$port")
export VOXGATE_TEST_POSTGRES_URL="$url"
VOXGATE_TEST_REDIS_URL=$(scripts/redis-throwaway.sh start "$redisdir" "$redis_port")
export VOXGATE_TEST_REDIS_URL
export VOXGATE_REQUIRE_POSTGRES=1
# every worker the tests start keeps the prompts it renders in one folder, as workers sharing a volume
# do: each fixed prompt is synthesised once in the run, not once per worker (tests/test_voice_prompt_audio.py)
export VOXGATE_SPEECH_CACHE_DIR="$speechdir/prompts"
# and the sentence vectors of the agents' intent examples, computed once in the run, not once per worker
export VOXGATE_EMBEDDING_CACHE_DIR="$speechdir/embeddings"
# the agents speak with Pico, about a tenth of Piper's CPU: the tests of what they say need not pay for the
# neural voice in every worker (Piper itself: tests/test_voice_tts.py, and the calls of tests/test_voice_calls.py)
export VOXGATE_PIPER=0
# the bytecode of the package and of the demo back end, written once: with PYTHONDONTWRITEBYTECODE set (as on many CI images)
# every worker, demo, back-end and CLI process the tests start would otherwise compile them again
.venv/bin/python -m compileall -q -j 0 src examples/harbor-telecom/backend/harbor_backend >/dev/null
wait "$warming" || echo "the assert cache was not written; the workers rewrite the test modules themselves" >&2
parallel=()
if [ "$workers" != 0 ]; then
  # loadgroup: tests spread one by one, except those marked xdist_group(name), which share a worker
  # and in the order tests/conftest.py gives them (the longest first), not regrouped by size
  parallel=(-n "$workers" --dist loadgroup --no-loadscope-reorder)
fi
.venv/bin/python -m pytest -q "${parallel[@]}" "$@"
