"""Resolve secret references (env:NAME, file:PATH, vault:PATH#KEY) at the moment of use."""

from __future__ import annotations

import os
from pathlib import Path


class SecretError(Exception):
    """A reference that cannot be resolved; the message names the reference, never a value."""


def resolve_secret(ref: str) -> str:
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if not value:
            raise SecretError(f"secret {ref}: environment variable {rest} is not set")
        return value
    if scheme == "file":
        path = Path(rest).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"secret {ref}: cannot read file ({exc.strerror})") from None
    if scheme == "vault":
        raise SecretError(f"secret {ref}: Vault references need the 'vault' extra (not installed)")
    raise SecretError(f"secret reference '{ref}' must start with env:, file: or vault:")
