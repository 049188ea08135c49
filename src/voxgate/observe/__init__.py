"""Observability: live figures about calls and turns (more arrives with the observability issue)."""
