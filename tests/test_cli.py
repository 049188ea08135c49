"""The `voxgate` command as a user runs it: a real process, real backend, real database file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.conversation import spoken
from tests.helpers.paths import HARBOR_AGENT, ROOT

VOXGATE = [sys.executable, "-m", "voxgate.cli"]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "VOXGATE_DATABASE_URL"}
    full_env = {**base, "VOXGATE_DATA_DIR": str(tmp_path / "var"), **env}
    return subprocess.run(VOXGATE + args, capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=180)


def test_help_reads_well(tmp_path: Path) -> None:
    out = _run(["--help"], tmp_path)
    assert out.returncode == 0
    for command in ("chat", "serve", "demo", "agent"):
        assert command in out.stdout
    chat_help = _run(["chat", "--help"], tmp_path).stdout
    assert "--say" in chat_help and "--json" in chat_help


def test_scripted_chat_json_walks_verification_and_order_status(tmp_path: Path, credentials) -> None:
    cred = credentials[2]
    out = _run(
        [
            "chat",
            str(HARBOR_AGENT),
            "--demo-backend",
            "--json",
            "--say",
            "where is my order",
            "--say",
            f"my account number is {spoken(cred['account_number'])}",
            "--say",
            spoken(cred["pin"]),
            "--say",
            "I want a human",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["agent"] == "harbor-support" and "Harbor" in doc["greeting"]
    turns = doc["turns"]
    assert len(turns) == 4
    for key in ("user", "agent", "intent", "confidence", "slots", "actions", "state"):
        assert key in turns[0]
    assert turns[0]["intent"] == "order_status"
    assert [a["name"] for a in turns[2]["actions"]] == ["verify_customer", "get_latest_order"]
    assert all(a["status"] == "ok" for a in turns[2]["actions"])
    assert doc["outcome"] == "escalated"
    packet = doc["escalation"]
    assert packet["identity"]["customer_id"] == cred["customer_id"] and packet["reason"] == "caller_request"
    assert (tmp_path / "var" / "voxgate.db").exists()  # the session was recorded in the embedded store


def test_validate_exit_codes(tmp_path: Path) -> None:
    assert _run(["agent", "validate", str(HARBOR_AGENT)], tmp_path).returncode == 0
    broken = _run(["agent", "validate", str(tmp_path)], tmp_path)
    assert broken.returncode == 2
    assert "agent.yaml is missing" in broken.stdout


def test_bad_configuration_is_named(tmp_path: Path) -> None:
    out = _run(["db", "upgrade"], tmp_path, VOXGATE_DATABASE_URL="mysql://x")
    assert out.returncode == 2
    assert "database_url" in out.stderr and "VOXGATE_DATABASE_URL" in out.stderr
    toml = tmp_path / "voxgate.toml"
    toml.write_text("port = 'not a number'\n")
    out = _run(["db", "upgrade"], tmp_path, VOXGATE_CONFIG=str(toml))
    assert out.returncode == 2 and "port" in out.stderr
    toml.write_text("port = [\n")
    out = _run(["db", "upgrade"], tmp_path, VOXGATE_CONFIG=str(toml))
    assert out.returncode == 2 and "voxgate.toml" in out.stderr


def test_transcribe_reads_recorded_human_speech(tmp_path: Path) -> None:
    """`voxgate transcribe FILE --json` on a real recording (Debian's pocketsphinx test data)."""
    wav = Path("/usr/share/pocketsphinx/test/data/cards/001.wav")
    reference = Path("/usr/share/pocketsphinx/test/data/cards/cards.transcription").read_text().splitlines()[0]
    out = _run(["transcribe", str(wav), "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    from voxgate.voice.speech_text import word_errors

    doc = json.loads(out.stdout)
    reference = " ".join(w for w in reference.split() if not w.startswith(("<", "(")))
    errors, words = word_errors(reference, doc[0]["text"])
    assert words == 3 and errors == 0, (reference, doc[0]["text"])  # "ten of clubs" / "10 of clubs."
    assert doc[0]["model"] == "whisper-tiny.en" and doc[0]["audio_ms"] > 1000


def test_voice_commands_have_help(tmp_path: Path) -> None:
    for args, needle in (
        (["call", "--help"], "--protocol"),
        (["bench", "voice", "--help"], "--calls"),
        (["transcribe", "--help"], "--json"),
    ):
        out = _run(args, tmp_path)
        assert out.returncode == 0 and needle in out.stdout


def test_stats_on_an_empty_store_say_nothing_was_measured(tmp_path: Path) -> None:
    out = _run(["stats", "--env", "prod"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "sessions 0" in out.stdout
    assert "None" not in out.stdout and "handle p50 -  voice p50 -  p95 -" in out.stdout
