"""An agent bundle made ready to serve: fitted intents, knowledge index, connectors, sessions."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from voxgate.bundle.models import BundleSource, EscalateStep, KnowledgeDoc
from voxgate.runtime.connectors import ActionResult, CallContext, ConnectorClient, HostPolicy, SecretResolver
from voxgate.runtime.knowledge import Hit, KnowledgeIndex
from voxgate.runtime.lockout import VerificationGuard
from voxgate.runtime.nlu.embeddings import default_embedder
from voxgate.runtime.nlu.intents import IntentClassifier, IntentPrediction
from voxgate.runtime.recorder import MemoryRecorder, Recorder
from voxgate.runtime.session import Session

_shared_pool: ThreadPoolExecutor | None = None


def nlu_pool() -> ThreadPoolExecutor:
    """One small pool for language models, shared by every runtime in the process."""
    global _shared_pool
    if _shared_pool is None:
        _shared_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="voxgate-nlu")
    return _shared_pool


PREDICTION_CACHE = 128  # recent utterances whose intent is kept (in memory only)


class AgentRuntime:
    """One loaded bundle ready to take conversations: its classifier, knowledge index and connectors."""

    def __init__(
        self,
        bundle: BundleSource,
        *,
        environment: str = "dev",
        digest: str | None = None,
        recorder: Recorder | None = None,
        host_policy: HostPolicy | None = None,
        secrets: SecretResolver | None = None,
        embedder: Any = None,
        executor: Executor | None = None,
        guard: VerificationGuard | None = None,
        refs: Callable[[str], str] | None = None,
    ):
        self.bundle = bundle
        self.agent = bundle.agent
        self.environment = environment
        self.digest = digest
        self.recorder: Recorder = recorder or MemoryRecorder()
        # failed verifications per account across sessions; None: counted per session only
        # (rehearsals, gates and local chat; a server always passes one)
        self.guard = guard
        # the keyed pseudonym of an account or customer id in events: a worker passes the
        # installation's (privacy salt, so privacy requests find them); else a key of this runtime alone
        self.refs: Callable[[str], str] = refs or _process_refs()
        self.embedder = embedder or default_embedder()
        self.executor = executor or nlu_pool()
        examples = tuple((name, tuple(topic.triggers)) for name, topic in bundle.topics.items())
        self.classifier = _fitted_classifier(self.embedder, examples, tuple(bundle.agent.scope.refuse_examples))
        docs = tuple((d.path, d.title, d.text) for d in bundle.knowledge)
        self.knowledge = _knowledge_index(self.embedder, docs) if docs else None
        self.connectors = ConnectorClient(
            bundle.agent.connectors, bundle.agent.actions, host_policy=host_policy, secrets=secrets
        )
        self._predictions: OrderedDict[str, IntentPrediction] = OrderedDict()
        self.human_topic = _human_topic(bundle)
        self.capabilities = _capabilities(bundle)

    def new_session(self, **kwargs: Any) -> Session:
        """A new conversation on this bundle."""
        return Session(self, **kwargs)

    async def predict(self, text: str) -> IntentPrediction:
        """The intent of one utterance. Recent answers are kept: a voice call asks the same
        question of the same words twice (judging the end of a turn, then taking it)."""
        cached = self._predictions.get(text)
        if cached is not None:
            self._predictions.move_to_end(text)
            return cached
        loop = asyncio.get_running_loop()
        prediction = await loop.run_in_executor(self.executor, self.classifier.predict, text)
        self._predictions[text] = prediction
        if len(self._predictions) > PREDICTION_CACHE:
            self._predictions.popitem(last=False)
        return prediction

    async def answer(self, text: str, min_score: float) -> Hit | None:
        """The best knowledge passage for `text` scoring at least `min_score`, or None."""
        if self.knowledge is None:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.knowledge.answer, text, min_score)

    async def call(self, name: str, ctx: CallContext, *, session: Session) -> ActionResult:
        """Call a connector action and record it; a customer-scoped answer about someone else is denied."""
        result = await self.connectors.call(name, ctx)
        action = self.agent.actions.get(name)
        if result.status == "ok" and action is not None and action.customer_scoped:
            owner = _owner(result.data)
            if owner is not None and owner != ctx.verified_customer_id:
                # the backend answered with someone else's record: never show it to this caller
                result = ActionResult(
                    name,
                    "denied",
                    result.arguments,
                    None,
                    result.http_status,
                    "response belongs to another customer",
                    result.duration_ms,
                    result.attempts,
                )
        await session.record_action(result)  # the audit chain sees every call
        return result

    async def aclose(self) -> None:
        """Close the connectors' HTTP clients."""
        await self.connectors.aclose()


@functools.lru_cache(maxsize=32)
def _fitted_classifier(
    embedder: Any, examples: tuple[tuple[str, tuple[str, ...]], ...], negatives: tuple[str, ...]
) -> IntentClassifier:
    """Fitting embeds every example; runtimes of the same bundle share the read-only result."""
    classifier = IntentClassifier(embedder)
    classifier.fit({name: list(texts) for name, texts in examples}, negatives=list(negatives) or None)
    return classifier


@functools.lru_cache(maxsize=32)
def _knowledge_index(embedder: Any, docs: tuple[tuple[str, str, str], ...]) -> KnowledgeIndex:
    return KnowledgeIndex([KnowledgeDoc(path=p, title=t, text=x) for p, t, x in docs], embedder)


def _owner(data: Any) -> str | None:
    if isinstance(data, dict):
        value = data.get("customer_id")
        return str(value) if value is not None else None
    return None


def _human_topic(bundle: BundleSource) -> str | None:
    """The topic whose first step escalates is the 'ask for a person' topic."""
    for name, topic in bundle.topics.items():
        if topic.steps and isinstance(topic.steps[0], EscalateStep):
            return name
    return None


def _capabilities(bundle: BundleSource) -> str:
    if bundle.agent.scope.capabilities:
        return bundle.agent.scope.capabilities
    short = [
        t.name.replace("_", " ")
        for t in bundle.topics.values()
        if not (t.steps and isinstance(t.steps[0], EscalateStep))
    ]
    if len(short) <= 1:
        return "".join(short)
    return ", ".join(short[:-1]) + " and " + short[-1]


def _process_refs() -> Callable[[str], str]:
    key = secrets.token_bytes(32)
    return lambda value: "ref:" + hmac.new(key, f"ref={value}".encode(), hashlib.sha256).hexdigest()[:20]
