"""Who may open a voice socket, checked at its handshake by the environment's channel settings:
`/twilio` a valid `X-Twilio-Signature` where a Twilio auth token is configured, `/ws/voice` a
signed-in caller where anonymous voice is off. Each refusal is counted with the other anonymous
refusals (one audit event per minute)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import HTTPException
from starlette.websockets import WebSocket

from voxgate.api.auth import current_principal, refused_anonymously
from voxgate.channels.twilio_signature import signature_matches
from voxgate.governance.environments import EnvironmentConfig, scoped_secret_ref
from voxgate.governance.secrets import SecretError, resolve_secret

log = logging.getLogger("voxgate.api")


async def handshake_refusal(websocket: WebSocket, env: EnvironmentConfig, channel: str) -> str | None:
    """Why `env`'s channel settings refuse this voice socket's handshake on `channel` (None: they do
    not). Checked before the socket is accepted; a refusal is counted as an anonymous one."""
    refusal = await _handshake_problem(websocket, env, channel)
    if refusal is not None:
        try:
            await refused_anonymously(websocket, "denied")
        except HTTPException:
            pass  # over the per-address limit: refused all the same
    return refusal


async def _handshake_problem(websocket: WebSocket, env: EnvironmentConfig, channel: str) -> str | None:
    rules = env.settings.channels
    if channel == "twilio":
        if rules.twilio_auth_token is None:
            return None
        signature = websocket.headers.get("x-twilio-signature", "")
        if not signature:
            return "no X-Twilio-Signature on the handshake"
        try:
            token = await asyncio.to_thread(resolve_secret, scoped_secret_ref(env, rules.twilio_auth_token))
        except SecretError as exc:  # said to the operator; the caller only learns it was refused
            log.error("cannot check Twilio signatures in %s: %s", env.name, exc)
            return "the Twilio signature cannot be checked"
        base = rules.twilio_public_url or f"wss://{websocket.headers.get('host', '')}"
        url = base + websocket.url.path + (f"?{websocket.url.query}" if websocket.url.query else "")
        return None if signature_matches(token, url, signature) else "invalid X-Twilio-Signature"
    if rules.anonymous_voice:
        return None
    try:
        principal = await current_principal(websocket)  # type: ignore[arg-type]
    except HTTPException as exc:
        return str(exc.detail)
    return "a signed-in caller is required here" if principal.kind == "caller" else None
