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
import io
import logging
import secrets
import struct
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, delete, exists, select

from voxgate.store.db import Database
from voxgate.store.files import create_private
from voxgate.store.recording_models import RecordingKeyRow, RecordingRow

log = logging.getLogger("voxgate.compliance.recording")

RATE = 16000  # the pipeline's audio: 16 kHz int16 mono
STORED_RATE = 8000
FORMAT = "wav/mulaw-8k-stereo"
MAX_SECONDS = 30 * 60  # both tracks are held in memory (~3.8 MB a minute); a longer call keeps its first 30 minutes


class RecordingError(ValueError):
    """A recording that cannot be made or read (no key, wrong key, tampered ciphertext)."""


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
    raise RecordingError("the recording master key must be 32 bytes, written in base64 or hex")


def load_master_key(ref: str | None, data_dir: str | Path) -> bytes:
    """The master key a secret reference names, or the generated one in the data directory."""
    if ref:
        from voxgate.governance.secrets import resolve_secret

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
    return caller_ref(salt, customer_id=customer_id, session_id="")


class RecordingVault:
    """Stores and reads encrypted recordings in the database of one environment."""

    def __init__(self, db: Database, master_key: bytes, salt: bytes):
        if len(master_key) != 32:
            raise RecordingError("the recording master key must be 32 bytes")
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
            RecordingKeyRow.__table__.insert().values(
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
            raise RecordingError(f"recording key {key_id} cannot be unwrapped with this master key") from None

    def store(self, *, session_id: str, environment: str, customer_id: str | None, wav: bytes, duration_ms: int) -> str:
        """Encrypt and store one call's recording; returns its id."""
        recording_id = uuid.uuid4().hex
        ref = caller_ref(self.salt, customer_id=customer_id, session_id=session_id)
        with self.db.engine.begin() as conn:
            key_id, key = self._data_key(conn, ref)
            nonce = secrets.token_bytes(12)
            sealed = AESGCM(key).encrypt(nonce, wav, _aad(recording_id, session_id))
            conn.execute(
                RecordingRow.__table__.insert().values(
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
                raise RecordingError(f"no recording {recording_id}")
            key_row = conn.execute(select(RecordingKeyRow.wrapped).where(RecordingKeyRow.id == row.key_id)).first()
        if key_row is None:
            raise RecordingError(f"the key of recording {recording_id} has been deleted (erased caller)")
        key = self._unwrap(row.key_id, key_row.wrapped)
        try:
            wav = AESGCM(key).decrypt(row.nonce, row.ciphertext, _aad(row.id, row.session_id))
        except Exception:
            raise RecordingError(f"recording {recording_id} does not decrypt: tampered or wrong key") from None
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
    keys, recs = RecordingKeyRow.__table__, RecordingRow.__table__
    return int(conn.execute(delete(keys).where(~exists().where(recs.c.key_id == keys.c.id))).rowcount or 0)


def _aad(recording_id: str, session_id: str) -> bytes:
    return f"voxgate-recording:{recording_id}:{session_id}".encode()


# ---- capturing a call ------------------------------------------------------------------------------


class CallRecording:
    """Both sides of one call on the caller's timeline, kept in memory until the call ends.

    The caller's audio arrives in real time, so its position is simply how much has arrived.
    The agent's audio is sent ahead of playback; it lands at the later of "now" on the caller's
    timeline and the end of what was already queued. A cleared playback (barge-in) drops what
    the caller never heard.
    """

    def __init__(self, environment: str, max_seconds: int = MAX_SECONDS):
        self.environment = environment
        self._limit = max_seconds * RATE
        self._caller: list[np.ndarray] = []
        self._caller_len = 0
        self._agent: list[tuple[int, np.ndarray]] = []  # (start sample, samples)
        self._agent_end = 0

    @property
    def caller_samples(self) -> int:
        return self._caller_len

    def caller(self, pcm16: bytes) -> None:
        if self._caller_len >= self._limit:
            return
        samples = np.frombuffer(pcm16, dtype=np.int16).copy()
        self._caller.append(samples)
        self._caller_len += samples.size

    def agent(self, pcm16: bytes) -> None:
        start = max(self._caller_len, self._agent_end)
        if start >= self._limit:
            return
        samples = np.frombuffer(pcm16, dtype=np.int16).copy()
        self._agent.append((start, samples))
        self._agent_end = start + samples.size

    def clear(self) -> None:
        """Playback was cleared: the caller heard the agent only up to now."""
        now = self._caller_len
        kept: list[tuple[int, np.ndarray]] = []
        for start, samples in self._agent:
            if start < now:
                kept.append((start, samples[: now - start]))
        self._agent = kept
        self._agent_end = min(self._agent_end, now)

    @property
    def duration_ms(self) -> int:
        return int(max(self._caller_len, self._agent_end) * 1000 / RATE)

    def wav(self) -> bytes:
        """The call as a stereo 8 kHz μ-law WAV: caller on the left, agent on the right."""
        from voxgate.voice.codec import mulaw_encode, resample

        length = max(self._caller_len, self._agent_end)
        left = np.zeros(length, dtype=np.int16)
        if self._caller:
            caller = np.concatenate(self._caller)
            left[: caller.size] = caller
        right = np.zeros(length, dtype=np.int16)
        for start, samples in self._agent:
            right[start : start + samples.size] = samples[: max(0, length - start)]
        channels = []
        for track in (left, right):
            pcm = resample(track, RATE, STORED_RATE) if length else np.zeros(0, dtype=np.int16)
            channels.append(np.frombuffer(mulaw_encode(pcm.astype("<i2").tobytes()), dtype=np.uint8))
        frames = min(c.size for c in channels)
        interleaved = np.empty(frames * 2, dtype=np.uint8)
        interleaved[0::2], interleaved[1::2] = channels[0][:frames], channels[1][:frames]
        return mulaw_wav(interleaved.tobytes(), channels=2, rate=STORED_RATE)


def mulaw_wav(data: bytes, *, channels: int, rate: int) -> bytes:
    """A WAVE_FORMAT_MULAW file (fmt with cbSize 0, fact, data), readable by sox and players."""
    frames = len(data) // channels
    fmt = struct.pack("<HHIIHHH", 7, channels, rate, rate * channels, channels, 8, 0)
    out = io.BytesIO()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, frames)
    body += b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    out.write(b"RIFF" + struct.pack("<I", len(body)) + body)
    return out.getvalue()


def read_mulaw_wav(wav: bytes) -> tuple[int, int, np.ndarray]:
    """(channels, rate, int16 samples shaped frames × channels) of a μ-law WAV made by `mulaw_wav`."""
    from voxgate.voice.codec import mulaw_decode

    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise RecordingError("not a WAV file")
    pos, channels, rate, data = 12, 0, 0, b""
    while pos + 8 <= len(wav):
        chunk, size = wav[pos : pos + 4], struct.unpack("<I", wav[pos + 4 : pos + 8])[0]
        body = wav[pos + 8 : pos + 8 + size]
        if chunk == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            if tag != 7:
                raise RecordingError(f"WAV format {tag} is not μ-law")
        elif chunk == b"data":
            data = body
        pos += 8 + size + (size % 2)
    pcm = np.frombuffer(mulaw_decode(data), dtype=np.int16)
    return channels, rate, pcm.reshape(-1, channels) if channels else pcm


class RecordingOutput:
    """Wraps a call's output: whatever the caller is sent (agent speech, hold audio, a human's voice
    from the desk) is also recorded, and a cleared playback is cut from the recording too."""

    def __init__(self, inner: Any, recording: CallRecording):
        self._inner = inner
        self.recording = recording

    async def send_audio(self, pcm16: bytes) -> None:
        self.recording.agent(pcm16)
        await self._inner.send_audio(pcm16)

    async def send_clear(self) -> None:
        self.recording.clear()
        await self._inner.send_clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
