"""Call recordings: off by default; when an environment turns them on, encrypted with a per-caller key.

Turning it on (``environments.yaml``)::

    prod:
      settings:
        recording: {enabled: true, master_key: "env:VOXGATE_RECORDING_KEY"}

Envelope encryption, all AES-256-GCM (``cryptography``):

- each **caller** has a data key, stored only wrapped by the environment's master key in
  ``recording_keys`` under a caller reference: a keyed hash of the verified customer id (the
  same HMAC the privacy tooling uses, so nothing readable identifies the caller), or, for a
  caller who never verified, a reference to that one call (a key per anonymous call);
- each recording is a stereo WAV (caller left, agent right; 8 kHz G.711 μ-law, what a phone line
  carries) encrypted with the caller's data key, with the recording and session ids as
  associated data, in ``recordings`` (one row per call, bound to its session).

The audio path captures the call (``voice.recording.CallRecording``) and hands its WAV here.
The master key is a secret reference (``env:``, ``file:``, ``vault:``) to 32 bytes in base64 or
hex; without one, a key is generated once into ``<data_dir>/keys/recording-master.key`` (0600).

Deleting a session (retention purge, erasure) deletes its recordings; a caller's key is deleted
as soon as no recording uses it any more (``drop_unused_keys``), so erasing a customer also
shreds the key that could have read any copy of their audio left in a backup.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, delete, exists, insert, select

from voxgate.errors import InvalidError, NotFoundError, UnavailableError, VoxgateError
from voxgate.governance.secrets import resolve_secret
from voxgate.store.db import Database
from voxgate.store.files import create_private
from voxgate.store.recording_models import RecordingKeyRow, RecordingRow

log = logging.getLogger("voxgate.compliance.recording")

STORED_RATE = 8000
FORMAT = "wav/mulaw-8k-stereo"
MAX_SECONDS = 30 * 60  # both tracks are held in memory (~3.8 MB a minute); a longer call keeps its first 30 minutes


class RecordingError(VoxgateError, ValueError):
    """A recording that cannot be made or read; each kind below has its category."""


class RecordingKeyError(RecordingError, InvalidError):
    """The recording master key is not 32 bytes in base64 or hex."""


class RecordingNotFoundError(RecordingError, NotFoundError):
    """No recording has that id."""


class RecordingUnreadableError(RecordingError, UnavailableError):
    """A recording that is kept but cannot be read: its key was erased, the master key is wrong, or it was tampered with."""


class RecordingFormatError(RecordingError, InvalidError):
    """Audio that is not a WAV this module wrote (μ-law)."""


# ---- keys ---------------------------------------------------------------------------------------


def parse_master_key(text: str) -> bytes:
    """32 bytes from base64 (standard or url-safe) or hex text."""
    text = text.strip()
    for decode in (lambda t: bytes.fromhex(t), base64.b64decode, base64.urlsafe_b64decode):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == 32:
            return key
    raise RecordingKeyError("the recording master key must be 32 bytes, written in base64 or hex")


def load_master_key(ref: str | None, data_dir: str | Path) -> bytes:
    """The master key a secret reference names, or the generated one in the data directory."""
    if ref:
        return parse_master_key(resolve_secret(ref))
    path = Path(data_dir) / "keys" / "recording-master.key"
    if not path.exists() and create_private(path, base64.b64encode(secrets.token_bytes(32)) + b"\n"):
        log.info("generated a recording master key in %s", path)
    return parse_master_key(path.read_text())


def caller_ref(salt: bytes, *, customer_id: str | None, session_id: str) -> str:
    """Whose key encrypts a call: the verified customer's, or one for this anonymous call alone."""
    if customer_id:
        return "customer:" + hmac.new(salt, f"customer_id={customer_id}".encode(), hashlib.sha256).hexdigest()
    return "call:" + hmac.new(salt, f"session={session_id}".encode(), hashlib.sha256).hexdigest()


def customer_ref(salt: bytes, customer_id: str) -> str:
    """The key reference of a verified customer (what erasure looks for)."""
    return caller_ref(salt, customer_id=customer_id, session_id="")


class RecordingVault:
    """Stores and reads encrypted recordings in the database of one environment."""

    def __init__(self, db: Database, master_key: bytes, salt: bytes):
        if len(master_key) != 32:
            raise RecordingKeyError("the recording master key must be 32 bytes")
        self.db = db
        self._master = AESGCM(master_key)
        self.salt = salt

    def _data_key(self, conn: Connection, ref: str) -> tuple[str, bytes]:
        row = conn.execute(
            select(RecordingKeyRow.id, RecordingKeyRow.wrapped).where(RecordingKeyRow.caller_ref == ref)
        ).first()
        if row is not None:
            return row.id, self._unwrap(row.id, row.wrapped)
        key_id, key = uuid.uuid4().hex, AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(12)
        conn.execute(
            insert(RecordingKeyRow).values(
                id=key_id,
                caller_ref=ref,
                wrapped=nonce + self._master.encrypt(nonce, key, key_id.encode()),
                created_at=dt.datetime.now(dt.UTC),
            )
        )
        return key_id, key

    def _unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return self._master.decrypt(wrapped[:12], wrapped[12:], key_id.encode())
        except Exception:
            raise RecordingUnreadableError(f"recording key {key_id} cannot be unwrapped with this master key") from None

    def store(self, *, session_id: str, environment: str, customer_id: str | None, wav: bytes, duration_ms: int) -> str:
        """Encrypt and store one call's recording; returns its id."""
        recording_id = uuid.uuid4().hex
        ref = caller_ref(self.salt, customer_id=customer_id, session_id=session_id)
        with self.db.engine.begin() as conn:
            key_id, key = self._data_key(conn, ref)
            nonce = secrets.token_bytes(12)
            sealed = AESGCM(key).encrypt(nonce, wav, _aad(recording_id, session_id))
            conn.execute(
                insert(RecordingRow).values(
                    id=recording_id,
                    session_id=session_id,
                    environment=environment,
                    key_id=key_id,
                    format=FORMAT,
                    duration_ms=duration_ms,
                    size_bytes=len(wav),
                    nonce=nonce,
                    ciphertext=sealed,
                    created_at=dt.datetime.now(dt.UTC),
                )
            )
        return recording_id

    def read(self, recording_id: str) -> tuple[dict[str, Any], bytes]:
        """(metadata, WAV bytes) of one recording."""
        with self.db.engine.connect() as conn:
            row = conn.execute(select(RecordingRow).where(RecordingRow.id == recording_id)).first()
            if row is None:
                raise RecordingNotFoundError(f"no recording {recording_id}")
            key_row = conn.execute(select(RecordingKeyRow.wrapped).where(RecordingKeyRow.id == row.key_id)).first()
        if key_row is None:
            raise RecordingUnreadableError(f"the key of recording {recording_id} has been deleted (erased caller)")
        key = self._unwrap(row.key_id, key_row.wrapped)
        try:
            wav = AESGCM(key).decrypt(row.nonce, row.ciphertext, _aad(row.id, row.session_id))
        except Exception:
            raise RecordingUnreadableError(
                f"recording {recording_id} does not decrypt: tampered or wrong key"
            ) from None
        meta = {
            "id": row.id,
            "session_id": row.session_id,
            "environment": row.environment,
            "format": row.format,
            "duration_ms": row.duration_ms,
            "size_bytes": row.size_bytes,
            "created_at": row.created_at,
        }
        return meta, wav

    def for_session(self, session_id: str) -> list[str]:
        """The ids of a session's recordings, oldest first."""
        with self.db.engine.connect() as conn:
            return list(
                conn.scalars(
                    select(RecordingRow.id)
                    .where(RecordingRow.session_id == session_id)
                    .order_by(RecordingRow.created_at)
                )
            )


def drop_unused_keys(conn: Connection) -> int:
    """Delete caller keys no recording uses any more (after purge or erasure): crypto-shredding."""
    unused = delete(RecordingKeyRow).where(~exists().where(RecordingRow.key_id == RecordingKeyRow.id))
    return int(conn.execute(unused).rowcount or 0)


def _aad(recording_id: str, session_id: str) -> bytes:
    return f"voxgate-recording:{recording_id}:{session_id}".encode()
