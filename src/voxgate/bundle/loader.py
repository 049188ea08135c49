"""Load an agent directory into validated models, reporting every problem as path:line:col."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from voxgate.bundle.models import (
    Agent,
    AskStep,
    BranchStep,
    BundleSource,
    CallStep,
    ConfirmStep,
    ConversationTest,
    ConversationTestFile,
    EscalateStep,
    EventType,
    KnowledgeDoc,
    Topic,
)
from voxgate.errors import InvalidError, TooLargeError

_TAGS = {"say", "ask", "call", "branch", "confirm", "escalate", "end", "answer"}
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][\w.]*)(?:\|(\w+))?\}")
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A YAML alias is a reference, cheap to parse; turning a document into plain data copies what it
# refers to, so ten nested aliases of ten can stand for 10^10 values ("billion laughs"). A bundle
# refuses aliases; other documents (an operator's environments.yaml) may use them, within a budget.
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 100_000
# parsed documents kept per process by their text: a bundle's files are read by the loader, the secret
# scan and the plain-YAML check on every build, and by every process that loads the agent
PARSE_CACHE_ENTRIES = 256
PARSE_CACHE_MAX_TEXT = 256 * 1024
ModelT = TypeVar("ModelT", bound=BaseModel)  # the pydantic model a document is validated into


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class BundleError(InvalidError):
    """Raised with every problem found; str() lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class YamlDocument:
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
            if (
                isinstance(node, CommentedMap)
                and nxt is not None
                and nxt in node
                and (part in _TAGS or part not in node)
            ):
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


class _NoAliasComposer(Composer):
    """Refuses an alias (`*name`) where it stands, so the error names its line and column."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            raise ComposerError(
                None,
                None,
                f"alias *{event.anchor} is not allowed in a bundle: write the value "
                "out (YAML anchors and aliases are refused)",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def yaml_parser(*, aliases: bool = True) -> YAML:
    """A round-trip YAML parser (a new one per document) with voxgate's limits: nesting at most
    MAX_YAML_DEPTH deep, no duplicate keys and, with aliases=False, no aliases at all."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.max_depth = MAX_YAML_DEPTH
    if not aliases:
        yaml.Composer = _NoAliasComposer
    return yaml


class _ParseCache:
    """The last PARSE_CACHE_ENTRIES documents parsed, by the SHA-256 of their text and the alias rule.
    Only documents that parsed are kept (an error is raised again each time, with its place)."""

    def __init__(self, entries: int = PARSE_CACHE_ENTRIES) -> None:
        self.entries = entries
        self._trees: OrderedDict[tuple[bytes, bool], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def load(self, text: str, aliases: bool) -> Any:
        if len(text) > PARSE_CACHE_MAX_TEXT:
            return yaml_parser(aliases=aliases).load(text)
        key = (hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest(), aliases)
        with self._lock:
            if key in self._trees:
                self._trees.move_to_end(key)
                self.hits += 1
                return self._trees[key]
        tree = yaml_parser(aliases=aliases).load(text)
        with self._lock:
            self.misses += 1
            self._trees[key] = tree
            while len(self._trees) > self.entries:
                self._trees.popitem(last=False)
        return tree


_parsed = _ParseCache()


def load_yaml(text: str, *, aliases: bool = True) -> Any:
    """`text` parsed by yaml_parser (raising its YAMLError with the place); a text parsed before in this
    process comes from a small cache, so the tree may be shared: read it, never change it."""
    return _parsed.load(text, aliases)


def parse_document(path: Path, display: str, *, aliases: bool = True) -> tuple[YamlDocument | None, list[Problem]]:
    """Read one YAML file (refusing aliases unless `aliases`): the document, or None and its problems."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(display, 1, 1, f"cannot read file: {exc}")]
    try:
        data = load_yaml(text, aliases=aliases)
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
    return YamlDocument(display, data), []


class _Overgrown(TooLargeError):
    """A document that expands past MAX_YAML_VALUES, or holds itself, through aliases."""

    def __init__(self, node: Any, message: str) -> None:
        super().__init__(message)
        lc = getattr(node, "lc", None)
        where: tuple[int, int] = (lc.line + 1, lc.col + 1) if lc is not None and lc.line is not None else (1, 1)
        self.line, self.col = where


def _plain(value: Any) -> Any:
    """Plain dicts and lists for pydantic; raises _Overgrown rather than copy an alias bomb."""
    budget = MAX_YAML_VALUES
    inside: set[int] = set()

    def plain(node: Any) -> Any:
        nonlocal budget
        budget -= 1
        if budget < 0:
            raise _Overgrown(
                node,
                f"the document expands to more than {MAX_YAML_VALUES} values "
                "(through YAML aliases); write it out plainly",
            )
        if not isinstance(node, (dict, list)):
            return node
        if id(node) in inside:
            raise _Overgrown(node, "a YAML alias refers to a value that contains it")
        inside.add(id(node))
        try:
            if isinstance(node, dict):
                return {str(k) if not isinstance(k, (str, int, bool)) else k: plain(v) for k, v in node.items()}
            return [plain(v) for v in node]
        finally:
            inside.discard(id(node))

    return plain(value)


def _describe(err: ErrorDetails) -> str:
    kind = err.get("type", "")
    parts: list[str] = []
    for part in err.get("loc", ()):
        if not parts or parts[-1] != str(part):  # drop the repeated union tag
            parts.append(str(part))
    loc = ".".join(parts)
    if kind == "extra_forbidden":
        return f"unknown field '{err['loc'][-1]}'" + (
            f" (in {'.'.join(str(p) for p in err['loc'][:-1])})" if len(err["loc"]) > 1 else ""
        )
    if kind == "missing":
        return f"missing required field '{err['loc'][-1]}'"
    msg = err.get("msg", "invalid value")
    return f"{loc}: {msg}" if loc else msg


def validate_document(doc: YamlDocument, model: type[ModelT]) -> tuple[ModelT | None, list[Problem]]:
    """`doc` as a `model`, or None and every problem at its file:line:col."""
    try:
        return model.model_validate(_plain(doc.data)), []
    except _Overgrown as exc:
        return None, [Problem(doc.display, exc.line, exc.col, str(exc))]
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
    agent_doc: YamlDocument | None = None
    if not agent_path.exists():
        problems.append(Problem(display(agent_path), 1, 1, "agent.yaml is missing"))
    else:
        agent_doc, errs = parse_document(agent_path, display(agent_path), aliases=False)
        problems += errs
        if agent_doc:
            agent, errs = validate_document(agent_doc, Agent)
            problems += errs
        files["agent.yaml"] = agent_path.read_text(encoding="utf-8", errors="replace")

    topics: dict[str, Topic] = {}
    topic_docs: dict[str, YamlDocument] = {}
    unreadable: set[str] = set()  # topics whose file did not parse: no cascade of "undefined topic"
    topic_files = sorted((root / "topics").glob("*.yaml")) + sorted((root / "topics").glob("*.yml"))
    if not topic_files:
        problems.append(Problem(display(root / "topics"), 1, 1, "no topics found (topics/*.yaml)"))
    for tf in topic_files:
        files[str(tf.relative_to(root))] = tf.read_text(encoding="utf-8", errors="replace")
        doc, errs = parse_document(tf, display(tf), aliases=False)
        problems += errs
        if not doc:
            unreadable.add(tf.stem)
            continue
        topic, errs = validate_document(doc, Topic)
        problems += errs
        if topic is None:
            unreadable.add(str(doc.data.get("name", tf.stem)))
            continue
        if topic.name in topics:
            problems.append(
                doc.problem(["name"], f"duplicate topic name '{topic.name}' (also in {topic_docs[topic.name].display})")
            )
            continue
        topics[topic.name] = topic
        topic_docs[topic.name] = doc

    knowledge: list[KnowledgeDoc] = []
    for kf in sorted((root / "knowledge").glob("*.md")):
        text = kf.read_text(encoding="utf-8", errors="replace")
        files[str(kf.relative_to(root))] = text
        title = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), kf.stem)
        knowledge.append(KnowledgeDoc(path=str(kf.relative_to(root)), title=title, text=text))

    tests, test_docs, errs = _load_tests(root, files)
    problems += errs

    if agent is not None and agent_doc is not None:
        problems += _cross_check(agent, agent_doc, topics, topic_docs, knowledge, unreadable)
        if not unreadable:
            problems += _check_tests(agent, topics, knowledge, tests, test_docs)

    if problems:
        raise BundleError(sorted(_dedupe(problems), key=lambda p: (p.path, p.line, p.col)))
    assert agent is not None
    return BundleSource(root=str(root), agent=agent, topics=topics, knowledge=knowledge, tests=tests, files=files)


def _cross_check(
    agent: Agent,
    agent_doc: YamlDocument,
    topics: dict[str, Topic],
    topic_docs: dict[str, YamlDocument],
    knowledge: list[KnowledgeDoc],
    unreadable: set[str],
) -> list[Problem]:
    """References between files: actions, connectors, slots, queues, topics, knowledge."""
    problems: list[Problem] = []
    p = agent_doc.problem

    for name, action in agent.actions.items():
        if action.connector not in agent.connectors:
            problems.append(
                p(
                    ["actions", name, "connector"],
                    f"action '{name}' uses undefined connector '{action.connector}'" + _known(agent.connectors),
                )
            )
        for ph, _ in PLACEHOLDER_RE.findall(action.path) + [
            m for v in action.query.values() for m in PLACEHOLDER_RE.findall(v)
        ]:
            if ph == "customer_id" and not action.customer_scoped:
                problems.append(
                    p(["actions", name, "path"], f"action '{name}' uses {{customer_id}} but is not customer_scoped")
                )
            elif ph != "customer_id" and not ph.startswith(("slots.", "args.")):
                problems.append(
                    p(
                        ["actions", name, "path"],
                        f"unknown placeholder '{{{ph}}}': use {{customer_id}}, {{slots.NAME}} or {{args.NAME}}",
                    )
                )

    for name, conn in agent.connectors.items():
        base = expand_env(conn.base_url)
        host = urlsplit(base).hostname if base else None
        if base and not host:
            problems.append(p(["connectors", name, "base_url"], f"base_url '{conn.base_url}' is not an absolute URL"))
        elif host and host not in conn.hosts:
            problems.append(
                p(
                    ["connectors", name, "base_url"],
                    f"base_url host '{host}' is not in the connector's hosts {conn.hosts}",
                )
            )

    auth = agent.authentication
    if auth.verify_action and auth.verify_action not in agent.actions:
        problems.append(
            p(["authentication", "verify_action"], f"undefined action '{auth.verify_action}'" + _known(agent.actions))
        )
    elif auth.verify_action and agent.actions[auth.verify_action].customer_scoped:
        problems.append(
            p(
                ["authentication", "verify_action"],
                f"verify action '{auth.verify_action}' must set customer_scoped: false (it runs before verification)",
            )
        )
    if isinstance(auth.required_for, list):
        for i, t in enumerate(auth.required_for):
            if t not in topics and t not in unreadable:
                problems.append(p(["authentication", "required_for", i], f"undefined topic '{t}'" + _known(topics)))

    esc = agent.escalation
    if esc.default_queue not in esc.queues:
        problems.append(
            p(["escalation", "default_queue"], f"undefined queue '{esc.default_queue}'" + _known(esc.queues))
        )
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
    doc: YamlDocument,
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
            problems += _check_steps(
                step.on_not_found, here + ["call", "on_not_found"], topic, agent, doc, knowledge, set(defined)
            )
            if step.save_as:
                defined.add(step.save_as)
        elif isinstance(step, EscalateStep):
            q = step.escalate.queue
            if q and q not in agent.escalation.queues:
                problems.append(
                    doc.problem(
                        here + ["escalate", "queue"], f"undefined queue '{q}'" + _known(agent.escalation.queues)
                    )
                )
        elif isinstance(step, BranchStep):
            problems += _check_value_ref(step.branch.on, here + ["branch", "on"], topic, doc, defined)
            for case, sub in step.branch.cases.items():
                problems += _check_steps(
                    sub, here + ["branch", "cases", case], topic, agent, doc, knowledge, set(defined)
                )
            problems += _check_steps(
                step.branch.default, here + ["branch", "default"], topic, agent, doc, knowledge, set(defined)
            )
        elif isinstance(step, ConfirmStep):
            problems += _check_template(step.confirm.prompt, here + ["confirm", "prompt"], topic, doc, defined)
            problems += _check_steps(
                step.confirm.on_yes, here + ["confirm", "on_yes"], topic, agent, doc, knowledge, set(defined)
            )
            problems += _check_steps(
                step.confirm.on_no, here + ["confirm", "on_no"], topic, agent, doc, knowledge, set(defined)
            )
        elif hasattr(step, "answer") and not knowledge:
            problems.append(doc.problem(here, "answer: knowledge needs documents in knowledge/*.md"))
        if hasattr(step, "say"):
            problems += _check_template(step.say, here + ["say"], topic, doc, defined)
    return problems


def _check_template(text: str, loc: list[Any], topic: Topic, doc: YamlDocument, defined: set[str]) -> list[Problem]:
    problems = []
    for ref, flt in PLACEHOLDER_RE.findall(text):
        problems += _check_value_ref(ref + (f"|{flt}" if flt else ""), loc, topic, doc, defined)
    return problems


FILTERS = {"money", "date", "datetime", "spell", "count", "upper", "lower", "digits"}


def _check_value_ref(ref: str, loc: list[Any], topic: Topic, doc: YamlDocument, defined: set[str]) -> list[Problem]:
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


# --- conversation tests (tests/*.yaml) --------------------------------------------------------

FIXTURE_RE = re.compile(r"\{([A-Za-z_]\w*(?:\.\w+)+)(?:\|(\w+))?\}")
FIXTURE_FILTERS = {"spoken", "spaced"}
# the reasons the runtime escalates for on its own (one per trigger), besides topics' escalate steps
TRIGGER_REASONS = (
    "caller_request",
    "misunderstandings",
    "verification_failed",
    "verification_locked",
    "action_failed",
    "abusive_language",
)


def _load_tests(
    root: Path, files: dict[str, str]
) -> tuple[list[ConversationTest], list[tuple[YamlDocument, list[Any]]], list[Problem]]:
    """Every test in tests/*.yaml, each with its place: a file holds one test or `tests: [...]`."""
    tests: list[ConversationTest] = []
    where: list[tuple[YamlDocument, list[Any]]] = []
    problems: list[Problem] = []
    for tf in sorted((root / "tests").glob("*.yaml")) + sorted((root / "tests").glob("*.yml")):
        files[str(tf.relative_to(root))] = tf.read_text(encoding="utf-8", errors="replace")
        doc, errs = parse_document(tf, str(tf), aliases=False)
        problems += errs
        if not doc:
            continue
        several = "tests" in doc.data
        found: list[ConversationTest] | None
        if several:
            in_file, errs = validate_document(doc, ConversationTestFile)
            found = in_file.tests if in_file is not None else None
        else:
            one, errs = validate_document(doc, ConversationTest)
            found = [one] if one is not None else None
        problems += errs
        if found is None:
            continue
        for i, test in enumerate(found):
            base: list[Any] = ["tests", i] if several else []
            test._source = f"{doc.display}:{doc.locate(base)[0]}"
            test.category = test.category or tf.stem
            for j, turn in enumerate(test.turns):
                turn._line = doc.locate(base + ["turns", j])[0]
            tests.append(test)
            where.append((doc, base))
    return tests, where, problems


def _check_tests(
    agent: Agent,
    topics: dict[str, Topic],
    knowledge: list[KnowledgeDoc],
    tests: list[ConversationTest],
    where: list[tuple[YamlDocument, list[Any]]],
) -> list[Problem]:
    """Names in tests must be declared by the agent: topics, actions, slots, queues, reasons, documents."""

    events = set(get_args(EventType))
    auth = agent.authentication
    slots = {name for t in topics.values() for name in t.slots} | {auth.identify_by, auth.verify_with}
    reasons = set(TRIGGER_REASONS) | {
        s.escalate.reason for t in topics.values() for s in _all_steps(t.steps) if isinstance(s, EscalateStep)
    }
    docs = {k.path for k in knowledge}
    problems: list[Problem] = []
    seen: dict[str, str] = {}

    def check(doc: YamlDocument, loc: list[Any], ok: bool, what: str, known: Iterable[str]) -> None:
        if not ok:
            problems.append(doc.problem(loc, what + _known(known)))

    def actions(doc: YamlDocument, loc: list[Any], expected: list[Any], not_called: list[str]) -> None:
        for k, a in enumerate(expected):
            check(doc, loc + ["actions", k], a.name in agent.actions, f"undefined action '{a.name}'", agent.actions)
        for k, name in enumerate(not_called):
            check(
                doc, loc + ["actions_not_called", k], name in agent.actions, f"undefined action '{name}'", agent.actions
            )

    for test, (doc, base) in zip(tests, where):
        if test.name in seen:
            problems.append(
                doc.problem(base + ["name"], f"duplicate test name '{test.name}' (also at {seen[test.name]})")
            )
        seen.setdefault(test.name, test.source)
        for j, turn in enumerate(test.turns):
            here = base + ["turns", j]
            exp, loc = turn.expect, here + ["expect"]
            for field in ("say", "dtmf"):
                text = getattr(turn, field)
                for _, flt in FIXTURE_RE.findall(text or ""):
                    check(
                        doc,
                        here + [field],
                        not flt or flt in FIXTURE_FILTERS,
                        f"unknown fixture filter '|{flt}'",
                        FIXTURE_FILTERS,
                    )
            if exp.intent is not None:
                check(doc, loc + ["intent"], exp.intent in topics, f"undefined topic '{exp.intent}'", topics)
            for name in exp.slots:
                check(doc, loc + ["slots", name], name in slots, f"undefined slot '{name}'", slots)
            for k, ev in enumerate(exp.events):
                check(doc, loc + ["events", k], ev in events, f"unknown event '{ev}'", events)
            if exp.citation is not None:
                check(
                    doc,
                    loc + ["citation"],
                    exp.citation.split("#")[0] in docs,
                    f"undefined knowledge document '{exp.citation}'",
                    docs,
                )
            actions(doc, loc, exp.actions, exp.actions_not_called)
        esc, loc = test.expect.escalation, base + ["expect"]
        if esc is not None and esc.queue is not None:
            check(
                doc,
                loc + ["escalation", "queue"],
                esc.queue in agent.escalation.queues,
                f"undefined queue '{esc.queue}'",
                agent.escalation.queues,
            )
        if esc is not None and esc.reason is not None:
            check(
                doc,
                loc + ["escalation", "reason"],
                esc.reason in reasons,
                f"unknown escalation reason '{esc.reason}'",
                reasons,
            )
        actions(doc, loc, test.expect.actions, test.expect.actions_not_called)
    return problems


def _all_steps(steps: list[Any]) -> Iterable[Any]:
    for step in steps:
        yield step
        if isinstance(step, CallStep):
            yield from _all_steps(step.on_not_found)
        elif isinstance(step, BranchStep):
            for sub in step.branch.cases.values():
                yield from _all_steps(sub)
            yield from _all_steps(step.branch.default)
        elif isinstance(step, ConfirmStep):
            yield from _all_steps(step.confirm.on_yes)
            yield from _all_steps(step.confirm.on_no)
