"""Request bodies over real sockets: a route answers 413 for a body over its limit without reading
it (a declared length, or a chunked body as it streams), a guarded route answers 401/403 before it
reads a body, and ordinary requests and bundle uploads still work.

"Without reading it" is shown by sending the head alone, or a body cut off mid-stream: the answer
comes back though the rest of the body never does (before the limits, the server waited for it).
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers.org import Org
from tests.helpers.servers import serving
from tests.helpers.uploads import harbor_files, signed_body
from voxgate.api.app import create_app
from voxgate.api.limits import BUNDLE_UPLOAD_BODY_BYTES, DEFAULT_BODY_BYTES

ANSWER_TIMEOUT_S = 20  # far longer than any answer takes; a server waiting for the body never answers
HUGE = 150 * 1024 * 1024


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Org:
    tmp = tmp_path_factory.mktemp("limits")
    return Org(f"sqlite:///{tmp / 'voxgate.db'}", tmp / "data")


@pytest.fixture(scope="module")
def worker(org: Org) -> Iterator[str]:
    with serving(create_app(org.settings, [])) as url:
        yield url


def exchange(url: str, head: str, *body: bytes) -> tuple[int, dict[str, str], Any]:
    """Send a request head (and the body pieces given, perhaps not all of the body it declares) on a
    fresh connection; the status, headers and JSON of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=ANSWER_TIMEOUT_S) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for piece in body:
            sock.sendall(piece)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)  # socket.timeout here: the server is still waiting for the body
            assert chunk, f"connection closed without an answer: {data!r}"
            data += chunk
        raw_head, rest = data.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the answer"
            rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest[:length]) if length else None


def post_head(path: str, length: int | None, token: str | None = None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return "\n".join(lines) + "\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_a_declared_150_mb_sign_in_is_refused_before_a_byte_of_it_is_sent(worker: str) -> None:
    status, headers, body = exchange(worker, post_head("/api/auth/login", HUGE))
    assert status == 413
    assert str(DEFAULT_BODY_BYTES) in body["detail"]
    assert headers.get("connection") == "close"  # the client cannot go on sending into it


def test_a_chunked_body_is_refused_once_it_passes_the_limit(worker: str) -> None:
    pieces = [chunk(b"x" * 16 * 1024) for _ in range(DEFAULT_BODY_BYTES // (16 * 1024) + 1)]  # no last chunk
    status, _, body = exchange(worker, post_head("/api/auth/login", None), *pieces)
    assert status == 413 and "bytes at most" in body["detail"]


def test_a_chunked_body_under_the_limit_is_read(worker: str) -> None:
    payload = json.dumps({"username": "nobody", "password": "not the password"}).encode()
    status, _, body = exchange(worker, post_head("/api/auth/login", None), chunk(payload), b"0\r\n\r\n")
    assert status == 401 and body["detail"] == "wrong username or password"


@pytest.mark.parametrize("length", [1000, HUGE, None])
def test_a_guarded_route_refuses_an_anonymous_body_unread(worker: str, length: int | None) -> None:
    # the head alone: a body of 1000 bytes (or a chunked one) never comes, yet the answer does
    status, headers, body = exchange(worker, post_head("/api/users", length))
    assert status == (413 if length == HUGE else 401)
    if status == 401:
        assert headers.get("x-voxgate-denied") == "user.manage" and headers.get("www-authenticate") == "Bearer"


def test_a_guarded_route_refuses_a_bad_token_or_a_missing_right_unread(worker: str, org: Org) -> None:
    status, _, body = exchange(worker, post_head("/api/users", 1000, token="vxg_" + "x" * 43))
    assert status == 401 and "API token" in body["detail"]
    status, headers, _ = exchange(worker, post_head("/api/users", 1000, token=org.auditor))  # may not manage users
    assert status == 403 and headers.get("x-voxgate-denied") == "user.manage"


def test_a_permitted_body_over_the_limit_is_still_refused(worker: str, org: Org) -> None:
    status, _, _ = exchange(worker, post_head("/api/environments/dev/bundles", HUGE, token=org.maker))
    assert status == 413
    pieces = [chunk(b" " * 64 * 1024) for _ in range(BUNDLE_UPLOAD_BODY_BYTES // (64 * 1024) + 1)]
    status, _, body = exchange(worker, post_head("/api/environments/dev/bundles", None, token=org.maker), *pieces)
    assert status == 413 and str(BUNDLE_UPLOAD_BODY_BYTES) in body["detail"]


def test_ordinary_requests_and_bundle_uploads_still_work(worker: str, org: Org) -> None:
    maker = {"Authorization": f"Bearer {org.maker}"}
    with httpx.Client(base_url=worker, timeout=60, trust_env=False) as client:
        r = client.post("/api/me/keys", json={"public_key": org.key.public.b64}, headers=maker)
        assert r.status_code == 201, r.text
        upload = signed_body(org, harbor_files())
        r = client.post("/api/environments/dev/bundles", json=upload, headers=maker)
        assert r.status_code == 201, r.text
        # larger than any other route takes, well within the bundle route's own limit: the route decides
        big = {**upload, "archive": base64.b64encode(b"\0" * 3 * DEFAULT_BODY_BYTES).decode()}
        r = client.post("/api/environments/dev/bundles", json=big, headers=maker)
        assert r.status_code in (413, 422) and "bundle rejected" in r.text  # the archive is not a bundle
        just_over = {"username": "x" * DEFAULT_BODY_BYTES, "password": "p"}
        assert client.post("/api/auth/login", json=just_over).status_code == 413
        assert client.post("/api/auth/login", json={"username": "nobody", "password": "p"}).status_code == 401
        assert client.get("/health").json()["status"] == "ok"


def test_the_worker_is_healthy_after_all_of_it(worker: str) -> None:
    with httpx.Client(base_url=worker, timeout=60, trust_env=False) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200
