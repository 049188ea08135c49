"""Data-loss prevention for connectors: business / non-business / blocked groups, an endpoint filter, exceptions.

An environment's `DlpPolicy` sorts every host a connector may reach into a group by host pattern
(fnmatch-style: `*.harbor.internal`, `127.0.0.1`). An agent may not combine business and
non-business connectors, may not use a blocked one, and may only reach the hosts and URL paths
its environment's endpoint filter allows (ordered rules, first match wins, deny by default).

The same policy is applied three times: `check_bundle` at build, deploy and promotion, and
`DlpHostPolicy` on every live connector call, so a bundle altered after it was checked still
cannot reach a host the environment does not allow. Exceptions lift one rule for one connector
for at most 30 days; an expired exception stops applying by itself and is reported as a warning.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import secrets as _random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from sqlalchemy import select

from voxgate.bundle.loader import PLACEHOLDER_RE, expand_env
from voxgate.bundle.models import BundleSource, HttpConnector
from voxgate.clock import utcnow
from voxgate.errors import InvalidError
from voxgate.runtime.connectors import HostPolicy
from voxgate.store.models import DlpExceptionRow

if TYPE_CHECKING:
    from voxgate.governance.environments import EnvironmentConfig
    from voxgate.store.db import Database

Group = Literal["business", "non_business", "blocked"]
ExceptionRule = Literal["mixing", "blocked", "endpoint"]

RULE_MIXED = "dlp.mixed_groups"
RULE_BLOCKED = "dlp.blocked_connector"
RULE_ENDPOINT = "dlp.endpoint_denied"
# the short names stored in dlp_exceptions.rule, and the violation each one lifts
RULE_IDS: dict[str, str] = {"mixing": RULE_MIXED, "blocked": RULE_BLOCKED, "endpoint": RULE_ENDPOINT}
MAX_EXCEPTION_DAYS = 30

_HOST_PATTERN_RE = re.compile(r"^[A-Za-z0-9*?.\-:\[\]_]+$")


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes even for timezone=True columns; they were written as UTC
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(p.lower()) for p in patterns]
    return re.compile("|".join(parts)) if parts else None


def _matches(compiled: re.Pattern[str] | None, value: str) -> bool:
    return compiled is not None and compiled.match(value.lower()) is not None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_host_patterns(values: list[str]) -> list[str]:
    for v in values:
        if not v or "/" in v or not _HOST_PATTERN_RE.match(v):
            raise ValueError(
                f"'{v}' is not a host pattern: give a host name or IP address, optionally with * and ? "
                "wildcards (no scheme, port or path), e.g. '*.harbor.internal' or '127.0.0.1'"
            )
    return values


class ConnectorGroups(_Strict):
    """Host patterns per group. A host matching `blocked` is blocked whatever else it matches."""

    business: list[str] = Field(default_factory=list, description="Hosts that may carry business data.")
    non_business: list[str] = Field(default_factory=list, description="Hosts outside the business boundary.")
    blocked: list[str] = Field(default_factory=list, description="Hosts no agent may use.")

    _hosts = field_validator("business", "non_business", "blocked")(classmethod(lambda cls, v: _check_host_patterns(v)))

    @model_validator(mode="after")
    def _no_pattern_in_two_groups(self) -> ConnectorGroups:
        seen: dict[str, str] = {}
        for group in ("blocked", "business", "non_business"):
            for pattern in getattr(self, group):
                key = pattern.lower()
                if key in seen and seen[key] != group:
                    raise ValueError(f"host pattern '{pattern}' is listed in both {seen[key]} and {group}")
                seen[key] = group
        return self


class EndpointRule(_Strict):
    """One ordered rule of the endpoint filter: hosts and URL path patterns, allow or deny."""

    effect: Literal["allow", "deny"]
    hosts: list[str] = Field(min_length=1, description="Host patterns (fnmatch-style).")
    paths: list[str] = Field(
        default_factory=lambda: ["*"],
        description="URL path patterns (fnmatch-style; '*' also matches '/'), e.g. '/api/*'.",
    )
    description: str = ""

    _hosts = field_validator("hosts")(classmethod(lambda cls, v: _check_host_patterns(v)))

    @field_validator("paths")
    @classmethod
    def _paths_are_paths(cls, values: list[str]) -> list[str]:
        for v in values:
            if not v or not v.startswith(("/", "*")):
                raise ValueError(f"path pattern '{v}' must start with '/' (or be '*')")
        return values

    @cached_property
    def _host_re(self) -> re.Pattern[str] | None:
        return _compile(self.hosts)

    @cached_property
    def _path_re(self) -> re.Pattern[str]:
        # paths are case-sensitive, unlike host names
        return re.compile("|".join(fnmatch.translate(p) for p in self.paths))

    @property
    def all_paths(self) -> bool:
        """Whether the rule covers every path of its hosts."""
        return "*" in self.paths

    def matches_host(self, host: str) -> bool:
        """Whether `host` matches one of the rule's host patterns."""
        return _matches(self._host_re, host)

    def matches(self, host: str, path: str) -> bool:
        """Whether the rule applies to this host and URL path."""
        return self.matches_host(host) and self._path_re.match(path or "/") is not None


class EndpointFilter(_Strict):
    """Ordered allow/deny rules; the first rule matching host and path decides, else `default`."""

    rules: list[EndpointRule] = Field(default_factory=list)
    default: Literal["deny", "allow"] = Field(default="deny", description="What happens when no rule matches.")

    def decide(self, host: str, path: str) -> tuple[bool, str]:
        """(allowed, why) for a host and URL path: the first matching rule decides, else `default`."""
        for i, rule in enumerate(self.rules):
            if rule.matches(host, path):
                return rule.effect == "allow", f"endpoint rule {i + 1} ({rule.effect})"
        return self.default == "allow", f"no endpoint rule matches (default {self.default})"

    def decide_host(self, host: str) -> tuple[bool, str]:
        """The decision when only the host is known: allowed if some path of it can be allowed.

        A rule covering every path decides outright; a path-specific allow means some URLs on the
        host are reachable (the full URL check narrows it); a path-specific deny is skipped.
        """
        for i, rule in enumerate(self.rules):
            if not rule.matches_host(host):
                continue
            if rule.all_paths or rule.effect == "allow":
                return rule.effect == "allow", f"endpoint rule {i + 1} ({rule.effect})"
        return self.default == "allow", f"no endpoint rule matches (default {self.default})"


class DlpPolicy(_Strict):
    """An environment's data-loss-prevention policy for connectors."""

    default_group: Group = Field(
        default="non_business",
        description="Group of a host no pattern matches. non_business: unknown hosts cannot join business data.",
    )
    groups: ConnectorGroups = Field(default_factory=ConnectorGroups)
    endpoints: EndpointFilter = Field(default_factory=EndpointFilter)

    @cached_property
    def _group_res(self) -> dict[str, re.Pattern[str] | None]:
        return {g: _compile(getattr(self.groups, g)) for g in ("blocked", "business", "non_business")}

    def group_of_host(self, host: str) -> Group:
        """The connector group of a host: blocked, business or non_business, else `default_group`."""
        res = self._group_res
        if _matches(res["blocked"], host):
            return "blocked"
        if _matches(res["business"], host):
            return "business"
        if _matches(res["non_business"], host):
            return "non_business"
        return self.default_group

    def groups_of(self, connector: HttpConnector) -> dict[str, Group]:
        """Each host the connector may reach (its `hosts` and its base_url's host) and its group."""
        hosts = [h.lower() for h in connector.hosts]
        base_host = urlsplit(expand_env(connector.base_url)).hostname
        if base_host and base_host.lower() not in hosts:
            hosts.append(base_host.lower())
        return {h: self.group_of_host(h) for h in hosts}


# ---- exceptions ---------------------------------------------------------------------------------


class DlpExceptionError(InvalidError):
    """An exception that cannot be granted or found; the message says what would be valid."""


class DlpException(BaseModel):
    """A time-limited lift of one DLP rule for one connector in one environment."""

    model_config = ConfigDict(frozen=True)

    id: str
    environment: str
    agent: str | None = None
    connector: str
    rule: ExceptionRule
    host: str | None = None
    reason: str
    approver_id: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: DlpExceptionRow) -> DlpException:
        """The exception stored in a database row."""
        return cls(
            id=row.id,
            environment=row.environment,
            agent=row.agent,
            connector=row.connector,
            rule=row.rule,
            host=row.host,
            reason=row.reason,
            approver_id=row.approver_id,
            created_by=row.created_by,
            created_at=_aware(row.created_at),
            expires_at=_aware(row.expires_at),
            revoked_at=_aware(row.revoked_at) if row.revoked_at else None,
        )

    @property
    def violation_rule(self) -> str:
        """The violation rule id this exception lifts."""
        return RULE_IDS[self.rule]

    def expired(self, now: dt.datetime) -> bool:
        """Whether the exception has run out at `now`."""
        return _aware(now) >= self.expires_at

    def active(self, now: dt.datetime) -> bool:
        """Whether the exception lifts its rule at `now`: granted, not yet expired and not revoked."""
        now = _aware(now)
        revoked = self.revoked_at is not None and self.revoked_at <= now
        return not revoked and self.created_at <= now < self.expires_at

    def covers(self, environment: str, agent: str | None, connector: str, rule: str, host: str | None = None) -> bool:
        """Whether this exception is about that check (ignoring time)."""
        if self.environment != environment or self.connector != connector or self.violation_rule != rule:
            return False
        if self.agent is not None and agent is not None and self.agent != agent:
            return False
        return self.host is None or host is None or self.host.lower() == host.lower()


def _normalise_rule(rule: str) -> ExceptionRule:
    for short, full in RULE_IDS.items():
        if rule in (short, full):
            return short  # type: ignore[return-value]
    raise DlpExceptionError(
        f"unknown DLP rule '{rule}': use one of {', '.join(RULE_IDS)} (or {', '.join(RULE_IDS.values())})"
    )


def grant_exception(
    db: Database,
    *,
    environment: str,
    connector: str,
    rule: str,
    reason: str,
    approver_id: str,
    created_by: str,
    expires_at: dt.datetime,
    agent: str | None = None,
    host: str | None = None,
    now: dt.datetime | None = None,
    known_environments: Iterable[str] | None = None,
) -> DlpException:
    """Validate and store an exception; raises DlpExceptionError naming what is wrong."""
    now = _aware(now or utcnow())
    expires_at = _aware(expires_at)
    short = _normalise_rule(rule)
    problems: list[str] = []
    known = list(known_environments) if known_environments is not None else None
    if known is not None and environment not in known:
        problems.append(f"unknown environment '{environment}' (known: {', '.join(known)})")
    if not connector.strip():
        problems.append("connector: give the connector name the exception is for")
    if not reason.strip():
        problems.append("reason: an exception must say why it is needed")
    if not approver_id.strip():
        problems.append("approver: an exception must name the person who approved it")
    if short == "endpoint" and not host:
        problems.append("host: an endpoint exception must name the one host it allows")
    if host is not None:
        try:
            _check_host_patterns([host])
        except ValueError as exc:
            problems.append(f"host: {exc}")
        if host and any(c in host for c in "*?[]"):
            problems.append(f"host: an exception names one host, not a pattern ('{host}')")
    if expires_at <= now:
        problems.append(f"expires_at {expires_at.isoformat()} is not in the future")
    elif expires_at - now > dt.timedelta(days=MAX_EXCEPTION_DAYS):
        problems.append(
            f"expires_at {expires_at.isoformat()} is more than {MAX_EXCEPTION_DAYS} days after "
            f"{now.isoformat()}: exceptions last at most {MAX_EXCEPTION_DAYS} days"
        )
    if problems:
        raise DlpExceptionError("cannot grant DLP exception: " + "; ".join(problems))
    row = DlpExceptionRow(
        id=_random.token_hex(16),
        environment=environment,
        agent=agent,
        connector=connector,
        rule=short,
        host=host.lower() if host else None,
        reason=reason.strip(),
        approver_id=approver_id,
        created_by=created_by,
        created_at=now,
        expires_at=expires_at,
    )
    with db.orm() as s, s.begin():
        s.add(row)
    return DlpException.from_row(row)


def list_exceptions(
    db: Database,
    environment: str | None = None,
    *,
    agent: str | None = None,
    include_inactive: bool = False,
    now: dt.datetime | None = None,
) -> list[DlpException]:
    """Exceptions (of one environment, or all), newest first; by default only those in force now."""
    now = _aware(now or utcnow())
    with db.orm() as s:
        q = select(DlpExceptionRow).order_by(DlpExceptionRow.created_at.desc(), DlpExceptionRow.id)
        if environment is not None:
            q = q.where(DlpExceptionRow.environment == environment)
        rows = [DlpException.from_row(r) for r in s.scalars(q)]
    if agent is not None:
        rows = [r for r in rows if r.agent in (None, agent)]
    return rows if include_inactive else [r for r in rows if r.active(now)]


def active_exceptions(
    db: Database,
    environment: str,
    *,
    agent: str | None = None,
    now: dt.datetime | None = None,
) -> list[DlpException]:
    """The exceptions a check of `environment` should be given: unrevoked ones in force now, plus
    those that expired in the last 30 days. An expired exception lifts nothing (every check
    compares its expiry with its own clock); it is passed along so the check can warn about it.
    """
    now = _aware(now or utcnow())
    horizon = now - dt.timedelta(days=MAX_EXCEPTION_DAYS)
    return [
        e
        for e in list_exceptions(db, environment, agent=agent, include_inactive=True, now=now)
        if (e.revoked_at is None or e.revoked_at > now) and e.created_at <= now and e.expires_at > horizon
    ]


def revoke_exception(db: Database, exception_id: str, *, now: dt.datetime | None = None) -> DlpException:
    """Mark an exception revoked from `now` on (the row stays, for the record)."""
    now = _aware(now or utcnow())
    with db.orm() as s, s.begin():
        row = s.get(DlpExceptionRow, exception_id)
        if row is None:
            raise DlpExceptionError(f"no DLP exception with id '{exception_id}'")
        if row.revoked_at is None:
            row.revoked_at = now
        s.flush()
        return DlpException.from_row(row)


# ---- checking a bundle --------------------------------------------------------------------------


class DlpViolation(BaseModel):
    """One DLP rule a connector breaks, where it is defined, and the exception that lifted it (if any)."""

    rule: str
    connector: str
    message: str
    host: str | None = None
    location: str | None = Field(default=None, description="path:line of the connector in agent.yaml")
    exception_id: str | None = Field(default=None, description="Set when an exception lifted it.")

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.rule}: {self.message}"


class DlpReport(BaseModel):
    """The DLP check of one agent in one environment: violations, exempted violations and warnings."""

    environment: str
    agent: str
    violations: list[DlpViolation] = Field(default_factory=list)
    exempted: list[DlpViolation] = Field(default_factory=list, description="Violations lifted by an exception.")
    warnings: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing is in violation (exempted violations do not count)."""
        return not self.violations


def _connector_lines(source: BundleSource) -> dict[str, str]:
    """path:line of each connector in agent.yaml, so a violation points at its definition."""
    display = str(Path(source.root) / "agent.yaml")
    text = source.files.get("agent.yaml")
    out: dict[str, str] = {}
    if text is None:
        return out
    try:
        data = YAML(typ="rt").load(text)
    except Exception:  # the loader already accepted this file; a location is only a courtesy
        return out
    connectors = data.get("connectors") if isinstance(data, CommentedMap) else None
    if isinstance(connectors, CommentedMap):
        for name in connectors:
            out[str(name)] = f"{display}:{connectors.lc.key(name)[0] + 1}"
    return out


def _probe_path(template: str) -> str:
    # placeholders are filled per call; any value stands in for them at build time
    return PLACEHOLDER_RE.sub("_", template) or "/"


class _Lifter:
    """Find the exception that lifts a violation, and warn about the expired ones that no longer do."""

    def __init__(self, env: str, agent: str | None, exceptions: Sequence[DlpException], now: dt.datetime):
        self.env, self.agent, self.now = env, agent, now
        self.exceptions = [
            e for e in exceptions if e.environment == env and (e.agent is None or agent is None or e.agent == agent)
        ]
        self.warned: set[str] = set()
        self.warnings: list[str] = []

    def find(self, connector: str, rule: str, host: str | None = None) -> DlpException | None:
        for e in self.exceptions:
            if not e.covers(self.env, self.agent, connector, rule, host):
                continue
            if e.active(self.now):
                return e
            if e.expired(self.now) and e.revoked_at is None and e.id not in self.warned:
                self.warned.add(e.id)
                self.warnings.append(
                    f"DLP exception {e.id} ({e.rule} for connector '{e.connector}') expired at "
                    f"{e.expires_at.isoformat()} and no longer applies"
                )
        return None


def check_bundle(
    source: BundleSource,
    env: EnvironmentConfig,
    exceptions: Sequence[DlpException] = (),
    now: dt.datetime | None = None,
) -> DlpReport:
    """Check a loaded bundle's connectors against an environment's DLP policy."""
    now = _aware(now or utcnow())
    policy = env.dlp
    agent = source.agent
    lifter = _Lifter(env.name, agent.name, exceptions, now)
    report = DlpReport(environment=env.name, agent=agent.name)
    located: dict[str, str] | None = None

    def where(connector: str) -> str | None:
        # agent.yaml is parsed again only when there is a violation to place
        nonlocal located
        if located is None:
            located = _connector_lines(source)
        return located.get(connector)

    def add(v: DlpViolation, host: str | None = None) -> None:
        lifted = lifter.find(v.connector, v.rule, host)
        if lifted is not None:
            report.exempted.append(v.model_copy(update={"exception_id": lifted.id}))
        else:
            report.violations.append(v)

    business: list[str] = []
    non_business: list[str] = []
    for name in sorted(agent.connectors):
        connector = agent.connectors[name]
        groups = policy.groups_of(connector)
        for host, group in groups.items():
            if group == "blocked":
                add(
                    DlpViolation(
                        rule=RULE_BLOCKED,
                        connector=name,
                        host=host,
                        location=where(name),
                        message=f"connector '{name}' reaches host '{host}', which the {env.name} policy blocks",
                    ),
                    host,
                )
        kinds = set(groups.values())
        if "business" in kinds:
            business.append(name)
        if "non_business" in kinds:
            non_business.append(name)
        if {"business", "non_business"} <= kinds:
            b = sorted(h for h, g in groups.items() if g == "business")
            n = sorted(h for h, g in groups.items() if g == "non_business")
            add(
                DlpViolation(
                    rule=RULE_MIXED,
                    connector=name,
                    location=where(name),
                    message=f"connector '{name}' reaches business hosts {b} and non-business hosts {n}",
                )
            )
        for host, group in groups.items():
            if group == "blocked":
                continue  # already a violation of its own
            paths = sorted({_probe_path(a.path) for a in agent.actions.values() if a.connector == name}) or ["/"]
            denied = []
            for path in paths:
                ok, _ = policy.endpoints.decide(host, path)
                if not ok:
                    denied.append(path)
            if denied:
                add(
                    DlpViolation(
                        rule=RULE_ENDPOINT,
                        connector=name,
                        host=host,
                        location=where(name),
                        message=f"the {env.name} endpoint filter does not allow host '{host}' for path(s) "
                        + ", ".join(denied),
                    ),
                    host,
                )

    # mixing: an exception on either side takes that connector out of the comparison
    pure_non_business = [n for n in non_business if n not in business]  # spanning ones were reported above
    mixing_b = [c for c in business if lifter.find(c, RULE_MIXED) is None] if pure_non_business else []
    for name in pure_non_business:
        others = [c for c in mixing_b if c != name]
        if others:
            add(
                DlpViolation(
                    rule=RULE_MIXED,
                    connector=name,
                    location=where(name),
                    message=f"non-business connector '{name}' cannot be combined with business connector(s) "
                    f"{', '.join(others)} in {env.name}",
                )
            )
    report.warnings.extend(lifter.warnings)
    return report


# ---- on every live call ---------------------------------------------------------------------------


class DlpHostPolicy(HostPolicy):
    """The runtime's host check for one environment: declared host AND the environment's DLP policy.

    Built from the environment's policy, not from the bundle, so a stored bundle that was altered
    cannot widen what it may reach. Exceptions come from `exceptions` or, when `exception_source`
    is given (e.g. the database), are re-read from it at most every `refresh_s` seconds, so a
    revocation takes effect without a restart. Expiry is checked on every call against `clock()`.
    When the agent's `connectors` are given, a non-business connector of an agent that also uses
    business connectors is refused too.
    """

    def __init__(
        self,
        environment: str,
        policy: DlpPolicy,
        exceptions: Sequence[DlpException] = (),
        *,
        agent: str | None = None,
        connectors: Mapping[str, HttpConnector] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        exception_source: Callable[[], Sequence[DlpException]] | None = None,
        refresh_s: float = 10.0,
    ):
        self.environment = environment
        self.policy = policy
        self.agent = agent
        self.clock = clock
        self._exceptions = list(exceptions)
        self._source = exception_source
        self._refresh_s = refresh_s
        self._loaded_at = float("-inf")
        # which connectors would mix business with non-business data, from the bundle's own list
        self._business: set[str] = set()
        self._non_business: set[str] = set()
        for name, conn in (connectors or {}).items():
            kinds = set(policy.groups_of(conn).values())
            if "business" in kinds:
                self._business.add(name)
            if "non_business" in kinds:
                self._non_business.add(name)

    @classmethod
    def for_environment(
        cls,
        env: EnvironmentConfig,
        exceptions: Sequence[DlpException] = (),
        *,
        agent: str | None = None,
        connectors: Mapping[str, HttpConnector] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> DlpHostPolicy:
        """The host policy of an environment's DLP settings and the exceptions granted in it."""
        return cls(env.name, env.dlp, exceptions, agent=agent, connectors=connectors, clock=clock)

    def refresh(self, exceptions: Sequence[DlpException] | None = None) -> None:
        """Replace the exceptions (or re-read them from the source now)."""
        if exceptions is not None:
            self._exceptions = list(exceptions)
        elif self._source is not None:
            self._exceptions = list(self._source())
        self._loaded_at = time.monotonic()

    def _current(self) -> list[DlpException]:
        if self._source is not None and time.monotonic() - self._loaded_at >= self._refresh_s:
            self.refresh()
        return self._exceptions

    def _lifted(self, connector: str, rule: str, host: str | None) -> bool:
        now = _aware(self.clock())
        return any(
            e.covers(self.environment, self.agent, connector, rule, host) and e.active(now) for e in self._current()
        )

    def _mixing(self, name: str) -> str | None:
        if name not in self._non_business or self._lifted(name, RULE_MIXED, None):
            return None
        others = [c for c in self._business if c != name and not self._lifted(c, RULE_MIXED, None)]
        if others or name in self._business:
            return (
                f"{RULE_MIXED}: connector '{name}' is non-business and this agent also uses business "
                f"connectors in {self.environment}"
            )
        return None

    def _check(self, name: str, connector: HttpConnector, host: str, path: str | None) -> tuple[bool, str]:
        ok, why = super().allowed(name, connector, host)
        if not ok:
            return False, why
        host = host.lower()
        if self.policy.group_of_host(host) == "blocked" and not self._lifted(name, RULE_BLOCKED, host):
            return False, f"{RULE_BLOCKED}: host '{host}' is blocked in {self.environment}"
        if path is None:
            allowed, rule = self.policy.endpoints.decide_host(host)
        else:
            allowed, rule = self.policy.endpoints.decide(host, path)
        if not allowed and not self._lifted(name, RULE_ENDPOINT, host):
            target = host if path is None else f"{host}{path}"
            return False, f"{RULE_ENDPOINT}: '{target}' is not allowed in {self.environment} ({rule})"
        mixed = self._mixing(name)
        if mixed:
            return False, mixed
        return True, f"allowed in {self.environment} ({rule})"

    def allowed(self, connector_name: str, connector: HttpConnector, host: str) -> tuple[bool, str]:
        """(allowed, why) for a connector reaching `host` when the URL path is not known."""
        return self._check(connector_name, connector, host, None)

    def allowed_url(self, connector_name: str, connector: HttpConnector, url: str) -> tuple[bool, str]:
        """The full check, URL path patterns included (for callers that know the URL)."""
        parts = urlsplit(url)
        return self._check(connector_name, connector, parts.hostname or "", parts.path or "/")


def host_policy_for(
    db: Database,
    env: EnvironmentConfig,
    *,
    agent: str | None = None,
    connectors: Mapping[str, HttpConnector] | None = None,
    now: Callable[[], dt.datetime] = utcnow,
    refresh_s: float = 10.0,
) -> DlpHostPolicy:
    """The host policy a runtime serving `env` uses: its DLP policy plus the exceptions in the database."""

    def source() -> list[DlpException]:
        return active_exceptions(db, env.name, agent=agent, now=now())

    return DlpHostPolicy(
        env.name, env.dlp, agent=agent, connectors=connectors, clock=now, exception_source=source, refresh_s=refresh_s
    )
