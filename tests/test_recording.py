"""Call recordings: off by default; when an environment turns them on, both sides of the call are
stored encrypted with a per-caller key, exported only by those allowed (audited), and erased with
the caller — key included."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from tests.helpers.browser import LiveServer
from tests.helpers.databases import query
from tests.helpers.policies import add_dev_settings, policy_copy
from voxgate.api.app import create_app
from voxgate.compliance.recording import (
    RecordingError,
    RecordingVault,
    customer_ref,
    drop_unused_keys,
    parse_master_key,
)
from voxgate.config import Settings
from voxgate.store.db import Database
from voxgate.testing.caller import run_call
from voxgate.voice.recording import CallRecording, read_mulaw_wav

RATE = 16000


def _tone(freq: float, seconds: float, level: float = 8000) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * freq * t) * level).astype("<i2").tobytes()


def _frames(pcm: bytes, size: int = 640) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


def test_both_sides_land_on_the_callers_timeline() -> None:
    rec = CallRecording("dev")
    for frame in _frames(b"\0" * RATE * 2):  # one second of caller silence
        rec.caller(frame)
    rec.agent(_tone(440, 0.5))  # the agent speaks at 1.0 s
    for frame in _frames(_tone(300, 1.0)):  # the caller talks from 1.0 s to 2.0 s
        rec.caller(frame)
    channels, rate, pcm = read_mulaw_wav(rec.wav())
    assert (channels, rate) == (2, 8000)
    caller, agent = pcm[:, 0], pcm[:, 1]
    assert len(pcm) == pytest.approx(2 * 8000, abs=20)
    assert _rms(caller[:7000]) < 50 and _rms(caller[9000:15000]) > 2000
    assert _rms(agent[:7000]) < 50 and _rms(agent[8500:11500]) > 2000 and _rms(agent[13000:]) < 50
    assert rec.duration_ms == pytest.approx(2000, abs=25)


def test_a_cleared_playback_is_cut_from_the_recording() -> None:
    rec = CallRecording("dev")
    rec.agent(_tone(440, 2.0))  # two seconds queued at once
    for frame in _frames(b"\0" * RATE):  # half a second later the caller barges in ...
        rec.caller(frame)
    rec.clear()  # ... and the rest is never played
    for frame in _frames(b"\0" * RATE * 2):
        rec.caller(frame)
    _, _, pcm = read_mulaw_wav(rec.wav())
    agent = pcm[:, 1]
    assert _rms(agent[:3800]) > 2000
    assert _rms(agent[4200:]) < 50  # nothing after the clear


def test_master_keys_are_parsed_strictly() -> None:
    key = secrets.token_bytes(32)
    assert parse_master_key(base64.b64encode(key).decode()) == key
    assert parse_master_key(key.hex()) == key
    with pytest.raises(RecordingError, match="32 bytes"):
        parse_master_key(base64.b64encode(b"short").decode())


def _session_row(db: Database, sid: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sessions (id, agent, agent_version, environment, channel, started_at, verified, turn_count) "
                "VALUES (:id, 'a', '1', 'dev', 'voice', CURRENT_TIMESTAMP, :v, 0)"
            ),
            {"id": sid, "v": False},
        )


def test_the_vault_encrypts_per_caller_and_refuses_the_wrong_key(db_url: str) -> None:
    db = Database(db_url)
    db.migrate()
    salt = secrets.token_bytes(32)
    vault = RecordingVault(db, secrets.token_bytes(32), salt)
    rec = CallRecording("dev")
    for frame in _frames(_tone(300, 0.5)):
        rec.caller(frame)
    wav = rec.wav()
    for sid in ("s1", "s2", "s3"):
        _session_row(db, sid)
    a = vault.store(session_id="s1", environment="dev", customer_id="CUST-1", wav=wav, duration_ms=500)
    b = vault.store(session_id="s2", environment="dev", customer_id="CUST-1", wav=wav, duration_ms=500)
    c = vault.store(session_id="s3", environment="dev", customer_id=None, wav=wav, duration_ms=500)
    assert vault.read(a)[1] == wav and vault.read(c)[1] == wav
    with db.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(text("SELECT id, key_id, ciphertext FROM recordings"))}
        keys = list(conn.execute(text("SELECT caller_ref, wrapped FROM recording_keys")))
    assert rows[a].key_id == rows[b].key_id != rows[c].key_id  # one key per caller; anonymous calls their own
    assert len(keys) == 2
    assert customer_ref(salt, "CUST-1") in {k.caller_ref for k in keys}
    assert all(b"CUST-1" not in k.caller_ref.encode() for k in keys)
    assert all(wav[:64] not in bytes(r.ciphertext) and b"RIFF" not in bytes(r.ciphertext)[:16] for r in rows.values())

    other = RecordingVault(db, secrets.token_bytes(32), salt)
    with pytest.raises(RecordingError, match="cannot be unwrapped"):
        other.read(a)
    with db.engine.begin() as conn:  # flip one bit of a stored recording
        blob = bytearray(conn.execute(text("SELECT ciphertext FROM recordings WHERE id = :i"), {"i": b}).scalar_one())
        blob[40] ^= 1
        conn.execute(text("UPDATE recordings SET ciphertext = :c WHERE id = :i"), {"c": bytes(blob), "i": b})
    with pytest.raises(RecordingError, match="tampered"):
        vault.read(b)

    # deleting the customer's sessions leaves their key unused: it goes too
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM recordings WHERE session_id IN ('s1', 's2')"))
        assert drop_unused_keys(conn) == 1
        assert conn.execute(text("SELECT count(*) FROM recording_keys")).scalar_one() == 1
    db.dispose()


def test_recording_is_off_by_default(tmp_path: Path, harbor_bundle: Any) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(Settings(data_dir=tmp_path), [harbor_bundle])) as client:
        state = client.app.state.voxgate  # type: ignore[attr-defined]
        assert state.call_recording() is None


def _recording_policies(tmp: Path) -> Path:
    return policy_copy(tmp, add_dev_settings('      recording: {enabled: true, master_key: "env:VXG_TEST_REC_KEY"}\n'))


@pytest.fixture()
def recording_server(
    tmp_path: Path, harbor_bundle: Any, harbor_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    monkeypatch.setenv("VXG_TEST_REC_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'voxgate.db'}",
        data_dir=tmp_path,
        voice_preload=True,
        voice_capacity=4,
        policy_dir=_recording_policies(tmp_path),
    )
    with LiveServer(create_app(settings, [harbor_bundle])) as server:
        server.db_url = settings.db_url  # type: ignore[attr-defined]
        server.tmp = tmp_path  # type: ignore[attr-defined]
        yield server


def _count(server: LiveServer, sql: str, **params: Any) -> int:
    return int(query(server.db_url, sql, **params)[0][0])  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_recorded_call_is_exported_by_compliance_and_erased_with_the_caller(
    recording_server: LiveServer, credentials: list[dict[str, str]]
) -> None:
    keypad = credentials[1]
    state = recording_server.app.state.voxgate
    identity = state.identity
    tokens = {}
    for role in ("compliance_officer", "maker"):
        user = identity.create_user(f"rec-{role}".replace("_", "-"), "a long enough password")
        identity.bind_role(user.id, "*", role, None)
        tokens[role], _ = identity.create_token(user.id, "t", ["*"], 1)

    report = asyncio.run(
        run_call(
            f"ws://127.0.0.1:{recording_server.port}",
            protocol="native",
            voice="flite-slt",
            transcribe=False,
            says=["what's my balance", "no thanks that's all"],
            dtmf={1: keypad["account_number"], 2: keypad["pin"]},
        )
    )
    assert report.error is None, report.error
    sid = report.session_id
    assert sid
    deadline = time.monotonic() + 30  # the server stores the recording once the socket is done
    while _count(recording_server, "SELECT count(*) FROM recordings WHERE session_id = :s", s=sid) == 0:
        assert time.monotonic() < deadline, "no recording stored"
        time.sleep(0.1)
    assert _count(recording_server, "SELECT count(*) FROM recording_keys") == 1

    with httpx.Client(base_url=recording_server.url, trust_env=False) as client:
        denied = client.get(f"/api/sessions/{sid}/recording", headers={"Authorization": f"Bearer {tokens['maker']}"})
        assert denied.status_code == 403 and denied.headers.get("X-Voxgate-Denied")
        got = client.get(
            f"/api/sessions/{sid}/recording", headers={"Authorization": f"Bearer {tokens['compliance_officer']}"}
        )
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "audio/wav"
        channels, rate, pcm = read_mulaw_wav(got.content)
        assert (channels, rate) == (2, 8000)
        caller, agent = pcm[:, 0], pcm[:, 1]
        seconds = len(pcm) / 8000
        assert seconds > 5
        # the agent's greeting opens the call; the caller spoke (and keyed) later on
        assert _rms(agent[: 8000 * 2]) > 300
        assert _rms(caller) > 100
        events = client.get(
            "/api/audit/events",
            params={"action": "recording.export"},
            headers={"Authorization": f"Bearer {tokens['compliance_officer']}"},
        ).json()
        assert [e["resource"] for e in events] == [f"session:{sid}"]  # the export is on the record

        # the operator's CLI decrypts the same file (and audits it)
        from typer.testing import CliRunner

        from voxgate.cli import app as cli

        out = recording_server.tmp / "call.wav"  # type: ignore[attr-defined]
        result = CliRunner().invoke(
            cli,
            ["recording", "export", sid, "--out", str(out), "--by", "ticket-42"],
            env={
                "VOXGATE_DATABASE_URL": recording_server.db_url,
                "VOXGATE_DATA_DIR": str(recording_server.tmp),  # type: ignore[attr-defined]
                "VOXGATE_POLICY_DIR": str(recording_server.tmp / "policies"),
            },
        )  # type: ignore[attr-defined]
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == got.content
        assert out.stat().st_mode & 0o777 == 0o600  # decrypted call audio: its owner alone reads it

        erased = client.post(
            "/api/privacy/erase",
            json={"customer_id": keypad["customer_id"], "confirm": True},
            headers={"Authorization": f"Bearer {tokens['compliance_officer']}"},
        )
        assert erased.status_code == 200, erased.text
        receipt = erased.json()
        assert receipt["deleted"].get("recordings") == 1 and receipt["deleted"].get("recording_keys") == 1
        assert (
            client.get(
                f"/api/sessions/{sid}/recording", headers={"Authorization": f"Bearer {tokens['compliance_officer']}"}
            ).status_code
            == 404
        )
        found = client.post(
            "/api/privacy/find",
            json={"customer_id": keypad["customer_id"]},
            headers={"Authorization": f"Bearer {tokens['compliance_officer']}"},
        )
        assert found.status_code == 200 and found.json()["records"] == []
    assert _count(recording_server, "SELECT count(*) FROM recordings") == 0
    assert _count(recording_server, "SELECT count(*) FROM recording_keys") == 0
