"""Where an environment asks for it, a voice socket is authenticated at its handshake, before it is
accepted: `/twilio` needs Twilio's request signature, `/ws/voice` a signed-in caller. A refused
handshake is a 403 that takes neither a line nor a not-yet-started slot."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers.policies import add_dev_settings, policy_copy
from tests.helpers.servers import serving
from voxgate.api.app import create_app
from voxgate.channels.twilio_signature import signature_matches, twilio_signature
from voxgate.config import Settings
from voxgate.governance.environments import load_governance

AGENT = "harbor-support"
TOKEN = "a-twilio-auth-token"
PUBLIC = "wss://voice.example.com"


def test_the_signature_is_twilios_hmac_sha1_of_the_url() -> None:
    # computed independently: printf '%s' URL | openssl dgst -sha1 -hmac TOKEN -binary | base64
    url = f"{PUBLIC}/twilio/{AGENT}"
    assert twilio_signature(TOKEN, url) == "J6zIXrmXx3ZZVq9aefB/EoPl7Bw="
    assert signature_matches(TOKEN, url, " J6zIXrmXx3ZZVq9aefB/EoPl7Bw= ")
    assert not signature_matches(TOKEN, url + "x", "J6zIXrmXx3ZZVq9aefB/EoPl7Bw=")
    assert not signature_matches("another token", url, "J6zIXrmXx3ZZVq9aefB/EoPl7Bw=")
    assert not signature_matches(TOKEN, url, "non-ascii ✗")


def _policies(tmp: Path, channels: str) -> Path:
    policies = policy_copy(tmp, add_dev_settings(f"      channels: {channels}\n"))
    load_governance(policies)  # the settings are valid as written
    return policies


def _worker(tmp: Path, harbor_bundle: Any, channels: str) -> Any:
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'voxgate.db'}",
        data_dir=tmp / "data",
        environment="dev",
        policy_dir=_policies(tmp, channels),
        voice_start_timeout_s=1,
        voice_pending_per_address=2,
    )
    return create_app(settings, [harbor_bundle])


@pytest.fixture()
def signed_worker(
    tmp_path: Path, harbor_bundle: Any, harbor_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any]]:
    monkeypatch.setenv("VOXGATE_TEST_TWILIO_TOKEN", TOKEN)
    app = _worker(
        tmp_path, harbor_bundle, "{twilio_auth_token: 'env:VOXGATE_TEST_TWILIO_TOKEN', anonymous_voice: false}"
    )
    with serving(app) as base:
        yield base.replace("http://", "ws://"), app


async def _handshake(url: str, headers: dict[str, str] | None = None) -> tuple[str, int | None, str]:
    """("refused", HTTP status, "") or ("closed", close code, reason) once the server closes it."""
    try:
        async with websockets.connect(url, additional_headers=headers or {}, open_timeout=10) as ws:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as closed:
                return "closed", closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else ""
    except InvalidStatus as exc:
        return "refused", exc.response.status_code, ""


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_twilio_handshake_needs_a_valid_signature(signed_worker: tuple[str, Any]) -> None:
    ws, app = signed_worker
    url = f"{ws}/twilio/{AGENT}"
    local = url.replace("ws://", "wss://")  # what Twilio signs: the wss:// URL, with this Host
    assert _run(_handshake(url)) == ("refused", 403, "")
    assert _run(_handshake(url, {"X-Twilio-Signature": twilio_signature("a guess", local)})) == ("refused", 403, "")
    # refused handshakes hold nothing: far more of them than the 2 not-yet-started sockets an address may have
    for _ in range(8):
        assert _run(_handshake(url, {"X-Twilio-Signature": "AAAA"}))[0] == "refused"
    state = app.state.voxgate
    assert state.admission.active == 0 and state.admission.start_timeouts == 0
    # the right signature is accepted; with no start it is closed after the start deadline, like any socket
    kind, code, reason = _run(_handshake(url, {"X-Twilio-Signature": twilio_signature(TOKEN, local)}))
    assert (kind, code) == ("closed", 1008) and "start" in reason
    assert state.admission.start_timeouts == 1

    # and a protocol message on it reaches the protocol (refused there, not at the handshake)
    async def bad_start() -> tuple[int | None, str]:
        async with websockets.connect(
            url, additional_headers={"X-Twilio-Signature": twilio_signature(TOKEN, local)}
        ) as s:
            await s.send(json.dumps({"event": "media"}))
            try:
                await asyncio.wait_for(s.recv(), 10)
            except ConnectionClosed as closed:
                return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
        return None, ""

    code, reason = _run(bad_start())
    assert code == 1008 and "start" in reason


def test_the_native_voice_socket_needs_a_signed_in_caller(signed_worker: tuple[str, Any]) -> None:
    ws, app = signed_worker
    url = f"{ws}/ws/voice/{AGENT}"
    assert _run(_handshake(url)) == ("refused", 403, "")
    assert _run(_handshake(url, {"Authorization": "Bearer vxg_not-a-token"})) == ("refused", 403, "")
    identity = app.state.voxgate.identity
    user = identity.create_user("phone-tester", "a long enough password")
    token, _ = identity.create_token(user.id, "calls", ["*"], 1)
    kind, code, reason = _run(_handshake(url, {"Authorization": f"Bearer {token}"}))
    assert (kind, code) == ("closed", 1008) and "start" in reason  # accepted, then waited for a start


def test_refused_handshakes_are_counted_not_audited_one_by_one(signed_worker: tuple[str, Any]) -> None:
    ws, app = signed_worker
    now = dt.datetime.now(dt.UTC).replace(second=5, microsecond=0)
    app.state.voxgate.clock = lambda: now  # one minute for all five, wherever the wall clock's minute ends
    for _ in range(5):
        assert _run(_handshake(f"{ws}/twilio/{AGENT}"))[0] == "refused"
    events = app.state.voxgate.denials.due(final=True)  # the minute under way, as written at shutdown
    twilio = [e for e in events if e.data["route"].startswith("/twilio/")]
    assert [(e.data["reason"], e.data["count"]) for e in twilio] == [("denied", 5)]


def test_a_public_url_is_what_the_signature_covers(
    tmp_path: Path, harbor_bundle: Any, harbor_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXGATE_TEST_TWILIO_TOKEN", TOKEN)
    app = _worker(
        tmp_path,
        harbor_bundle,
        f"{{twilio_auth_token: 'env:VOXGATE_TEST_TWILIO_TOKEN', twilio_public_url: '{PUBLIC}'}}",
    )
    with serving(app) as base:
        url = f"{base.replace('http://', 'ws://')}/twilio/{AGENT}"
        local = url.replace("ws://", "wss://")
        assert _run(_handshake(url, {"X-Twilio-Signature": twilio_signature(TOKEN, local)})) == ("refused", 403, "")
        kind, code, _ = _run(
            _handshake(url, {"X-Twilio-Signature": twilio_signature(TOKEN, f"{PUBLIC}/twilio/{AGENT}")})
        )
        assert (kind, code) == ("closed", 1008)
        # anonymous voice stays on unless the environment turns it off
        kind, code, _ = _run(_handshake(f"{base.replace('http://', 'ws://')}/ws/voice/{AGENT}"))
        assert (kind, code) == ("closed", 1008)


def test_a_public_url_must_be_a_wss_origin(tmp_path: Path) -> None:
    from voxgate.governance.environments import GovernanceConfigError

    with pytest.raises(GovernanceConfigError, match="twilio_public_url"):
        _policies(tmp_path, "{twilio_public_url: 'https://voice.example.com/path'}")
