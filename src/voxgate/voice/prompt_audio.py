"""Rendered fixed prompts kept on disk, so a worker that starts again (a restart, a rolling deploy, a
second worker sharing the folder) reads its agents' prompts instead of synthesising them again.

Only an agent's fixed words are stored (`voice.prompts.static_prompts`: greetings, messages, slot
prompts, nothing with a placeholder), never a reply that carries a caller's data. A file is named
by the SHA-256 of the synthesiser's fingerprint (engine, voice files' digests, settings) and the
chunk's text, so another model, voice setting or text is simply another file; its contents carry a
digest of key and audio, so a damaged or half-written file reads as a miss and is removed. Files
are written 0600 under a 0700 folder, through a temporary file renamed into place (two workers
rendering the same prompt at once both write whole files). The folder is bounded: past
`max_files`, the least recently used files go.

Workers that start together share the rendering rather than each doing all of it: a worker claims a
chunk (an advisory lock on one of `LOCK_STRIPES` lock files in the folder) before rendering it, and
puts a chunk another worker holds aside, to read when that worker has written it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: every worker renders what it misses
    fcntl = None  # type: ignore[assignment]

from voxgate.store.files import FILE_MODE, private_dir

log = logging.getLogger("voxgate.voice")

MAGIC = b"VXPA1\n"
DIGEST_BYTES = 32
DEFAULT_MAX_FILES = 4096
SUFFIX = ".pcm"
#: lock files a folder has at most: a chunk's claim is the lock of the stripe its key falls in
LOCK_STRIPES = 64
LOCK_SUFFIX = ".lock"


def _key(fingerprint: str, text: str) -> bytes:
    return hashlib.sha256(f"{fingerprint}\x00{text}".encode()).digest()


class PromptAudioStore:
    """16 kHz PCM of fixed prompts by (synthesiser fingerprint, chunk text), in one folder."""

    def __init__(self, root: Path, max_files: int = DEFAULT_MAX_FILES) -> None:
        self.root = root
        self.max_files = max_files
        self.hits = 0
        self.writes = 0

    def path(self, fingerprint: str, text: str) -> Path:
        """Where the audio for this chunk lives (whether or not it is there)."""
        return self.root / f"{_key(fingerprint, text).hex()}{SUFFIX}"

    def get(self, fingerprint: str, text: str) -> bytes | None:
        """The stored audio, or None when it is not there or does not check out (then it is removed)."""
        path = self.path(fingerprint, text)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("prompt audio %s unreadable: %s", path.name, exc)
            return None
        head = len(MAGIC) + DIGEST_BYTES
        pcm = data[head:]
        digest = hashlib.sha256(_key(fingerprint, text) + pcm).digest()
        if not data.startswith(MAGIC) or data[len(MAGIC) : head] != digest or len(pcm) % 2:
            log.warning("prompt audio %s is damaged; it will be rendered again", path.name)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept when the folder is pruned
        self.hits += 1
        return pcm

    def put(self, fingerprint: str, text: str, pcm: bytes) -> None:
        """Store the audio for this chunk (a failure is logged: the worker still has it in memory)."""
        path = self.path(fingerprint, text)
        blob = MAGIC + hashlib.sha256(_key(fingerprint, text) + pcm).digest() + pcm
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            private_dir(self.root)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, path)
            self.writes += 1
        except OSError as exc:
            log.warning("could not keep prompt audio in %s: %s", self.root, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    @contextlib.contextmanager
    def claim(self, fingerprint: str, text: str, *, wait: bool) -> Iterator[bool]:
        """Hold the right to render this chunk while the block runs; yields False when another worker
        holds it and `wait` is False. Where the folder cannot be locked, every claim succeeds."""
        if fcntl is None:
            yield True
            return
        stripe = int.from_bytes(_key(fingerprint, text)[:4], "big") % LOCK_STRIPES
        try:
            private_dir(self.root)
            fd = os.open(
                self.root / f"stripe-{stripe:02d}{LOCK_SUFFIX}",
                os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                FILE_MODE,
            )
        except OSError:
            yield True
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            except OSError:
                yield True
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def prune(self) -> int:
        """Remove the least recently used files beyond `max_files`; returns how many went."""
        files = []
        try:
            for path in self.root.glob(f"*{SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):  # another worker pruned it meanwhile
                    files.append((path.stat().st_mtime, path))
        except OSError:
            return 0
        excess = len(files) - self.max_files
        if excess <= 0:
            return 0
        gone = 0
        for _, path in sorted(files)[:excess]:
            with contextlib.suppress(OSError):
                path.unlink()
                gone += 1
        return gone
