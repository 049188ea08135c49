"""Every sentence the runtime says to a caller comes from the bundle's messages (defaults: today's sentences)."""

from __future__ import annotations

from typing import Any

from voxgate.bundle.models import Messages
from voxgate.runtime.engine import AgentRuntime


def _custom(harbor_bundle: Any) -> Any:
    bundle = harbor_bundle.model_copy(deep=True)
    bundle.agent.messages = Messages(
        anything="Anything at all?",
        not_understood="Pardon?",
        heard_digits="That was {heard} digits; I need {expected}.",
        conversation_ended="We are done here.",
        what_else="Go on then.",
    )
    return bundle


async def test_the_defaults_are_the_sentences_the_runtime_always_said(harbor_bundle: Any) -> None:
    rt = AgentRuntime(harbor_bundle)
    session = rt.new_session()
    await session.start()
    silence = await session.no_input()
    assert silence.replies[-1] == "Is there anything I can help you with?"
    asked = await session.handle("what's my balance")
    assert "account number" in asked.text
    wrong = await session.handle("one two three")
    assert (
        wrong.text
        == "Sorry, I didn't get that. I heard 3 digits, but I need 8. What's your eight digit account number?"
    )
    await session.close()
    after = await session.handle("hello?")
    assert after.text == "This conversation has ended."
    await rt.aclose()


async def test_a_bundle_says_its_own_words(harbor_bundle: Any) -> None:
    rt = AgentRuntime(_custom(harbor_bundle))
    session = rt.new_session()
    await session.start()
    silence = await session.no_input()
    assert silence.replies[-1] == "Anything at all?"
    await session.handle("what's my balance")
    wrong = await session.handle("one two three")
    assert wrong.text == "Pardon? That was 3 digits; I need 8. What's your eight digit account number?"
    await session.close()
    after = await session.handle("hello?")
    assert after.text == "We are done here."
    await rt.aclose()


async def test_yes_to_anything_else_says_the_bundles_words(harbor_bundle: Any) -> None:
    rt = AgentRuntime(_custom(harbor_bundle))
    session = rt.new_session()
    await session.start()
    answer = await session.handle("what are your opening hours")
    assert answer.state == "anything_else"
    more = await session.handle("yes")
    assert more.text == "Go on then."
    await rt.aclose()
