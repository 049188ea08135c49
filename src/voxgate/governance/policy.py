"""Cedar authorisation: load the policy directory once (validated against its schema), then decide requests.

The policy directory holds one Cedar schema (`schema.cedarschema`) and any number of `*.cedar`
policy files. Loading parses everything once, validates every policy against the schema (a typo
in an attribute or action name fails the load with `file:line`), checks that the schema declares
exactly the actions of `governance/actions.py`, and keeps pre-parsed handles. Every policy must
carry an `@id("...")` annotation: decisions report those ids as their reasons, so an audit event
can name the rule that allowed or refused something.

Deciding is deny by default: an unknown action, a resource of the wrong type, a malformed entity
or any evaluation error is a deny, never an allow. An API token's scopes are folded in as
`context.scope_ok`, which a forbid policy checks, so a token can only narrow its user's roles.

Speed (target p99 <= 100 µs, see bench/policy.py): cedarpy's per-call cost grows with the
policies evaluated, the entities it parses and schema checks, so the engine keeps (1) pre-parsed
policy sets per action and role set, holding only the policies that can apply: those whose
scope matches the action and whose leading role test the user passes (the others would be
false before anything else is evaluated, so decisions, reasons and errors are unchanged);
(2) bounded memos of pre-parsed entity handles per principal and per (principal, resource);
(3) schema checks of entities once per shape, and of principal/resource types in Python,
instead of re-validating every request. Decisions themselves are never cached: Cedar
evaluates every request. tests/test_policy.py checks the engine against plain Cedar over the
whole policy set with the schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import cedarpy
from cedarpy import pst

from voxgate.errors import InvalidError
from voxgate.governance.actions import ACTIONS
from voxgate.governance.principals import Principal

Tier = Literal["development", "test", "production", ""]
TIERS: tuple[str, ...] = get_args(Tier)

SCHEMA_FILE = "schema.cedarschema"
DEFAULT_POLICY_DIR = Path(__file__).resolve().parent / "policies"

_ENTITY_CACHE_SIZE = 4096
_END_OF_INPUT = "unexpected end of input"


class PolicyLoadError(InvalidError):
    """The policy directory cannot be used; the message names the file (and line) and what is wrong."""


# ---- token scopes ---------------------------------------------------------------------------------


def scope_matches(pattern: str, action: str) -> bool:
    """Whether one scope pattern ("*", "bundle.*", "audit.read") covers `action`."""
    if pattern == "*" or pattern == action:
        return True
    return pattern.endswith(".*") and action.startswith(pattern[:-1])


def scopes_cover(scopes: Iterable[str], action: str) -> bool:
    """Whether any of the token scopes allows `action`."""
    return any(scope_matches(p, action) for p in scopes)


def validate_scopes(scopes: Sequence[str]) -> list[str]:
    """Check token scopes against the action catalogue; returns them de-duplicated, in order.

    A scope is "*", an action name ("audit.read") or a prefix of action names followed by ".*"
    ("bundle.*", "dlp.exception.*"); one that covers no action at all is refused, so a typo
    cannot become a token that silently does nothing (or, worse, more than meant).
    """
    if isinstance(scopes, str) or not scopes:
        raise ValueError('scopes: give at least one scope, e.g. ["*"], ["bundle.*"] or ["audit.read"]')
    out: list[str] = []
    for pattern in scopes:
        if not isinstance(pattern, str) or not any(scope_matches(pattern, a) for a in ACTIONS):
            prefixes = sorted({a.rsplit(".", 1)[0] + ".*" for a in ACTIONS})
            raise ValueError(
                f"scopes: {pattern!r} covers no action; use '*', an action name "
                f"(e.g. 'audit.read') or one of {', '.join(prefixes)}"
            )
        if pattern not in out:
            out.append(pattern)
    return out


# ---- request parts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """What a request is about: a Cedar entity type (see `ActionInfo.resource`), an id and attributes.

    Attributes must match the schema (e.g. a Bundle has author and agent); an Environment's tier
    defaults to the context's tier, and a User's attributes to its id, when not given.
    Attributes the schema does not declare are ignored (no validated policy can read them).
    """

    type: str
    id: str
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def environment(cls, name: str, tier: str) -> Resource:
        """An environment, with its tier."""
        return cls("Environment", name, {"tier": tier})

    @classmethod
    def bundle(cls, digest: str, author: str, agent: str) -> Resource:
        """A bundle, with its author and agent."""
        return cls("Bundle", digest, {"author": author, "agent": agent})

    @classmethod
    def publish_request(cls, request_id: str, author: str, requester: str, target: str) -> Resource:
        """A publish request, with the bundle's author, the requester and the target environment."""
        return cls("PublishRequest", request_id, {"author": author, "requester": requester, "target": target})

    @classmethod
    def user(cls, user_id: str) -> Resource:
        """A user account (for actions on users, such as role bindings)."""
        return cls("User", user_id, {"id": user_id, "roles": []})

    @classmethod
    def agent(cls, name: str) -> Resource:
        """An agent, by name."""
        return cls("Agent", name)

    @classmethod
    def audit_log(cls) -> Resource:
        """The audit log (there is one)."""
        return cls("AuditLog", "audit")

    @classmethod
    def directory(cls) -> Resource:
        """The user directory (there is one)."""
        return cls("Directory", "users")


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """Facts about the request besides who, what and on what.

    `environment` selects the principal's roles: those bound there plus those bound on "*".
    "" means a global resource (the audit log, the user directory): only "*" bindings count,
    so an admin of dev alone can never manage users. `in_change_window` is True where the
    environment has no change windows. Token scopes need not be passed: the engine derives
    `scope_ok` from the principal's scopes itself, so a caller cannot forget them; a `scope_ok`
    given here is combined with that (both must hold).
    """

    environment: str = ""
    tier: str = ""
    in_change_window: bool = True
    scope_ok: bool | None = None  # a caller's own scope verdict; it can only narrow the engine's

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"tier: {self.tier!r} is not one of {', '.join(repr(t) for t in TIERS)}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: allowed or not, the @id of each policy that determined it, and any errors.

    A deny with no reasons is the default deny (no permit matched); a deny naming policies was
    forbidden by them; errors mean the request could not be evaluated and was refused.
    """

    allowed: bool
    reasons: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


# ---- loading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PolicySource:
    policy_id: str  # the @id annotation
    file: str
    line: int
    text: str


def _statements(text: str) -> list[tuple[int, str]]:
    """Split Cedar policy text into (first line, text) per policy, honouring strings and comments.

    `;` only ends a policy at top level in Cedar's grammar, so a small lexer that skips string
    literals and `//` comments finds every boundary; it is used to name lines in errors. Each
    policy's text starts at its first token (annotation or effect), so lines count from there.
    """
    out: list[tuple[int, str]] = []
    first: tuple[int, int] | None = None  # (line, offset) of the current policy's first token
    line = 1
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif not ch.isspace() and first is None:
            first = (line, i)
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif ch == ";" and first is not None:
            out.append((first[0], text[first[1] : i + 1]))
            first = None
        i += 1
    if first is not None:
        out.append((first[0], text[first[1] :]))
    return out


def _line_of(token: str, text: str, first_line: int) -> int:
    """The line (counted from `first_line`) where `token` first appears in `text`, else `first_line`."""
    pos = text.find(token) if token else -1
    return first_line if pos < 0 else first_line + text.count("\n", 0, pos)


def _locate_parse_error(text: str, first_line: int, message: str) -> int:
    """Best-effort line of a parse error: the first line at which a prefix of the policy fails the same way."""
    lines = text.split("\n")
    if message == _END_OF_INPUT:
        return first_line + len(lines) - 1
    for k in range(1, len(lines) + 1):
        try:
            cedarpy.PolicySet.from_str("\n".join(lines[:k]))
        except ValueError as exc:
            if str(exc) == message:
                return first_line + k - 1
    return first_line


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyLoadError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise PolicyLoadError(f"{path}: cannot be read ({exc.strerror})") from None


def _load_schema(path: Path) -> cedarpy.Schema:
    if not path.is_file():
        raise PolicyLoadError(f"{path}: the policy directory needs a Cedar schema named {SCHEMA_FILE}")
    text = _read(path)
    try:
        return cedarpy.Schema.from_str(text)
    except ValueError as exc:
        message = str(exc)
        names = re.findall(r"`([^`]+)`", message) or re.findall(r":\s*([A-Za-z_][\w:, ]*)$", message)
        token = names[0].split(",")[0].strip() if names else ""
        line = _line_of(token, text, 1) if token else 0
        where = f"{path}:{line}" if line and token and token in text else str(path)
        raise PolicyLoadError(f"{where}: invalid Cedar schema: {message}") from None


def _parse_file(path: Path) -> list[_PolicySource]:
    """Parse one policy file, naming file:line for a syntax error or a missing @id."""
    text = _read(path)
    sources: list[_PolicySource] = []
    for first_line, stmt in _statements(text):
        try:
            parsed = cedarpy.policies_to_pst(stmt)
        except ValueError as exc:
            line = _locate_parse_error(stmt, first_line, str(exc))
            raise PolicyLoadError(f"{path}:{line}: Cedar syntax error: {exc}") from None
        for policy in parsed.static_policies.values():
            pid = policy.annotations.get("id")
            if not pid:
                raise PolicyLoadError(
                    f'{path}:{first_line}: every policy needs an @id("...") annotation naming it in decisions'
                )
            sources.append(_PolicySource(pid, str(path), first_line, stmt))
        if parsed.templates:
            raise PolicyLoadError(f"{path}:{first_line}: policy templates (?principal/?resource) are not used here")
    return sources


def _actions_of(policy: pst.Template) -> frozenset[str] | None:
    """The catalogue actions a policy's scope can match; None for "any" (or anything not plainly listed)."""
    scope = policy.action
    if isinstance(scope, pst.ActionEq):
        uids = [scope.entity]
    elif isinstance(scope, pst.ActionIn):
        uids = list(scope.entities)
    else:
        return None
    ids = frozenset(u.id for u in uids)
    # `in` an action group would need the group's members; stay conservative and keep the policy everywhere
    return ids if ids <= ACTIONS.keys() else None


@dataclass(frozen=True)
class _Compiled:
    policy_id: str  # Cedar's positional id, kept so reasons map to @id annotations
    policy: pst.Template
    actions: frozenset[str] | None
    guard: tuple[str, bool] | None  # (role, whether it must be held) for the policy to be able to apply


def _role_test(expr: pst.Expr) -> tuple[str, bool] | None:
    """("x", True) for `principal.roles.contains("x")`, ("x", False) for its negation, else None."""
    negated = False
    if isinstance(expr, pst.UnaryOp) and expr.op == "not":
        expr, negated = expr.arg, True
    if (
        isinstance(expr, pst.BinaryOp)
        and expr.op == "contains"
        and isinstance(expr.left, pst.GetAttr)
        and expr.left.attr == "roles"
        and isinstance(expr.left.base, pst.Var)
        and expr.left.base.name == "principal"
        and isinstance(expr.right, pst.StringLit)
    ):
        return expr.right.value, not negated
    return None


def _leftmost(expr: pst.Expr, op: str) -> pst.Expr:
    while isinstance(expr, pst.BinaryOp) and expr.op == op:
        expr = expr.left
    return expr


def _role_guard(policy: pst.Template) -> tuple[str, bool] | None:
    """The role test that decides, before anything else is evaluated, whether `policy` can apply.

    Cedar evaluates the first condition first and `&&`/`||` left to right with short-circuit: a
    `when` whose leftmost conjunct is a role test is false (with nothing else evaluated) when the
    test fails; an `unless` whose leftmost disjunct is a role test is true when the test passes.
    """
    if not policy.clauses:
        return None
    clause = policy.clauses[0]
    if isinstance(clause, pst.When):
        return _role_test(_leftmost(clause.expr, "and"))
    test = _role_test(_leftmost(clause.expr, "or"))
    return None if test is None else (test[0], not test[1])


def _check_catalogue(schema: cedarpy.Schema, schema_path: Path) -> frozenset[str]:
    """The schema must declare exactly the catalogue's actions, each on the catalogue's resource type.

    Returns the actions the schema lets an anonymous Caller ask for: decisions are made without
    re-validating each request against the schema (that costs more than the decision itself), so
    the engine checks principal and resource types itself, from what the schema says here.
    """
    probes = [
        (name, f'permit (principal, action == Action::"{name}", resource is {info.resource});')
        for name, info in ACTIONS.items()
    ]
    result = cedarpy.validate_policies("\n".join(p for _, p in probes), schema)
    if not result.validation_passed:
        problems = sorted({probes[int(e.policy_id.removeprefix("policy"))][0] for e in result.errors if e.policy_id})
        details = ", ".join(f"{a} (resource {ACTIONS[a].resource})" for a in problems)
        raise PolicyLoadError(
            f"{schema_path}: the schema does not declare these catalogue actions with their resource type: {details}"
        )
    declared = set(re.findall(r'^action "((?:[^"\\]|\\.)*)"', str(schema), flags=re.MULTILINE))
    extra = sorted(declared - ACTIONS.keys())
    if extra:
        raise PolicyLoadError(
            f"{schema_path}: actions not in governance/actions.py: {', '.join(extra)} "
            "(add them to the catalogue first, so every action is decided and tested)"
        )
    names = list(ACTIONS)
    probes_text = "\n".join(f'permit (principal is Caller, action == Action::"{name}", resource);' for name in names)
    refused = {int(e.policy_id.removeprefix("policy")) for e in cedarpy.validate_policies(probes_text, schema).errors}
    return frozenset(name for i, name in enumerate(names) if i not in refused)


def _declared_attributes(schema: cedarpy.Schema) -> dict[str, frozenset[str]]:
    """Each entity type's top-level attribute names, read from Cedar's own rendering of the schema.

    cedarpy exposes no schema introspection; `str(schema)` is Cedar's canonical text (one
    attribute per line, two-space indent). A type this cannot read is simply left unfiltered.
    """
    out: dict[str, frozenset[str]] = {}
    for match in re.finditer(r"^entity (\w+)(?: in \[[^\]]*\])?(?: = \{\n(.*?)^\})?;", str(schema), re.M | re.S):
        body = match.group(2) or ""
        out[match.group(1)] = frozenset(re.findall(r'^  "?([^"\s?:]+)"?\??:', body, re.M))
    return out


def _policy_digest(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        h.update(path.name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return "sha256:" + h.hexdigest()


# ---- the engine -----------------------------------------------------------------------------------

#: policy directories parsed and validated in this process, by (directory, digest of the schema and policy
#: files): what a PolicyEngine is built from, none of it changed after loading
_VALIDATED: dict[
    tuple[str, str],
    tuple[cedarpy.Schema, tuple[_PolicySource, ...], dict[str, list[_Compiled]], str, frozenset[str]],
] = {}
_VALIDATED_SIZE = 16


class PolicyEngine:
    """Pre-parsed, validated Cedar policies and schema; `decide` answers "is this allowed?"."""

    def __init__(
        self,
        policy_dir: Path,
        schema: cedarpy.Schema,
        sources: Sequence[_PolicySource],
        by_action: Mapping[str, Sequence[_Compiled]],
        digest: str,
        caller_actions: frozenset[str],
        entity_cache_size: int = _ENTITY_CACHE_SIZE,
    ):
        self.policy_dir = policy_dir
        self.policy_ids: tuple[str, ...] = tuple(s.policy_id for s in sources)
        self._order = {pid: i for i, pid in enumerate(self.policy_ids)}  # reasons come in load order
        self._schema = schema
        self._by_action = {action: tuple(found) for action, found in by_action.items()}
        # the policy set a request is evaluated against, per (action, roles); None for a caller
        self._policy_sets: dict[tuple[str, frozenset[str] | None], cedarpy.PolicySet] = {}
        self._digest = digest
        self._caller_actions = caller_actions
        self._declared = _declared_attributes(schema)
        self._action_uids = {name: {"type": "Action", "id": name} for name in ACTIONS}
        # Memos of request parts, keyed by plain values. Each is a dict that is emptied when full:
        # dict get/set are atomic under the GIL, so threads share them without a lock.
        self._entity_cache_size = entity_cache_size
        self._scope_ok: dict[tuple[frozenset[str], str], bool] = {}
        self._contexts: dict[tuple[str, str, bool, bool], str] = {}
        self._principals: dict[tuple[str, str, frozenset[str] | None], tuple[str, _Shape]] = {}
        self._resources: dict[tuple[Any, ...], tuple[str, _Shape]] = {}
        self._entities: dict[tuple[str, str], cedarpy.Entities] = {}
        self._principal_handles: dict[str, cedarpy.Entities] = {}
        self._valid_shapes: set[_Shape] = set()

    @classmethod
    def load(cls, policy_dir: Path | None = None, *, entity_cache_size: int = _ENTITY_CACHE_SIZE) -> PolicyEngine:
        """Parse and validate a policy directory (default: the policies packaged with voxgate).

        `entity_cache_size` bounds the pre-parsed (principal, resource) entity handles kept; 0
        parses the entities of every request afresh (the benchmark's "cold" figure).
        """
        policy_dir = Path(policy_dir) if policy_dir is not None else DEFAULT_POLICY_DIR
        if not policy_dir.is_dir():
            raise PolicyLoadError(f"{policy_dir}: policy directory not found")
        schema_path = policy_dir / SCHEMA_FILE
        files = sorted(policy_dir.glob("*.cedar"))
        key = None
        if schema_path.is_file() and files:
            # the same files as a load before (a worker opening its governance again): parsed and validated then
            key = (str(policy_dir.resolve()), _policy_digest([schema_path, *files]))
            known = _VALIDATED.get(key)
            if known is not None:
                return cls(policy_dir, *known, entity_cache_size)
        schema = _load_schema(schema_path)
        caller_actions = _check_catalogue(schema, schema_path)
        if not files:
            raise PolicyLoadError(f"{policy_dir}: no *.cedar policy files (everything would be denied)")
        sources: list[_PolicySource] = []
        for path in files:
            sources.extend(_parse_file(path))
        seen: dict[str, _PolicySource] = {}
        for src in sources:
            if src.policy_id in seen:
                first = seen[src.policy_id]
                raise PolicyLoadError(
                    f"{src.file}:{src.line}: @id({src.policy_id!r}) is already used at {first.file}:{first.line}"
                )
            seen[src.policy_id] = src
        # Positional ids (policy0, policy1, ...) follow the order of the concatenated statements.
        combined = "\n".join(src.text for src in sources)
        result = cedarpy.validate_policies(combined, schema)
        if not result.validation_passed:
            raise PolicyLoadError(_validation_report(result, sources))
        parsed = cedarpy.policies_to_pst(combined)
        policies = list(parsed.static_policies.items())
        if len(policies) != len(sources):  # the splitter and Cedar disagree: never guess
            raise PolicyLoadError(f"{policy_dir}: could not split the policy files into single policies")
        compiled = [_Compiled(pid, p, _actions_of(p), _role_guard(p)) for pid, p in policies]
        by_action = {a: [c for c in compiled if c.actions is None or a in c.actions] for a in ACTIONS}
        digest = _policy_digest([schema_path, *files])
        if key is not None and key[1] == digest:  # unchanged while it was read: what was validated is these files
            if len(_VALIDATED) >= _VALIDATED_SIZE:
                _VALIDATED.clear()
            _VALIDATED[key] = (schema, tuple(sources), by_action, digest, caller_actions)
        return cls(policy_dir, schema, sources, by_action, digest, caller_actions, entity_cache_size)

    @property
    def policy_digest(self) -> str:
        """sha256 over the schema and policy files, to record which policy version decided."""
        return self._digest

    def decide(self, principal: Principal, action: str, resource: Resource, context: PolicyContext) -> Decision:
        """Is `principal` allowed to do `action` on `resource`? Deny by default, deny on any error."""
        if action not in self._by_action:
            return Decision(False, errors=(f"unknown action {action!r}",))
        expected = ACTIONS[action].resource
        if resource.type != expected:
            return Decision(False, errors=(f"{action} is decided on a {expected}, not a {resource.type}",))
        is_user = principal.kind == "user"
        if not is_user and action not in self._caller_actions:
            return Decision(False, errors=(f"{action} is not an action a caller can ask for",))
        roles = principal.roles_in(context.environment or None) if is_user else None
        policies = self._policy_set(action, roles)
        try:
            entities = self._entities_for(principal, roles, resource, context)
        except (ValueError, TypeError) as exc:
            detail = f"{resource.type} {resource.id!r} with attributes {sorted(resource.attrs)}"
            return Decision(False, errors=(f"invalid request entities ({detail}): {exc}",))
        request = {
            "principal": {"type": "User" if is_user else "Caller", "id": principal.id},
            "action": self._action_uids[action],
            "resource": {"type": resource.type, "id": resource.id},
            "context": self._context_json(
                context, self._scope_covers(principal.scopes, action) and context.scope_ok is not False
            ),
        }
        try:
            # No schema here: the policies were validated against it at load, the entities when
            # their handle was built, and the types of principal, resource and context are
            # checked above; re-validating every request would cost more than the decision.
            result = cedarpy.is_authorized(request, policies, entities)
        except ValueError as exc:
            return Decision(False, errors=(str(exc),))
        diagnostics = result.diagnostics
        names = diagnostics.id_annotations_by_reason
        reasons = tuple(sorted((names.get(r, r) for r in diagnostics.reasons), key=self._load_order))
        errors = tuple(str(e) for e in diagnostics.errors)
        # Cedar skips a policy whose evaluation errors; a skipped forbid must not turn into an allow.
        return Decision(result.allowed and not errors, reasons, errors)

    # -- memoised request parts --

    def _load_order(self, policy_id: str) -> int:
        """Where a policy came in the files (a reason not among them last)."""
        return self._order.get(policy_id, len(self._order))

    def _policy_set(self, action: str, roles: frozenset[str] | None) -> cedarpy.PolicySet:
        """The policies that can apply to `action` asked by a user with `roles` (None: a caller).

        A policy whose first condition starts with a role test this user fails (`principal.roles
        .contains("maker") && ...` for a non-maker) evaluates to false without evaluating anything
        else, so leaving it out changes no decision, reason or error; it only spares Cedar the work.
        """
        key = (action, roles)
        found = self._policy_sets.get(key)
        if found is None:
            chosen = {
                c.policy_id: c.policy
                for c in self._by_action[action]
                if roles is None or c.guard is None or (c.guard[0] in roles) == c.guard[1]
            }
            found = cedarpy.PolicySet.from_pst(pst.PolicySet(templates={}, static_policies=chosen, template_links=()))
            _remember(self._policy_sets, key, found, _ENTITY_CACHE_SIZE)
        return found

    def _scope_covers(self, scopes: frozenset[str] | None, action: str) -> bool:
        if scopes is None:  # a console session: the user's roles apply unnarrowed
            return True
        key = (scopes, action)
        ok = self._scope_ok.get(key)
        if ok is None:
            ok = _remember(self._scope_ok, key, scopes_cover(scopes, action), _ENTITY_CACHE_SIZE)
        return ok

    def _context_json(self, context: PolicyContext, scope_ok: bool) -> str:
        key = (context.environment, context.tier, context.in_change_window, scope_ok)
        text = self._contexts.get(key)
        if text is None:
            value = {"environment": key[0], "tier": key[1], "in_change_window": key[2], "scope_ok": scope_ok}
            text = _remember(self._contexts, key, json.dumps(value), _ENTITY_CACHE_SIZE)
        return text

    def _principal_entity(self, principal: Principal, roles: frozenset[str] | None) -> tuple[str, _Shape]:
        key = (principal.kind, principal.id, roles)
        found = self._principals.get(key)
        if found is None:
            if roles is not None:
                entity = _entity("User", principal.id, {"id": principal.id, "roles": sorted(roles)})
            else:
                entity = _entity("Caller", principal.id, {})
            found = _remember(self._principals, key, entity, _ENTITY_CACHE_SIZE)
        return found

    def _resource_entity(self, resource: Resource, tier: str) -> tuple[str, _Shape]:
        attrs = resource.attrs
        declared = self._declared.get(resource.type)
        if declared is not None and not attrs.keys() <= declared:
            # Validated policies cannot read an attribute the schema does not declare, so dropping
            # one cannot change a decision; it spares callers from knowing each type's exact shape.
            attrs = {k: v for k, v in attrs.items() if k in declared}
        if resource.type == "Environment" and "tier" not in attrs:
            attrs = {**attrs, "tier": tier}
        elif resource.type == "User" and not attrs:  # a user as a resource: only who it is matters
            attrs = {"id": resource.id, "roles": []}
        key = (
            resource.type,
            resource.id,
            *((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(attrs.items())),
        )
        found = self._resources.get(key)
        if found is None:
            found = _remember(
                self._resources, key, _entity(resource.type, resource.id, dict(attrs)), _ENTITY_CACHE_SIZE
            )
        return found

    def _entities_for(
        self, principal: Principal, roles: frozenset[str] | None, resource: Resource, context: PolicyContext
    ) -> cedarpy.Entities:
        principal_json, principal_shape = self._principal_entity(principal, roles)
        if resource.type == ("User" if principal.kind == "user" else "Caller") and resource.id == principal.id:
            resource_json, resource_shape = "", None  # the principal entity already is the resource (own tokens)
        else:
            resource_json, resource_shape = self._resource_entity(resource, context.tier)
        key = (principal_json, resource_json)
        handle = self._entities.get(key)
        if handle is None:
            handle = self._principal_handles.get(principal_json)
            if handle is None:
                self._check_shape(principal_shape, principal_json)
                handle = cedarpy.Entities.from_json_str("[" + principal_json + "]")
                if self._entity_cache_size:
                    _remember(self._principal_handles, principal_json, handle, self._entity_cache_size)
            if resource_shape is not None:
                self._check_shape(resource_shape, resource_json)
                handle = handle.with_added_json_str("[" + resource_json + "]")
            if self._entity_cache_size:
                _remember(self._entities, key, handle, self._entity_cache_size)
        return handle

    def _check_shape(self, shape: _Shape, entity_json: str) -> None:
        """Validate an entity against the schema once per shape (type, attribute names and kinds).

        Parsing entities with the schema costs about twice parsing them without it, and
        conformance depends only on the shape, so an entity whose shape already passed is parsed
        without the schema. Raises ValueError when the entity does not conform.
        """
        if shape not in self._valid_shapes:
            cedarpy.Entities.from_json_str("[" + entity_json + "]", self._schema)
            self._valid_shapes.add(shape)


_Shape = tuple[str, tuple[tuple[str, Any], ...]]
_V = TypeVar("_V")


def _entity(type_name: str, entity_id: str, attrs: dict[str, Any]) -> tuple[str, _Shape]:
    """An entity as Cedar JSON, and its shape: what conformance to the schema depends on."""
    text = json.dumps(
        {"uid": {"type": type_name, "id": entity_id}, "attrs": attrs, "parents": []}, separators=(",", ":")
    )
    kinds = tuple(sorted((k, _kind(v)) for k, v in attrs.items()))
    return text, (type_name, kinds)


def _kind(value: Any) -> Any:
    if isinstance(value, (list, tuple, set, frozenset)):
        return ("set", tuple(sorted({type(v).__name__ for v in value})))
    if isinstance(value, dict):
        return ("record", tuple(sorted((k, _kind(v)) for k, v in value.items())))
    return type(value).__name__


def _remember(memo: dict[Any, _V], key: Any, value: _V, size: int) -> _V:
    if len(memo) >= size:
        memo.clear()  # rare; cheaper and simpler than LRU bookkeeping on every hit
    memo[key] = value
    return value


def _validation_report(result: cedarpy.ValidationResult, sources: Sequence[_PolicySource]) -> str:
    lines = []
    for err in result.errors:
        index = int(err.policy_id.removeprefix("policy")) if err.policy_id.startswith("policy") else -1
        message = re.sub(r"^for policy `[^`]*`, ", "", err.error)
        if 0 <= index < len(sources):
            src = sources[index]
            tokens = re.findall(r"`([^`]+)`", message)
            token = tokens[0] if tokens else ""
            # Cedar quotes names it rejects (`rolez`, `Action::"x"`); point at the line that holds them.
            token = token.split("::", 1)[-1] if "::" in token else token
            line = _line_of(token, src.text, src.line) if token else src.line
            lines.append(f"{src.file}:{line}: policy {src.policy_id!r} does not match the schema: {message}")
        else:
            lines.append(f"policy does not match the schema: {message}")
    return "\n".join(dict.fromkeys(lines))
