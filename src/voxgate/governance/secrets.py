"""Resolve secret references (env:NAME, file:PATH, vault:PATH#KEY) at the moment of use.

`env:NAME` reads the environment variable NAME or, when it is not set, the file NAME in the
process's secrets directory (`use_secrets_dir`; voxgate's `secrets_dir` setting, by default
`<data_dir>/secrets`), the way Docker and Kubernetes mount secrets as files. So a server and
the command-line tools working on the same data directory resolve the same credentials
without anyone exporting them.

Values are never logged, stored or put in an error message: a SecretError names the reference
and what went wrong, nothing else.

`vault:MOUNT/PATH#KEY` reads key KEY of the KV version 2 secret PATH under mount MOUNT
(HashiCorp Vault or OpenBao) through `hvac`, with the address and token from VAULT_ADDR and
VAULT_TOKEN (and VAULT_NAMESPACE when set). A secret read from Vault is kept in memory for
VAULT_CACHE_TTL_S seconds so that a connector call does not cost a Vault round trip each time.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voxgate.errors import UnavailableError
from voxgate.store.files import private_dir, write_private

VAULT_CACHE_TTL_S = 30.0
VAULT_TIMEOUT_S = 5.0

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_secrets_dir: Path | None = None

_vault_cache: dict[tuple[str, str, str, str], tuple[float, dict[str, Any]]] = {}
_vault_lock = threading.Lock()


class SecretError(UnavailableError):
    """A reference that cannot be resolved; the message names the reference, never a value."""


def resolve_secret(ref: str) -> str:
    """The value of a secret reference (`env:NAME`, `file:PATH` or `vault:...`); SecretError says why not."""
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value:
            return value
        mounted = _mounted_secret(rest)
        if mounted:
            return mounted
        where = (
            f" and there is no file {_secrets_dir / rest}"
            if _secrets_dir is not None and _ENV_NAME_RE.match(rest)
            else ""
        )
        raise SecretError(f"secret {ref}: environment variable {rest} is not set{where}")
    if scheme == "file":
        path = Path(rest).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"secret {ref}: cannot read file ({exc.strerror})") from None
    if scheme == "vault":
        return _resolve_vault(ref, rest)
    raise SecretError(f"secret reference '{ref}' must start with env:, file: or vault:")


def use_secrets_dir(path: str | Path | None) -> None:
    """Where `env:NAME` falls back to the file NAME when the variable is not set (None: nowhere)."""
    global _secrets_dir
    _secrets_dir = Path(path).expanduser() if path is not None else None


def secrets_dir() -> Path | None:
    """The directory `env:NAME` falls back to in this process (None: none)."""
    return _secrets_dir


def write_secret_file(directory: str | Path, name: str, value: str) -> Path:
    """Store a secret as the file NAME in `directory` (0700), readable by its owner only (0600)."""
    if not _ENV_NAME_RE.match(name):
        raise SecretError(f"secret name '{name}' must look like an environment variable name")
    folder = Path(directory).expanduser()
    private_dir(folder)
    folder.chmod(0o700)
    path = folder / name
    write_private(path, (value + "\n").encode("utf-8"))
    return path


def _mounted_secret(name: str) -> str | None:
    if _secrets_dir is None or not _ENV_NAME_RE.match(name):
        return None
    try:
        return (_secrets_dir / name).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def clear_secret_cache() -> None:
    """Forget every secret read from Vault (e.g. after a rotation)."""
    with _vault_lock:
        _vault_cache.clear()


def _resolve_vault(ref: str, rest: str) -> str:
    path, sep, key = rest.partition("#")
    mount, _, sub = path.strip("/").partition("/")
    if not sep or not key or not mount or not sub:
        raise SecretError(f"secret {ref}: write vault:MOUNT/PATH#KEY, e.g. vault:secret/harbor#api_key")
    try:
        import hvac
        import hvac.exceptions as hvac_errors
        import requests
    except ImportError:
        raise SecretError(
            f"secret {ref}: Vault references need the 'vault' extra (pip install 'voxgate[vault]')"
        ) from None
    addr = os.environ.get("VAULT_ADDR", "").strip()
    token = os.environ.get("VAULT_TOKEN", "").strip()
    if not addr:
        raise SecretError(f"secret {ref}: VAULT_ADDR is not set")
    if urlsplit(addr).scheme not in ("http", "https") or not urlsplit(addr).hostname:
        raise SecretError(f"secret {ref}: VAULT_ADDR must be an http(s) URL such as https://vault.example:8200")
    if not token:
        raise SecretError(f"secret {ref}: VAULT_TOKEN is not set")

    # the token is part of the cache key (hashed): a different identity never sees cached values
    cache_key = (addr, hashlib.sha256(token.encode()).hexdigest(), mount, sub)
    with _vault_lock:
        hit = _vault_cache.get(cache_key)
    if hit is not None and time.monotonic() - hit[0] < VAULT_CACHE_TTL_S:
        data = hit[1]
    else:
        client = hvac.Client(
            url=addr, token=token, timeout=VAULT_TIMEOUT_S, namespace=os.environ.get("VAULT_NAMESPACE") or None
        )
        try:
            resp = client.secrets.kv.v2.read_secret_version(path=sub, mount_point=mount, raise_on_deleted_version=True)
        except hvac_errors.InvalidPath:
            raise SecretError(f"secret {ref}: no secret at {mount}/{sub} in Vault at {addr}") from None
        except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
            raise SecretError(f"secret {ref}: Vault at {addr} refused the token for {mount}/{sub}") from None
        except hvac_errors.VaultError as exc:
            raise SecretError(f"secret {ref}: Vault at {addr} answered with an error ({type(exc).__name__})") from None
        except requests.exceptions.RequestException as exc:
            raise SecretError(f"secret {ref}: Vault at {addr} is unreachable ({type(exc).__name__})") from None
        fetched = (resp or {}).get("data", {}).get("data") if isinstance(resp, dict) else None
        if not isinstance(fetched, dict):
            raise SecretError(f"secret {ref}: Vault at {addr} did not return a KV version 2 secret for {mount}/{sub}")
        data = fetched
        with _vault_lock:
            _vault_cache[cache_key] = (time.monotonic(), data)
    if key not in data:
        raise SecretError(f"secret {ref}: the secret {mount}/{sub} has no key '{key}'")
    value = data[key]
    if value is None or value == "":
        raise SecretError(f"secret {ref}: key '{key}' of {mount}/{sub} is empty")
    return value if isinstance(value, str) else str(value)
