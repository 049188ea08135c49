"""The fixed things an agent says, so their audio can be rendered before the first call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from voxgate.bundle.loader import PLACEHOLDER_RE
from voxgate.bundle.models import BranchStep, ConfirmStep, SayStep
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.templates import render


def _steps(steps: Iterable[Any]) -> Iterable[str]:
    for step in steps:
        if isinstance(step, SayStep):
            yield step.say
        elif isinstance(step, BranchStep):
            for sub in step.branch.cases.values():
                yield from _steps(sub)
            yield from _steps(step.branch.default)
        elif isinstance(step, ConfirmStep):
            yield from _steps(step.confirm.on_yes)
            yield from _steps(step.confirm.on_no)
        elif hasattr(step, "on_not_found"):
            yield from _steps(step.on_not_found)


def static_prompts(runtime: AgentRuntime) -> list[str]:
    """Everything the agent says with fixed words (greetings, messages, authentication prompts), to pre-render."""
    agent = runtime.agent
    texts: list[str] = [
        agent.voice.greeting,
        agent.voice.no_input_message,
        agent.voice.no_input_goodbye,
        agent.escalation.message,
        "Sure, what else can I help you with?",
        "Sorry, I didn't get that.",
    ]
    texts += list(agent.messages.model_dump().values())
    auth = agent.authentication
    texts += [
        auth.intro,
        auth.identify_prompt,
        auth.secret_prompt,
        auth.failure_message,
        f"{auth.identified_message} {auth.secret_prompt}".strip(),
        f"{auth.intro} {auth.identify_prompt}",
        f"Sorry, I didn't get that. {auth.identify_prompt}",
        f"Sorry, I didn't get that. {auth.secret_prompt}",
        f"{auth.failure_message} Let's try again. {auth.identify_prompt}",
    ]
    texts.append(render(agent.scope.refusal_message, {"capabilities": runtime.capabilities}))
    for topic in runtime.bundle.topics.values():
        for slot in topic.slots.values():
            texts += [slot.prompt] + ([slot.reprompt] if slot.reprompt else [])
        texts += list(_steps(topic.steps))
    return list(dict.fromkeys(t for t in texts if t and not PLACEHOLDER_RE.search(t)))
