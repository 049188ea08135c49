"""`env:NAME` references fall back to the file NAME in the secrets directory (as Docker and
Kubernetes mount secrets), so the CLI and a server on the same data directory agree."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxgate.config import Settings
from voxgate.governance.secrets import SecretError, resolve_secret, use_secrets_dir, write_secret_file


@pytest.fixture()
def secrets_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "secrets"
    use_secrets_dir(folder)
    yield folder
    use_secrets_dir(None)


def test_the_variable_wins_then_the_file(secrets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VXG_TEST_KEY", raising=False)
    with pytest.raises(SecretError) as err:
        resolve_secret("env:VXG_TEST_KEY")
    assert str(secrets_dir / "VXG_TEST_KEY") in str(err.value)
    path = write_secret_file(secrets_dir, "VXG_TEST_KEY", "from-file")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert resolve_secret("env:VXG_TEST_KEY") == "from-file"
    monkeypatch.setenv("VXG_TEST_KEY", "from-env")
    assert resolve_secret("env:VXG_TEST_KEY") == "from-env"


def test_names_that_are_not_variable_names_never_read_files(secrets_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("leak")
    with pytest.raises(SecretError) as err:
        resolve_secret("env:../outside")
    assert "leak" not in str(err.value)
    with pytest.raises(SecretError):
        write_secret_file(secrets_dir, "../outside", "x")


def test_without_a_secrets_dir_only_the_variable_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_secrets_dir(None)
    write_secret_file(tmp_path, "VXG_TEST_KEY2", "from-file")
    monkeypatch.delenv("VXG_TEST_KEY2", raising=False)
    with pytest.raises(SecretError):
        resolve_secret("env:VXG_TEST_KEY2")


def test_the_default_secrets_dir_is_in_the_data_dir(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).secrets_path == tmp_path / "secrets"
    assert Settings(data_dir=tmp_path, secrets_dir=tmp_path / "elsewhere").secrets_path == tmp_path / "elsewhere"
