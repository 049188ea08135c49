"""The chat WebSocket under malformed input: every message gets a reply (a turn, the end of the
conversation, or an error) or a clean close with 1003/1008 and a reason; the worker stays up.

A seeded random loop over whole conversations; the Hypothesis properties of every socket's
messages are in test_sockets_property.py."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import pytest
import websockets

AGENT = "harbor-support"
EXAMPLES = 60


@pytest.fixture(scope="module")
def base(harbor_worker: str) -> str:
    return harbor_worker


async def _exchange(base: str, message: str | bytes) -> tuple[str, Any]:
    """Send one message after the greeting: ("reply", the first message back) or ("closed", (code, reason))."""
    url = base.replace("http://", "ws://") + f"/ws/chat/{AGENT}"
    async with websockets.connect(url, open_timeout=10, max_size=None) as ws:
        greeting = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        assert greeting["type"] == "turn"
        await ws.send(message)
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        except websockets.ConnectionClosed as closed:
            return "closed", (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
        if reply["type"] == "error":  # then the socket is closed, with a code and a reason
            try:
                await asyncio.wait_for(ws.recv(), timeout=30)
            except websockets.ConnectionClosed as closed:
                return "closed", (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
            raise AssertionError("the socket stayed open after an error")
        return "reply", reply


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([0, -1, 2**70, 1.5, True])
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(0, 30)))
    if kind == 3:
        return rng.choice(["", "1234", "#", "*9", "hello", "x" * 3000])
    if kind == 4:
        return rng.choice(["\ud800", "ok \udfff", "\udc00\ud800"])  # lone surrogates (sent as JSON escapes)
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(["type", "text", "digits", "x"]): _value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def _message(rng: random.Random) -> str | bytes:
    """One message of the kinds a broken or hostile client sends (and some proper ones)."""
    kind = rng.randrange(9)
    if kind == 0:  # binary frames
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    if kind == 1:  # very deep JSON
        n = rng.randrange(900, 20000)
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('{"type":"text","text":[', "]}")])
        return opener * n + "0" + closer * n
    if kind == 2:  # not JSON
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(0, 200)))
    if kind == 3:  # oversized
        return json.dumps({"type": "text", "text": "a" * rng.randrange(17000, 70000)})
    if kind == 4:  # a JSON value that is not an object
        return json.dumps(_value(rng))
    if kind in (5, 6):  # an object with odd fields
        msg = {"type": rng.choice(["text", "dtmf", "end", "teleport", 7, None, ["text"]])}
        msg.update({k: _value(rng) for k in rng.sample(["text", "digits", "extra"], rng.randrange(0, 3))})
        return json.dumps(msg)
    if kind == 7:  # a proper turn
        return json.dumps({"type": "text", "text": rng.choice(["what are your opening hours", "hello", "um"])})
    return json.dumps({"type": "dtmf", "digits": rng.choice(["1", "12#", "0000"])})


async def test_fuzzed_chat_messages_get_a_reply_or_a_clean_close(base: str) -> None:
    rng = random.Random(20240612)
    outcomes: dict[str, int] = {}
    for i in range(EXAMPLES):
        message = _message(rng)
        what, detail = await _exchange(base, message)
        shown = repr(message[:80])
        if what == "reply":
            assert detail["type"] in ("turn", "ended"), (i, shown, detail)
        else:
            code, reason = detail
            assert code in (1003, 1008), (i, shown, code, reason)
            assert reason, (i, shown)
        key = f"{what}:{detail['type'] if what == 'reply' else detail[0]}"
        outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes.get("reply:turn") and outcomes.get("closed:1003"), outcomes  # both paths were exercised
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/health", timeout=30)).status_code == 200


@pytest.mark.parametrize(
    "message",
    [b"\x00\x01binary", "[" * 5000 + "]" * 5000, '{"type":"text","text":' + "[" * 3000 + "]" * 3000 + "}"],
    ids=["binary frame", "deep array", "deep text field"],
)
async def test_binary_and_deeply_nested_messages_close_with_1003_and_a_reason(base: str, message: str | bytes) -> None:
    what, detail = await _exchange(base, message)
    assert what == "closed" and detail[0] == 1003 and detail[1], detail
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/health", timeout=30)).status_code == 200
