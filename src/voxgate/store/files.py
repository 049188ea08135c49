"""Files only the service user may read: the data directory and what it holds (database, keys,
salt, secrets, demo passwords). Folders are made 0700 and files 0600 as they are created, never
created open and tightened afterwards, so no other local user can open one in between."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def private_dir(path: str | Path) -> Path:
    """Create `path` and any missing folder above it, each 0700; folders that exist are left as they are."""
    path = Path(path)
    missing: list[Path] = []
    at = path
    while not at.exists():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:  # another process made it first
            pass
    return path


def create_private(path: str | Path, data: bytes = b"") -> bool:
    """Create `path` 0600 holding `data` (its folder made private when missing); False, and nothing
    written, when the file exists already. Never follows a link at `path`."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return True


def write_private(path: str | Path, data: bytes) -> None:
    """Create or replace `path` with `data`, 0600 (an existing file is narrowed to 0600 before it is written)."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)  # O_CREAT keeps the mode of a file that exists
        fh.write(data)
