"""The CLI's HTTP client against real servers on loopback: login, where the server and token come
from, one-line failures, and `voxgate chat` printing a conversation (here and on a running worker)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.helpers.org import PASSWORD
from tests.helpers.paths import HARBOR_AGENT, ROOT
from tests.helpers.servers import free_port, serving
from voxgate.api.app import create_app
from voxgate.cli import app as cli
from voxgate.cli.client import open_client
from voxgate.config import Settings
from voxgate.tls import API_CLIENT_KEEPALIVE_S

OPENING_HOURS = "Harbor Telecom stores are open Monday to Friday"


def _env(tmp_path: Path, **extra: str | None) -> dict[str, str | None]:
    """No server from this machine's environment, a credentials file in tmp_path, an empty data dir."""
    env: dict[str, str | None] = {
        "VOXGATE_URL": None,
        "VOXGATE_TOKEN": None,
        "VOXGATE_PASSWORD": None,
        "VOXGATE_CREDENTIALS": str(tmp_path / "credentials.json"),
        "VOXGATE_DATA_DIR": str(tmp_path / "cli-data"),
    }
    env.update(extra)
    return env


def _invoke(args: list[str], env: dict[str, str | None], stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, args, env=env, input=stdin)


def _one_line_failure(result: Any) -> str:
    """The single stderr line of a failed command (exit 1, no traceback)."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture()
def worker(tmp_path: Path, harbor_bundle: Any, harbor_backend: Any) -> Iterator[str]:
    """A dev worker serving the Harbor agent; its conversation API is public."""
    settings = Settings(
        data_dir=tmp_path / "worker", database_url=f"sqlite:///{tmp_path / 'worker.db'}", environment="dev"
    )
    with serving(create_app(settings, [harbor_bundle])) as url:
        yield url


# ---- login ------------------------------------------------------------------------------------------


def test_login_from_a_password_file_saves_a_private_token_that_later_commands_use(
    release_server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, _ = release_server
    password_file = tmp_path / "mia.password"
    password_file.write_text(PASSWORD + "\n")  # as `voxgate demo` writes them: a trailing newline
    env = {k: v for k, v in os.environ.items() if k not in ("VOXGATE_URL", "VOXGATE_TOKEN", "VOXGATE_PASSWORD")}
    env.update(
        {
            "VOXGATE_CREDENTIALS": str(tmp_path / "cfg" / "credentials.json"),
            "VOXGATE_DATA_DIR": str(tmp_path / "cli-data"),
        }
    )
    with password_file.open() as stdin:  # a real shell redirect: `--password-stdin < FILE`
        done = subprocess.run(
            [sys.executable, "-m", "voxgate.cli", "login", "--url", url, "--username", "mia", "--password-stdin"],
            stdin=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert "signed in" in done.stdout and "mia" in done.stdout
    saved_path = tmp_path / "cfg" / "credentials.json"
    assert stat.S_IMODE(saved_path.stat().st_mode) == 0o600
    saved = json.loads(saved_path.read_text())
    assert saved["url"] == url and saved["username"] == "mia" and saved["token"].startswith("vxg_")
    history = _invoke(
        ["release", "history", "--env", "dev", "--json"], _env(tmp_path, VOXGATE_CREDENTIALS=str(saved_path))
    )
    assert history.exit_code == 0, history.output
    assert json.loads(history.stdout) == []


def test_login_with_the_password_in_the_environment_and_a_wrong_password(
    release_server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, _ = release_server
    saved_path = tmp_path / "credentials.json"
    saved_path.write_text("{}")
    saved_path.chmod(0o644)  # an existing, too-open file is made private again
    ok = _invoke(["login", "--url", url + "/", "--username", "aaron"], _env(tmp_path, VOXGATE_PASSWORD=PASSWORD))
    assert ok.exit_code == 0, ok.output
    assert stat.S_IMODE(saved_path.stat().st_mode) == 0o600
    saved = json.loads(saved_path.read_text())
    assert saved["url"] == url and saved["username"] == "aaron"
    history = _invoke(["release", "history", "--env", "prod"], _env(tmp_path))
    assert history.exit_code == 0, history.output

    wrong = _invoke(
        ["login", "--url", url, "--username", "aaron", "--password-stdin"], _env(tmp_path), stdin="not the password\n"
    )
    line = _one_line_failure(wrong)
    assert "wrong username or password" in line and url in line
    assert json.loads(saved_path.read_text())["token"] == saved["token"]  # the saved token is left alone


def test_login_to_a_wrong_port_or_without_a_scheme_is_one_line(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    line = _one_line_failure(
        _invoke(["login", "--url", closed, "--username", "mia", "--password-stdin"], _env(tmp_path), stdin="x\n")
    )
    assert closed in line and "cannot connect" in line
    line = _one_line_failure(
        _invoke(
            ["login", "--url", "127.0.0.1:8600", "--username", "mia", "--password-stdin"], _env(tmp_path), stdin="x\n"
        )
    )
    assert "127.0.0.1:8600" in line and "http://127.0.0.1:8600" in line and "scheme" in line
    assert not (tmp_path / "credentials.json").exists()


# ---- which server and token ---------------------------------------------------------------------------


def test_server_commands_with_a_wrong_port_or_no_scheme_fail_in_one_line(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    line = _one_line_failure(
        _invoke(
            ["release", "history", "--env", "dev"], _env(tmp_path, VOXGATE_URL=closed, VOXGATE_TOKEN="vxg_whatever")
        )
    )
    assert closed in line and "VOXGATE_URL" in line
    line = _one_line_failure(
        _invoke(["incidents", "list"], _env(tmp_path, VOXGATE_URL="127.0.0.1:8600", VOXGATE_TOKEN="vxg_whatever"))
    )
    assert "127.0.0.1:8600" in line and "http://" in line
    line = _one_line_failure(
        _invoke(["user", "list"], _env(tmp_path, VOXGATE_URL="ftp://127.0.0.1", VOXGATE_TOKEN="vxg_whatever"))
    )
    assert "ftp://127.0.0.1" in line and "http" in line
    line = _one_line_failure(
        _invoke(
            ["user", "list"],
            _env(tmp_path, VOXGATE_URL="http://no-such-host.invalid:8600", VOXGATE_TOKEN="vxg_whatever"),
        )
    )
    assert "no-such-host.invalid" in line and "resolve" in line
    # and nothing configured at all: say how to get a server and a token
    line = _one_line_failure(_invoke(["release", "history", "--env", "dev"], _env(tmp_path)))
    assert "voxgate login --url" in line and "voxgate demo" in line


def test_a_process_sees_the_same_one_line_failure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
    env.update(
        {"VOXGATE_URL": f"http://127.0.0.1:{free_port()}", "VOXGATE_TOKEN": "vxg_x", "VOXGATE_DATA_DIR": str(tmp_path)}
    )
    done = subprocess.run(
        [sys.executable, "-m", "voxgate.cli", "release", "history", "--env", "dev"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and env["VOXGATE_URL"] in done.stderr


def test_the_demo_profile_is_the_last_resort_and_the_order_holds(
    release_server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, tokens = release_server
    data = tmp_path / "cli-data"
    data.mkdir()
    (data / "demo-profile.json").write_text(json.dumps({"url": url, "token": tokens["olga"], "username": "olga"}))
    env = _env(tmp_path, VOXGATE_CREDENTIALS=str(tmp_path / "missing" / "credentials.json"))
    history = _invoke(["release", "history", "--env", "prod", "--json"], env)
    assert history.exit_code == 0, history.output
    assert json.loads(history.stdout) == []

    # a credentials file comes before the demo profile: its (dead) server is the one tried
    closed = f"http://127.0.0.1:{free_port()}"
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"url": closed, "token": tokens["olga"], "username": "olga"}))
    line = _one_line_failure(_invoke(["release", "history", "--env", "prod"], _env(tmp_path)))
    assert closed in line and str(creds) in line
    # and VOXGATE_URL comes before both (the saved token still goes with it)
    ok = _invoke(["release", "history", "--env", "prod"], _env(tmp_path, VOXGATE_URL=url))
    assert ok.exit_code == 0, ok.output


def test_a_refused_saved_token_says_to_log_in_again(release_server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, _ = release_server
    (tmp_path / "credentials.json").write_text(json.dumps({"url": url, "token": "vxg_revoked", "username": "x"}))
    line = _one_line_failure(_invoke(["release", "history", "--env", "dev"], _env(tmp_path)))
    assert "refused" in line and "voxgate login" in line and str(tmp_path / "credentials.json") in line
    # the server's own explanations keep their form: status, error and rule
    _, tokens = release_server
    denied = _invoke(["user", "list"], _env(tmp_path, VOXGATE_URL=url, VOXGATE_TOKEN=tokens["mia"]))
    assert denied.exit_code == 1 and "GET /api/users: 403" in denied.stderr


# ---- chat ---------------------------------------------------------------------------------------------

SAYS = ["what are your opening hours", "talk to a person please"]


def _chat_args(says: list[str]) -> list[str]:
    return [arg for text in says for arg in ("--say", text)]


def test_local_scripted_chat_prints_the_conversation(tmp_path: Path) -> None:
    result = _invoke(["chat", str(HARBOR_AGENT), "--demo-backend", "--no-store", *_chat_args(SAYS[:1])], _env(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("agent: Thanks for calling Harbor Telecom")
    assert lines[1] == "caller: what are your opening hours"
    assert lines[2].startswith(f"agent: {OPENING_HOURS}")
    assert lines[-1].startswith("outcome: ")


def test_chat_with_a_running_worker_prints_what_a_local_chat_prints(worker: str, tmp_path: Path) -> None:
    remote = _invoke(["chat", "--url", worker, "--agent", "harbor-support", *_chat_args(SAYS)], _env(tmp_path))
    assert remote.exit_code == 0, remote.output
    lines = remote.stdout.strip().splitlines()
    assert lines[0].startswith("agent: Thanks for calling Harbor Telecom")
    assert lines[1] == "caller: what are your opening hours" and lines[2].startswith(f"agent: {OPENING_HOURS}")
    assert lines[3] == "caller: talk to a person please"
    assert lines[-1].startswith("outcome: escalated (queue ") and "reason caller_request" in lines[-1]
    local = _invoke(["chat", str(HARBOR_AGENT), "--demo-backend", "--no-store", *_chat_args(SAYS)], _env(tmp_path))
    assert local.exit_code == 0, local.output
    local_lines = local.stdout.strip().splitlines()
    assert local_lines[:-1] == lines[:-1]
    assert local_lines[-1].split("; session")[0] == lines[-1].split("; session")[0]

    doc = json.loads(_invoke(["chat", "--url", worker, "--json", *_chat_args(SAYS)], _env(tmp_path)).stdout)
    assert doc["agent"] == "harbor-support" and doc["environment"] == "dev"  # the one agent served
    assert [t["intent"] for t in doc["turns"]] == ["store_hours", doc["turns"][1]["intent"]]
    assert doc["outcome"] == "escalated" and doc["escalation"]["reason"] == "caller_request"
    # a conversation the caller leaves is ended on the server
    left = json.loads(_invoke(["chat", "--url", worker, "--json", "--say", SAYS[0]], _env(tmp_path)).stdout)
    assert left["outcome"] and left["outcome"] != "escalated"


def test_chat_needs_one_target_and_reports_a_dead_worker_in_one_line(worker: str, tmp_path: Path) -> None:
    neither = _invoke(["chat", "--say", "hi"], _env(tmp_path))
    assert neither.exit_code == 2 and "--url" in neither.stderr
    both = _invoke(["chat", str(HARBOR_AGENT), "--url", worker, "--say", "hi"], _env(tmp_path))
    assert both.exit_code == 2 and "not both" in both.stderr
    closed = f"http://127.0.0.1:{free_port()}"
    line = _one_line_failure(
        _invoke(["chat", "--url", closed, "--agent", "harbor-support", "--say", "hi"], _env(tmp_path))
    )
    assert closed in line
    line = _one_line_failure(_invoke(["chat", "--url", worker.removeprefix("http://"), "--say", "hi"], _env(tmp_path)))
    assert "scheme" in line
    line = _one_line_failure(_invoke(["chat", "--url", worker, "--agent", "nobody", "--say", "hi"], _env(tmp_path)))
    assert "404" in line and "nobody" in line


def test_an_idle_connection_is_not_reused_once_the_worker_may_be_closing_it() -> None:
    """A worker closes a kept-alive connection after `http_keep_alive_s` idle (at least 1 s). A request sent on
    it just then is lost (the demo's first release failed so, once, after building the bundle for 5 s); the
    command line's client opens a new connection for a request after API_CLIENT_KEEPALIVE_S idle. The server
    here answers the first request on a connection and drops the connection at the second, as a worker closing
    it at that moment does."""
    assert API_CLIENT_KEEPALIVE_S < Settings.model_fields["http_keep_alive_s"].metadata[0].ge
    connections: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            with conn:
                conn.recv(65536)
                body = b'{"ok": true}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                conn.recv(65536)  # the next request on this connection: closed unanswered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with open_client(f"http://127.0.0.1:{port}") as client:
            assert client.post("/one").json() == {"ok": True}
            time.sleep(API_CLIENT_KEEPALIVE_S + 0.3)
            assert client.post("/two").json() == {"ok": True}
        assert len(connections) == 2
    finally:
        listener.close()
        thread.join(timeout=5)
