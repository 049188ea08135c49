"""Ed25519 keys for signing bundles (a builder's key) and audit checkpoints (the server's key).

A private key lives in a file readable only by its owner (mode 0600, PEM/PKCS8); what the
database keeps is the public half and its key id (the first 16 bytes of the sha256 of the
raw public key, hex). Signatures travel as base64.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from voxgate.store.files import create_private


class SigningError(Exception):
    """A key that cannot be read or used; the message names the file, never key material."""


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:32]


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    raw: bytes

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        raw = base64.b64decode(text)
        if len(raw) != 32:
            raise SigningError("an Ed25519 public key is 32 bytes")
        return cls(key_id_of(raw), raw)

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def verify(self, signature_b64: str, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(base64.b64decode(signature_b64), message)
        except (InvalidSignature, ValueError):
            return False
        return True


class KeyPair:
    """A private signing key and its public half."""

    def __init__(self, private: Ed25519PrivateKey):
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(key_id_of(raw), raw)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode("ascii")

    def save(self, path: Path) -> None:
        """Write the private key (PKCS8 PEM) with mode 0600; never overwrites an existing file."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if not create_private(path, pem):  # its folder is made 0700 when missing
            raise FileExistsError(f"signing key {path} exists already")

    @classmethod
    def load(cls, path: Path) -> KeyPair:
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
        if path.exists():
            return cls.load(path)
        pair = cls.generate()
        try:
            pair.save(path)
        except FileExistsError:  # another process made it first
            return cls.load(path)
        return pair
