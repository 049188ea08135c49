"""Slow and numerous HTTP clients against a real worker on loopback, served the way `voxgate serve`
serves it (`api.server.server_config`): a request head that is not complete in time is closed, a
head that grows without end is refused, and past the connection limit requests get 503, while a
normal request still succeeds."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.helpers import loopback
from tests.helpers.servers import free_port
from voxgate.api.app import create_app
from voxgate.api.server import MAX_HEAD_BYTES, server_config
from voxgate.config import Settings

HALF_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"
FULL_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
PATIENCE_S = 60.0  # how long a test waits for the server to act; never a measure of how fast it did


@contextlib.contextmanager
def worker(tmp_path: Path, **limits: Any) -> Iterator[tuple[str, uvicorn.Server]]:
    settings = Settings(data_dir=tmp_path / "data", host="127.0.0.1", port=free_port(), log_level="warning", **limits)
    server = uvicorn.Server(server_config(create_app(settings, []), settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises on PATIENCE_S without a close)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def read_response(sock: socket.socket) -> bytes:
    """One whole response on a kept-alive connection (head and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {data[:80]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before the whole body"
        body += chunk
    return head + b"\r\n\r\n" + body


def health(url: str) -> int:
    return loopback.get(url + "/health", timeout=PATIENCE_S).status_code


def test_slow_client_half_headers_are_closed_and_others_still_served(tmp_path: Path) -> None:
    with worker(tmp_path, http_header_timeout_s=1.0, http_connection_limit=1000) as (url, _):
        slow = [connect(url) for _ in range(200)]
        try:
            for sock in slow:
                sock.sendall(HALF_HEAD)
            assert health(url) == 200  # served while 200 heads hang
            for sock in slow:
                answer = read_until_closed(sock)
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        finally:
            for sock in slow:
                sock.close()
        assert health(url) == 200


def test_slow_client_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    with worker(tmp_path, http_header_timeout_s=1.0) as (url, _), connect(url) as sock:
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_slow_client_second_request_on_a_kept_alive_connection_has_its_own_deadline(tmp_path: Path) -> None:
    with worker(tmp_path, http_header_timeout_s=1.0, http_keep_alive_s=120) as (url, _), connect(url) as sock:
        sock.sendall(FULL_REQUEST)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(HALF_HEAD)
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_slow_client_endless_header_is_refused(tmp_path: Path) -> None:
    with worker(tmp_path, http_header_timeout_s=120) as (url, _), connect(url) as sock:
        sock.sendall(HALF_HEAD + b"\r\n")
        try:
            for i in range(2 * MAX_HEAD_BYTES // 1024):
                sock.sendall(f"X-Filler-{i}: ".encode() + b"a" * 1000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed part way, as it should be
        try:
            answer = read_until_closed(sock)
        except ConnectionResetError:
            answer = b""  # closed with our filler still unread on its side: the kernel resets, the 431 may be lost
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert health(url) == 200


def test_slow_client_over_the_connection_limit_gets_503(tmp_path: Path) -> None:
    with worker(tmp_path, http_connection_limit=5, http_keep_alive_s=120, http_header_timeout_s=120) as (url, _):
        held = [connect(url) for _ in range(4)]  # the fifth open connection is the one refused
        try:
            for sock in held:  # a complete exchange each: the server has certainly counted them
                sock.sendall(FULL_REQUEST)
                assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            assert health(url) == 503
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + PATIENCE_S
        while (status := health(url)) == 503 and time.monotonic() < deadline:
            time.sleep(0.05)  # the server notices the closes on its own loop
        assert status == 200


@pytest.mark.parametrize(
    "name,value", [("http_header_timeout_s", 0), ("http_connection_limit", 0), ("http_keep_alive_s", 0)]
)
def test_slow_client_limits_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ValueError):
        Settings(**{name: value})


def test_slow_client_voxgate_serve_runs_with_the_limits(tmp_path: Path) -> None:
    """The command an operator runs, as a process: its environment's header timeout is the one in force."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")},
        "VOXGATE_DATA_DIR": str(tmp_path / "var"),
        "VOXGATE_PORT": str(port),
        "VOXGATE_HTTP_HEADER_TIMEOUT_S": "1",
        "VOXGATE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxgate.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            assert time.monotonic() < deadline, "voxgate serve did not start"
            try:
                if health(url) == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with connect(url) as sock:
            sock.sendall(HALF_HEAD)
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
