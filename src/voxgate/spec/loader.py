"""Load an agent directory into validated models, reporting every problem as path:line:col."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from voxgate.spec.models import (
    Agent,
    AskStep,
    BranchStep,
    BundleSource,
    CallStep,
    ConfirmStep,
    ConversationTest,
    EscalateStep,
    KnowledgeDoc,
    Topic,
)

_TAGS = {"say", "ask", "call", "branch", "confirm", "escalate", "end", "answer"}
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][\w.]*)(?:\|(\w+))?\}")
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class BundleError(Exception):
    """Raised with every problem found; str() lists them one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _Doc:
    """A parsed YAML file that remembers where each node came from."""

    def __init__(self, display: str, data: Any):
        self.display = display
        self.data = data

    def locate(self, loc: Iterable[Any]) -> tuple[int, int]:
        parts = list(loc)
        node: Any = self.data
        line, col = (node.lc.line, node.lc.col) if isinstance(node, (CommentedMap, CommentedSeq)) else (0, 0)
        i = 0
        while i < len(parts):
            part = parts[i]
            nxt = parts[i + 1] if i + 1 < len(parts) else None
            if isinstance(node, CommentedMap) and nxt is not None and nxt in node and (part in _TAGS or part not in node):
                i += 1  # a union tag added by pydantic, not a key of the document
                continue
            if isinstance(node, CommentedMap) and part in node:
                line, col = node.lc.key(part)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line, col = node.lc.item(part)
                node = node[part]
            else:
                break  # e.g. a missing or unknown key: stay at the nearest existing node
            i += 1
        return line + 1, col + 1

    def problem(self, loc: Iterable[Any], message: str) -> Problem:
        line, col = self.locate(loc)
        return Problem(self.display, line, col, message)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _parse(path: Path, display: str) -> tuple[_Doc | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(display, 1, 1, f"cannot read file: {exc}")]
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        msg = " ".join(x for x in (exc.context, exc.problem) if x) or str(exc)
        return None, [Problem(display, line, col, f"invalid YAML: {msg}")]
    except YAMLError as exc:
        return None, [Problem(display, 1, 1, f"invalid YAML: {exc}")]
    if data is None:
        return None, [Problem(display, 1, 1, "file is empty")]
    if not isinstance(data, CommentedMap):
        return None, [Problem(display, 1, 1, "expected a mapping at the top level")]
    return _Doc(display, data), []


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, (str, int, bool)) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    parts: list[str] = []
    for part in err.get("loc", ()):
        if not parts or parts[-1] != str(part):  # drop the repeated union tag
            parts.append(str(part))
    loc = ".".join(parts)
    if kind == "extra_forbidden":
        return f"unknown field '{err['loc'][-1]}'" + (f" (in {'.'.join(str(p) for p in err['loc'][:-1])})" if len(err["loc"]) > 1 else "")
    if kind == "missing":
        return f"missing required field '{err['loc'][-1]}'"
    msg = err.get("msg", "invalid value")
    return f"{loc}: {msg}" if loc else msg


def _validate(doc: _Doc, model: type[BaseModel]) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(_plain(doc.data)), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            # for a missing field, point at its parent mapping
            anchor = loc[:-1] if err["type"] == "missing" else loc
            problems.append(doc.problem(anchor, _describe(err)))
        return None, _dedupe(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, int, int, str]] = set()
    out = []
    for p in problems:
        key = (p.path, p.line, p.col, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def expand_env(value: str, environ: dict[str, str] | None = None) -> str:
    """Expand ${VAR} and ${VAR:-default}; unknown variables without a default stay empty."""
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        got = env.get(name)
        return got if got else (default or "")

    return ENV_RE.sub(sub, value)


def load_bundle(root: str | Path) -> BundleSource:
    """Load and validate an agent directory; raise BundleError listing every problem."""
    root = Path(root)
    problems: list[Problem] = []
    if not root.is_dir():
        raise BundleError([Problem(str(root), 1, 1, "not a directory")])

    def display(p: Path) -> str:
        return str(p)

    files: dict[str, str] = {}
    agent_path = root / "agent.yaml"
    agent: Agent | None = None
    agent_doc: _Doc | None = None
    if not agent_path.exists():
        problems.append(Problem(display(agent_path), 1, 1, "agent.yaml is missing"))
    else:
        agent_doc, errs = _parse(agent_path, display(agent_path))
        problems += errs
        if agent_doc:
            agent, errs = _validate(agent_doc, Agent)
            problems += errs
        files["agent.yaml"] = agent_path.read_text(encoding="utf-8", errors="replace")

    topics: dict[str, Topic] = {}
    topic_docs: dict[str, _Doc] = {}
    unreadable: set[str] = set()  # topics whose file did not parse: no cascade of "undefined topic"
    topic_files = sorted((root / "topics").glob("*.yaml")) + sorted((root / "topics").glob("*.yml"))
    if not topic_files:
        problems.append(Problem(display(root / "topics"), 1, 1, "no topics found (topics/*.yaml)"))
    for tf in topic_files:
        files[str(tf.relative_to(root))] = tf.read_text(encoding="utf-8", errors="replace")
        doc, errs = _parse(tf, display(tf))
        problems += errs
        if not doc:
            unreadable.add(tf.stem)
            continue
        topic, errs = _validate(doc, Topic)
        problems += errs
        if topic is None:
            unreadable.add(str(doc.data.get("name", tf.stem)))
            continue
        if topic.name in topics:
            problems.append(doc.problem(["name"], f"duplicate topic name '{topic.name}' (also in {topic_docs[topic.name].display})"))
            continue
        topics[topic.name] = topic
        topic_docs[topic.name] = doc

    knowledge: list[KnowledgeDoc] = []
    for kf in sorted((root / "knowledge").glob("*.md")):
        text = kf.read_text(encoding="utf-8", errors="replace")
        files[str(kf.relative_to(root))] = text
        title = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), kf.stem)
        knowledge.append(KnowledgeDoc(path=str(kf.relative_to(root)), title=title, text=text))

    tests: list[ConversationTest] = []
    for tf in sorted((root / "tests").glob("*.yaml")):
        files[str(tf.relative_to(root))] = tf.read_text(encoding="utf-8", errors="replace")
        doc, errs = _parse(tf, display(tf))
        problems += errs
        if not doc:
            continue
        raw = doc.data.get("tests") if "tests" in doc.data else None
        if raw is None:
            t, errs = _validate(doc, ConversationTest)
            problems += errs
            if t:
                tests.append(t)
        else:
            for i, _ in enumerate(raw):
                sub = _Doc(doc.display, raw[i])
                t, errs = _validate(sub, ConversationTest)
                problems += errs
                if t:
                    tests.append(t)

    if agent is not None and agent_doc is not None:
        problems += _cross_check(agent, agent_doc, topics, topic_docs, knowledge, unreadable)

    if problems:
        raise BundleError(sorted(_dedupe(problems), key=lambda p: (p.path, p.line, p.col)))
    assert agent is not None
    return BundleSource(root=str(root), agent=agent, topics=topics, knowledge=knowledge, tests=tests, files=files)


def _cross_check(
    agent: Agent,
    agent_doc: _Doc,
    topics: dict[str, Topic],
    topic_docs: dict[str, _Doc],
    knowledge: list[KnowledgeDoc],
    unreadable: set[str],
) -> list[Problem]:
    """References between files: actions, connectors, slots, queues, topics, knowledge."""
    problems: list[Problem] = []
    p = agent_doc.problem

    for name, action in agent.actions.items():
        if action.connector not in agent.connectors:
            problems.append(p(["actions", name, "connector"], f"action '{name}' uses undefined connector '{action.connector}'"
                              + _known(agent.connectors)))
        for ph, _ in PLACEHOLDER_RE.findall(action.path) + [
            m for v in action.query.values() for m in PLACEHOLDER_RE.findall(v)
        ]:
            if ph == "customer_id" and not action.customer_scoped:
                problems.append(p(["actions", name, "path"], f"action '{name}' uses {{customer_id}} but is not customer_scoped"))
            elif ph != "customer_id" and not ph.startswith(("slots.", "args.")):
                problems.append(p(["actions", name, "path"], f"unknown placeholder '{{{ph}}}': use {{customer_id}}, {{slots.NAME}} or {{args.NAME}}"))

    for name, conn in agent.connectors.items():
        base = expand_env(conn.base_url)
        host = urlsplit(base).hostname if base else None
        if base and not host:
            problems.append(p(["connectors", name, "base_url"], f"base_url '{conn.base_url}' is not an absolute URL"))
        elif host and host not in conn.hosts:
            problems.append(p(["connectors", name, "base_url"], f"base_url host '{host}' is not in the connector's hosts {conn.hosts}"))

    auth = agent.authentication
    if auth.verify_action and auth.verify_action not in agent.actions:
        problems.append(p(["authentication", "verify_action"], f"undefined action '{auth.verify_action}'" + _known(agent.actions)))
    elif auth.verify_action and agent.actions[auth.verify_action].customer_scoped:
        problems.append(p(["authentication", "verify_action"], f"verify action '{auth.verify_action}' must set customer_scoped: false (it runs before verification)"))
    if isinstance(auth.required_for, list):
        for i, t in enumerate(auth.required_for):
            if t not in topics and t not in unreadable:
                problems.append(p(["authentication", "required_for", i], f"undefined topic '{t}'" + _known(topics)))

    esc = agent.escalation
    if esc.default_queue not in esc.queues:
        problems.append(p(["escalation", "default_queue"], f"undefined queue '{esc.default_queue}'" + _known(esc.queues)))
    for reason, q in esc.reason_queues.items():
        if q not in esc.queues:
            problems.append(p(["escalation", "reason_queues", reason], f"undefined queue '{q}'" + _known(esc.queues)))

    if agent.generative.answers == "retrieval" and not knowledge:
        problems.append(p(["generative", "answers"], "answers: retrieval needs documents in knowledge/*.md"))

    for tname, topic in topics.items():
        doc = topic_docs[tname]
        problems += _check_steps(topic.steps, ["steps"], topic, agent, doc, knowledge, defined=set())
    return problems


def _known(names: Iterable[str]) -> str:
    names = sorted(names)
    return f" (defined: {', '.join(names)})" if names else " (none defined)"


def _check_steps(
    steps: list[Any],
    loc: list[Any],
    topic: Topic,
    agent: Agent,
    doc: _Doc,
    knowledge: list[KnowledgeDoc],
    defined: set[str],
) -> list[Problem]:
    problems: list[Problem] = []
    for i, step in enumerate(steps):
        here = loc + [i]
        if isinstance(step, AskStep):
            if step.ask not in topic.slots:
                problems.append(doc.problem(here + ["ask"], f"undefined slot '{step.ask}'" + _known(topic.slots)))
        elif isinstance(step, CallStep):
            if step.call not in agent.actions:
                problems.append(doc.problem(here + ["call"], f"undefined action '{step.call}'" + _known(agent.actions)))
            problems += _check_steps(step.on_not_found, here + ["call", "on_not_found"], topic, agent, doc, knowledge, set(defined))
            if step.save_as:
                defined.add(step.save_as)
        elif isinstance(step, EscalateStep):
            q = step.escalate.queue
            if q and q not in agent.escalation.queues:
                problems.append(doc.problem(here + ["escalate", "queue"], f"undefined queue '{q}'" + _known(agent.escalation.queues)))
        elif isinstance(step, BranchStep):
            problems += _check_value_ref(step.branch.on, here + ["branch", "on"], topic, doc, defined)
            for case, sub in step.branch.cases.items():
                problems += _check_steps(sub, here + ["branch", "cases", case], topic, agent, doc, knowledge, set(defined))
            problems += _check_steps(step.branch.default, here + ["branch", "default"], topic, agent, doc, knowledge, set(defined))
        elif isinstance(step, ConfirmStep):
            problems += _check_template(step.confirm.prompt, here + ["confirm", "prompt"], topic, doc, defined)
            problems += _check_steps(step.confirm.on_yes, here + ["confirm", "on_yes"], topic, agent, doc, knowledge, set(defined))
            problems += _check_steps(step.confirm.on_no, here + ["confirm", "on_no"], topic, agent, doc, knowledge, set(defined))
        elif hasattr(step, "answer") and not knowledge:
            problems.append(doc.problem(here, "answer: knowledge needs documents in knowledge/*.md"))
        if hasattr(step, "say"):
            problems += _check_template(step.say, here + ["say"], topic, doc, defined)
    return problems


def _check_template(text: str, loc: list[Any], topic: Topic, doc: _Doc, defined: set[str]) -> list[Problem]:
    problems = []
    for ref, flt in PLACEHOLDER_RE.findall(text):
        problems += _check_value_ref(ref + (f"|{flt}" if flt else ""), loc, topic, doc, defined)
    return problems


FILTERS = {"money", "date", "datetime", "spell", "count", "upper", "lower", "digits"}


def _check_value_ref(ref: str, loc: list[Any], topic: Topic, doc: _Doc, defined: set[str]) -> list[Problem]:
    path, _, flt = ref.partition("|")
    head, _, rest = path.partition(".")
    problems = []
    if flt and flt not in FILTERS:
        problems.append(doc.problem(loc, f"unknown filter '|{flt}' (known: {', '.join(sorted(FILTERS))})"))
    if head == "slots":
        slot = rest.split(".")[0]
        if slot not in topic.slots:
            problems.append(doc.problem(loc, f"undefined slot '{slot}' in '{ref}'" + _known(topic.slots)))
    elif head in ("customer", "caller", "session"):
        pass
    elif head not in defined:
        problems.append(doc.problem(loc, f"'{head}' in '{ref}' is not saved by an earlier call step (save_as)"))
    return problems
