"""Observability: live figures about calls and turns, analytics, alerts, usage, metrics and traces."""
