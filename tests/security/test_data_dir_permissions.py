"""The data directory is the service user's alone: `voxgate init`, a worker's first start (server
key, SQLite database with its -wal and -shm, recording master key, privacy salt, mounted secrets)
and the demo's bootstrap (passwords, profile, signing keys) create every folder 0700 and every
file 0600, under the usual umask 022 that would otherwise make them readable by everyone."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from tests.helpers.paths import ROOT
from voxgate import demo
from voxgate.api.app import create_app
from voxgate.config import Settings
from voxgate.governance.secrets import write_secret_file
from voxgate.store.files import create_private, write_private


@contextlib.contextmanager
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, str]:
    """Every folder and file under `root` (and root itself) with its permission bits, in octal."""
    out = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in sorted(root.rglob("*")):
        out[path.relative_to(root).as_posix()] = oct(stat.S_IMODE(path.lstat().st_mode))
    return out


def loose(root: Path) -> dict[str, str]:
    return {
        name: mode for name, mode in modes(root).items() if mode != ("0o700" if (root / name).is_dir() else "0o600")
    }


def test_data_dir_init_then_first_worker_start_is_private(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "voxgate" / "var"  # none of it exists yet
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")},
        "VOXGATE_DATA_DIR": str(data),
        "VOXGATE_ADMIN_PASSWORD": "correct horse battery staple",
    }
    out = subprocess.run(
        [sys.executable, "-m", "voxgate.cli", "init"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert out.returncode == 0, out.stderr
    assert (data / "voxgate.db").is_file() and (data / "keys" / "audit-signing-key.pem").is_file()
    assert loose(tmp_path / "srv") == {}

    with usual_umask(), TestClient(create_app(Settings(data_dir=data), [])) as client:
        state = client.app.state.voxgate  # type: ignore[attr-defined]
        state.recording_vault()  # generates the recording master key and the privacy salt
        write_secret_file(state.settings.secrets_path, "HARBOR_API_KEY", "k-123")
        assert client.get("/health").status_code == 200
        present = set(modes(data))
        assert {
            "voxgate.db-wal",
            "voxgate.db-shm",
            "keys/recording-master.key",
            "keys/privacy-salt",
            "secrets/HARBOR_API_KEY",
        } <= present, present
        assert loose(tmp_path / "srv") == {}


def test_data_dir_demo_bootstrap_is_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "demo" / "var")
    with usual_umask():
        users = demo.bootstrap(settings, "http://127.0.0.1:1")
        demo.backend_key(settings)
    assert users and all(u.password for u in users)
    present = set(modes(settings.data_dir))
    assert {"demo-users", "demo-users/admin.password", "demo-profile.json", "secrets/HARBOR_API_KEY"} <= present
    assert loose(tmp_path / "demo") == {}


def test_data_dir_files_are_private_from_creation_and_when_replaced(tmp_path: Path) -> None:
    with usual_umask():
        target = tmp_path / "a" / "b" / "token"
        assert create_private(target, b"one")
        assert not create_private(target, b"two")  # never overwrites
        assert target.read_bytes() == b"one"
        shared = tmp_path / "a" / "shared"
        shared.write_text("old")  # 0644 under umask 022
        write_private(shared, b"new")
        assert shared.read_bytes() == b"new"
        link = tmp_path / "a" / "link"
        link.symlink_to(tmp_path / "elsewhere")
        assert not create_private(link, b"x") and not (tmp_path / "elsewhere").exists()
    assert loose(tmp_path / "a") == {"link": "0o777"}
