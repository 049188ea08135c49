"""Talking to the Harbor agent by text: digits as speech recognition writes them, a whole conversation."""

from __future__ import annotations

from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.session import Session

DIGIT_WORDS = "zero one two three four five six seven eight nine".split()


def spoken(digits: str) -> str:
    """Digits as speech recognition writes them."""
    return " ".join(DIGIT_WORDS[int(d)] for d in digits)


async def converse(rt: AgentRuntime, *turns: str) -> Session:
    """A new session on `rt` that hears `turns` (until it ends), closed and drained."""
    session = rt.new_session()
    await session.start()
    for turn in turns:
        await session.handle(turn)
        if session.ended:
            break
    if not session.ended:
        await session.close()
    await session.drain()
    return session
