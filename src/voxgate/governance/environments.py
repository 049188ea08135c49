"""Environments (dev → test → prod by default) from `environments.yaml`: tier, change windows, secret scope, settings, DLP.

The file lives in the policy directory next to the Cedar policies. The packaged default is
`governance/policies/environments.yaml`; a policy directory given by the operator that holds its
own `environments.yaml` replaces it entirely (no merging: what is deployed is what is read).
The order of the mapping is the promotion order. Errors name `file:line:col`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from voxgate.bundle.loader import Problem, parse_document, validate_document
from voxgate.errors import InvalidError, NotFoundError
from voxgate.governance.dlp import DlpPolicy
from voxgate.governance.secrets import SecretError

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent / "policies"
ENVIRONMENTS_FILE = "environments.yaml"

Tier = Literal["development", "test", "production"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ENV_NAME_RE = r"^[a-z][a-z0-9_\-]{0,39}$"  # the store keeps environment names in 40 characters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChangeWindow(_Strict):
    """When changes may go live: on `days`, from `start` to `end` local time in `timezone`.

    An `end` earlier than `start` crosses midnight (22:00–02:00 on fri covers Friday night into
    Saturday morning). Days may be written as ranges: `mon-fri`.
    """

    days: list[Weekday] = Field(min_length=1)
    start: dt.time
    end: dt.time
    timezone: str = "UTC"

    @field_validator("days", mode="before")
    @classmethod
    def _expand_ranges(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value
        out: list[object] = []
        for item in value:
            if isinstance(item, str) and "-" in item:
                first, _, last = item.lower().partition("-")
                if first not in WEEKDAYS or last not in WEEKDAYS:
                    raise ValueError(f"'{item}' is not a day range: use e.g. mon-fri (days: {', '.join(WEEKDAYS)})")
                i, j = WEEKDAYS.index(first), WEEKDAYS.index(last)
                out.extend(WEEKDAYS[(i + k) % 7] for k in range((j - i) % 7 + 1))
            else:
                out.append(item.lower() if isinstance(item, str) else item)
        return out

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}': use an IANA name such as Europe/London or UTC") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ChangeWindow:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty (omit change_windows for always open)")
        return self

    def contains(self, now: dt.datetime) -> bool:
        """Whether the instant `now` falls inside the window, in the window's time zone."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)  # a naive instant is taken as UTC
        local = now.astimezone(ZoneInfo(self.timezone))
        day = WEEKDAYS[local.weekday()]
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
        return (day in self.days and t >= self.start) or (yesterday in self.days and t < self.end)


class SecretScope(_Strict):
    """Points an environment's secret references at that environment's own secrets.

    A bundle is promoted unchanged (same digest) from dev to prod, so its references cannot
    name per-environment secrets. The scope rewrites them where they are resolved instead:
    `env:NAME` reads `{env_prefix}NAME`, `vault:PATH#KEY` reads `{vault_prefix}PATH#KEY`, and a
    `file:` path is read relative to (and must stay inside) `file_root`. Empty values change nothing.
    """

    env_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_]*$")
    vault_prefix: str = Field(default="", description="Prepended to vault paths, e.g. 'secret/prod/'.")
    file_root: str | None = None

    @field_validator("vault_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if value and (value.startswith("/") or not value.endswith("/")):
            raise ValueError("vault_prefix must be relative and end with '/', e.g. 'secret/prod/'")
        return value

    def apply(self, ref: str) -> str:
        """The reference this environment actually resolves for `ref`."""
        scheme, _, rest = ref.partition(":")
        if scheme == "env":
            return f"env:{self.env_prefix}{rest}"
        if scheme == "vault":
            return f"vault:{self.vault_prefix}{rest}"
        if scheme == "file" and self.file_root:
            root = Path(self.file_root).expanduser().resolve()
            path = (root / Path(rest).expanduser()).resolve()
            if not path.is_relative_to(root):
                raise SecretError(f"secret {ref}: file is outside this environment's secret root {root}")
            return f"file:{path}"
        return ref


class RecordingSettings(_Strict):
    """Call audio recording: off unless an environment turns it on (see compliance/recording.py)."""

    enabled: bool = Field(default=False, description="Record both sides of every call, encrypted per caller.")
    master_key: str | None = Field(
        default=None,
        description="Secret reference (env:, file:, vault:) to the 32-byte master key in base64 or "
        "hex; default: a key generated into <data_dir>/keys/recording-master.key.",
    )

    @field_validator("master_key")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("env:", "file:", "vault:")):
            raise ValueError(
                "the recording master key must be a secret reference (env:, file: or vault:), never the key itself"
            )
        return value


class Quotas(_Strict):
    """Limits on an environment's calls; None means no limit."""

    max_concurrent_calls: int | None = Field(default=None, ge=1)
    max_calls_per_day: int | None = Field(default=None, ge=1)
    max_session_minutes: int | None = Field(default=None, ge=1)


class ChannelSecurity(_Strict):
    """Who may open a voice socket in this environment, checked at the handshake: a refused socket
    never takes a line or a not-yet-started slot."""

    anonymous_voice: bool = Field(
        default=True,
        description="Whether `/ws/voice` takes anonymous callers; false: a signed-in user (an API token as "
        "`Authorization: Bearer`, or a console session) permitted `call.start`.",
    )
    twilio_auth_token: str | None = Field(
        default=None,
        description="A secret reference (env:/file:/vault:) to the Twilio account's auth token; when set, a "
        "`/twilio` handshake needs a valid `X-Twilio-Signature` (HMAC-SHA1 of the stream URL).",
    )
    twilio_public_url: str | None = Field(
        default=None,
        pattern=r"^wss://[^/?#\s]+$",
        description="The `wss://host` Twilio connects to, when a proxy in front of the worker changes the host "
        "(default: wss:// and the request's Host header).",
    )


GateName = Literal["conversations", "escalation", "red_team", "load", "data_access", "rollback"]


class GateSpec(_Strict):
    """A pre-production gate a digest must have passed before it may enter the environment, and its thresholds."""

    name: GateName
    required: bool = True
    min_pass_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="conversations, red_team, escalation")
    voice: bool = Field(default=False, description="conversations: also run the suite with synthesised speech")
    calls: int = Field(default=4, ge=1, le=200, description="load: concurrent simulated voice calls")
    duration_s: float = Field(default=30.0, gt=0, le=3600, description="load: how long the calls keep coming")
    p95_ms: float = Field(default=1500.0, gt=0, description="load: voice-to-voice p95 at the caller, at most")
    max_failed_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="load: failed calls / calls, at most")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


AlertMetric = Literal[
    "escalation_rate",
    "abandon_rate",
    "completion_rate",
    "no_match_rate",
    "voice_p95_ms",
    "connector_failure_rate",
    "sessions",
    "verification_locked",
]


class AlertRule(_Strict):
    """A threshold on a metric over a sliding window, e.g. escalation rate above 30 % over 15 minutes
    with at least 20 sessions. `agent` limits it to one agent (default: each agent separately)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    metric: AlertMetric
    above: float | None = None
    below: float | None = None
    window: str = Field(default="15m", pattern=r"^\d+[mhd]$")
    min_sessions: int = Field(default=20, ge=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    agent: str | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> AlertRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of `above` or `below`")
        return self


class ChecklistSettings(_Strict):
    """Which readiness items block a publish into the environment (default: every one of the 18)."""

    required: list[str] | Literal["all"] = "all"


class RetentionSettings(_Strict):
    """Days each data class is kept in an environment; a class left out is kept `retention_days`.

    Deleting a session deletes everything recorded under it, so a class kept longer than
    `sessions` still goes when its session does.
    """

    transcripts: int | None = Field(default=None, ge=1, le=3650, description="Turns and voice-turn timings.")
    context_packets: int | None = Field(default=None, ge=1, le=3650, description="Escalation handoffs and packets.")
    sessions: int | None = Field(default=None, ge=1, le=3650, description="Session records and all they hold.")
    security_events: int | None = Field(default=None, ge=1, le=3650)
    recordings: int | None = Field(default=None, ge=1, le=3650)
    analytics: int | None = Field(default=None, ge=1, le=3650, description="Analytics aggregates.")


class EnvironmentSettings(_Strict):
    """Settings later parts of voxgate read per environment."""

    retention_days: int = Field(default=30, ge=1, le=3650, description="How long sessions and transcripts are kept.")
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="Per data class overrides of retention_days (days)."
    )
    gates: list[GateSpec] = Field(
        default_factory=list,
        description="Gates a digest must have passed (stored evidence) before it enters this environment.",
    )
    checklist: ChecklistSettings = Field(default_factory=ChecklistSettings)
    alerts: list[AlertRule] = Field(
        default_factory=list, description="Thresholds evaluated continuously by the server."
    )
    webhooks: list[str] = Field(
        default_factory=list,
        description="Where alerts are POSTed (URLs, or env:/file:/vault: references to URLs that carry tokens).",
    )
    incident_procedure: str | None = Field(
        default=None, description="Where the incident procedure is written down (a URL or document path)."
    )
    requires_approval: bool | None = Field(
        default=None, description="Publishing needs an approver who is not the author (default: production tier)."
    )
    quotas: Quotas = Field(default_factory=Quotas)
    channels: ChannelSecurity = Field(default_factory=ChannelSecurity)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)


class EnvironmentConfig(_Strict):
    """One environment of environments.yaml: its tier, change windows, secrets, DLP and settings."""

    name: str = Field(pattern=ENV_NAME_RE, description="The environment's key in environments.yaml.")
    tier: Tier
    description: str = ""
    change_windows: list[ChangeWindow] = Field(
        default_factory=list, description="When publishes may happen; empty means always."
    )
    secret_scope: SecretScope = Field(default_factory=SecretScope)
    settings: EnvironmentSettings = Field(default_factory=EnvironmentSettings)
    dlp: DlpPolicy = Field(default_factory=DlpPolicy)

    @property
    def is_production(self) -> bool:
        """Whether the environment's tier is production."""
        return self.tier == "production"

    @property
    def requires_approval(self) -> bool:
        """Whether a publish here needs an approver: the setting if given, else only in production."""
        flag = self.settings.requires_approval
        return self.is_production if flag is None else flag

    def window_open(self, now: dt.datetime | None = None) -> bool:
        """Whether a change window is open at `now` (default: the current time); no windows means always."""
        if not self.change_windows:
            return True
        now = now or dt.datetime.now(dt.UTC)
        return any(w.contains(now) for w in self.change_windows)


class UnknownEnvironmentError(NotFoundError):
    """No environment of that name; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown environment '{name}' (known: {', '.join(known)})")
        self.name = name


class GovernanceConfig(_Strict):
    """Every environment by name, in promotion order (the order of environments.yaml)."""

    version: Literal[1] = 1
    environments: dict[str, EnvironmentConfig] = Field(min_length=1)
    _source: str = PrivateAttr(default="<built-in>")

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        # the key is the name: `environments: {dev: {tier: development}}`
        if isinstance(data, dict) and isinstance(data.get("environments"), dict):
            envs = {}
            for key, value in data["environments"].items():
                if isinstance(value, dict):
                    if "name" in value and value["name"] != key:
                        raise ValueError(
                            f"environment '{key}' has name '{value['name']}': leave name out, the key is the name"
                        )
                    value = {**value, "name": key}
                envs[key] = value
            data = {**data, "environments": envs}
        return data

    @property
    def source(self) -> str:
        """The file this configuration was read from."""
        return self._source

    def names(self) -> list[str]:
        """The environment names, in promotion order."""
        return list(self.environments)

    def get(self, name: str) -> EnvironmentConfig:
        """The environment called `name`; UnknownEnvironmentError (a LookupError) lists the known ones."""
        env = self.environments.get(name)
        if env is None:
            raise UnknownEnvironmentError(name, self.names())
        return env

    def __contains__(self, name: object) -> bool:
        return name in self.environments

    def next_environment(self, name: str) -> str | None:
        """Where a bundle active in `name` is promoted to; None for the last one."""
        names = self.names()
        if name not in names:
            raise UnknownEnvironmentError(name, names)
        i = names.index(name)
        return names[i + 1] if i + 1 < len(names) else None

    def previous_environment(self, name: str) -> str | None:
        """The environment before `name` in promotion order (None for the first), where promotion takes from."""
        names = self.names()
        if name not in names:
            raise UnknownEnvironmentError(name, names)
        i = names.index(name)
        return names[i - 1] if i > 0 else None


class GovernanceConfigError(InvalidError):
    """Raised with every problem in environments.yaml; str() lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def environments_path(policy_dir: str | Path | None = None) -> Path:
    """The environments.yaml in force: the policy directory's own, or the packaged default."""
    if policy_dir is not None:
        candidate = Path(policy_dir) / ENVIRONMENTS_FILE
        if candidate.is_file():
            return candidate
        if not Path(policy_dir).is_dir():
            raise GovernanceConfigError([Problem(str(policy_dir), 1, 1, "policy directory does not exist")])
    return DEFAULT_POLICY_DIR / ENVIRONMENTS_FILE


def load_environments_file(path: str | Path) -> GovernanceConfig:
    """Parse and validate one environments.yaml; raise GovernanceConfigError naming file:line:col."""
    path = Path(path)
    display = os.path.relpath(path) if not path.is_absolute() else str(path)
    if not path.is_file():
        raise GovernanceConfigError([Problem(display, 1, 1, "file not found")])
    doc, problems = parse_document(path, display)
    if doc is None:
        raise GovernanceConfigError(problems)
    config, problems = validate_document(doc, GovernanceConfig)
    if config is None:
        raise GovernanceConfigError(problems)
    for name, env in config.environments.items():
        scope = env.secret_scope
        if scope.file_root and not Path(scope.file_root).expanduser().is_absolute():
            problems.append(
                doc.problem(["environments", name, "secret_scope", "file_root"], "file_root must be an absolute path")
            )
    if problems:
        raise GovernanceConfigError(problems)
    config._source = str(path)
    return config


def load_governance(policy_dir: str | Path | None = None) -> GovernanceConfig:
    """The environments of a policy directory (or the packaged default when it has none)."""
    return load_environments_file(environments_path(policy_dir))


_SECRET_SCHEME_RE = re.compile(r"^(env|file|vault):")


def scoped_secret_ref(env: EnvironmentConfig, ref: str) -> str:
    """Apply an environment's secret scope to a reference (see SecretScope)."""
    if not _SECRET_SCHEME_RE.match(ref):
        raise SecretError(f"secret reference '{ref}' must start with env:, file: or vault:")
    return env.secret_scope.apply(ref)
