"""Ed25519 keys for signing bundles (a builder's key) and audit checkpoints (the server's key).

A private key lives in a file readable only by its owner (mode 0600, PEM/PKCS8); what the
database keeps is the public half and its key id (the first 16 bytes of the sha256 of the
raw public key, hex). Signatures travel as base64.

This module is a leaf: it imports nothing from voxgate but the error model, so the audit chain
(compliance), bundles (governance) and the command line can all use it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from voxgate.errors import InvalidError

__all__ = ["KeyPair", "PublicKey", "SigningError", "key_id_of"]

PUBLIC_KEY_BYTES = 32  # a raw Ed25519 public key
KEY_ID_HEX_CHARS = 32  # the first 16 bytes of the sha256 of the raw public key
KEY_DIR_MODE = 0o700
KEY_FILE_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class SigningError(InvalidError):
    """A key that cannot be read or used; the message names the file, never key material."""


def key_id_of(public_raw: bytes) -> str:
    """The key id of a raw public key: the first 16 bytes of its sha256, hex."""
    return hashlib.sha256(public_raw).hexdigest()[:KEY_ID_HEX_CHARS]


def _create_key_file(path: Path, data: bytes) -> bool:
    """Create `path` 0600 holding `data`, its missing folders 0700; False when it exists already.

    Created with its final mode, never opened wider and tightened afterwards, and never through a
    link (the same rule as ``voxgate.store.files.create_private``, kept here so signing stays a leaf).
    """
    missing: list[Path] = []
    at = path.parent
    while not at.exists() and at.parent != at:
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, KEY_DIR_MODE)
        except FileExistsError:  # another process made it first
            pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, KEY_FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return True


@dataclass(frozen=True)
class PublicKey:
    """The public half of a signing key and its key id."""

    key_id: str
    raw: bytes

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        """Parse a base64 raw public key; SigningError (or a base64 ValueError) when it is not one."""
        raw = base64.b64decode(text)
        if len(raw) != PUBLIC_KEY_BYTES:
            raise SigningError("an Ed25519 public key is 32 bytes")
        return cls(key_id_of(raw), raw)

    @property
    def b64(self) -> str:
        """The raw public key as base64."""
        return base64.b64encode(self.raw).decode("ascii")

    def verify(self, signature_b64: str, message: bytes) -> bool:
        """Whether `signature_b64` is this key's signature of `message`."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(base64.b64decode(signature_b64), message)
        except (InvalidSignature, ValueError):
            return False
        return True


class KeyPair:
    """A private signing key and its public half."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(key_id_of(raw), raw)

    @property
    def key_id(self) -> str:
        """The public half's key id."""
        return self.public.key_id

    @classmethod
    def generate(cls) -> KeyPair:
        """A new random key pair."""
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> str:
        """The base64 signature of `message`."""
        return base64.b64encode(self._private.sign(message)).decode("ascii")

    def save(self, path: Path) -> None:
        """Write the private key (PKCS8 PEM) with mode 0600; never overwrites an existing file."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if not _create_key_file(path, pem):
            raise FileExistsError(f"signing key {path} exists already")

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        """Read an unencrypted PEM Ed25519 private key; SigningError names the file and what is wrong."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningError(f"signing key {path}: cannot read ({exc.strerror})") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise SigningError(f"signing key {path}: not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"signing key {path}: not an Ed25519 key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> KeyPair:
        """The key at `path`, made (0600) when there is none yet."""
        if path.exists():
            return cls.load(path)
        pair = cls.generate()
        try:
            pair.save(path)
        except FileExistsError:  # another process made it first
            return cls.load(path)
        return pair
