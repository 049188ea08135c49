"""vault:MOUNT/PATH#KEY references through hvac, against a local server speaking Vault's KV v2 read API.

No Vault binary ships with the test environment, so a small HTTP server answers the one call
hvac makes (GET /v1/MOUNT/data/PATH with X-Vault-Token), with Vault's response shape.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from voxgate.governance.secrets import SecretError, clear_secret_cache, resolve_secret

TOKEN = "s.test-token-value"
SECRETS = {"secret/data/harbor": {"api_key": "harbor-key-value-123", "other": "other-value-456"}}


class _KvV2(BaseHTTPRequestHandler):
    requests: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        type(self).requests.append((self.path, self.headers.get("X-Vault-Token")))
        if self.headers.get("X-Vault-Token") != TOKEN:
            return self._send(403, {"errors": ["permission denied"]})
        path = self.path.split("?", 1)[0].removeprefix("/v1/")
        data = SECRETS.get(path)
        if data is None:
            return self._send(404, {"errors": []})
        self._send(200, {"data": {"data": data, "metadata": {"version": 3, "deletion_time": "", "destroyed": False}}})

    def _send(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def vault(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_KvV2]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KvV2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _KvV2.requests = []
    clear_secret_cache()
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    yield _KvV2
    server.shutdown()
    server.server_close()
    clear_secret_cache()


def _no_values(message: str) -> None:
    for value in (*SECRETS["secret/data/harbor"].values(), TOKEN):
        assert value not in message


def test_reads_a_key_of_a_kv2_secret(vault: type[_KvV2]) -> None:
    assert resolve_secret("vault:secret/harbor#api_key") == "harbor-key-value-123"
    assert vault.requests[0][0].startswith("/v1/secret/data/harbor") and vault.requests[0][1] == TOKEN
    # cached for a while: a connector call does not cost a Vault round trip each time
    assert resolve_secret("vault:secret/harbor#other") == "other-value-456"
    assert len(vault.requests) == 1
    clear_secret_cache()
    resolve_secret("vault:secret/harbor#api_key")
    assert len(vault.requests) == 2


def test_errors_name_the_reference_never_a_value(vault: type[_KvV2], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SecretError, match="the secret secret/harbor has no key 'password'") as err:
        resolve_secret("vault:secret/harbor#password")
    _no_values(str(err.value))
    with pytest.raises(SecretError, match="no secret at secret/billing") as err:
        resolve_secret("vault:secret/billing#api_key")
    _no_values(str(err.value))
    monkeypatch.setenv("VAULT_TOKEN", "s.wrong")
    with pytest.raises(SecretError, match="refused the token") as err:
        resolve_secret("vault:secret/harbor#api_key")
    assert "s.wrong" not in str(err.value)


def test_unreachable_or_unconfigured_vault_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_secret_cache()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    with pytest.raises(SecretError, match=rf"Vault at http://127.0.0.1:{port} is unreachable") as err:
        resolve_secret("vault:secret/harbor#api_key")
    _no_values(str(err.value))
    monkeypatch.delenv("VAULT_ADDR")
    with pytest.raises(SecretError, match="VAULT_ADDR is not set"):
        resolve_secret("vault:secret/harbor#api_key")
    monkeypatch.setenv("VAULT_ADDR", "vault.internal:8200")
    with pytest.raises(SecretError, match="VAULT_ADDR must be an http"):
        resolve_secret("vault:secret/harbor#api_key")
    with pytest.raises(SecretError, match="write vault:MOUNT/PATH#KEY"):
        resolve_secret("vault:harbor#api_key")
