"""Settings from VOXGATE_* environment variables and an optional voxgate.toml, validated once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from voxgate.errors import InvalidError


class ConfigError(InvalidError):
    """Settings that cannot be used; the message says which one and why."""


def _config_file() -> Path | None:
    explicit = os.environ.get("VOXGATE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"VOXGATE_CONFIG points at {path}, which is not a file")
        return path
    local = Path("voxgate.toml")
    return local if local.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXGATE_", extra="forbid")

    data_dir: Path = Field(default=Path("var"), description="Where the embedded database and state live.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/voxgate.db"
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis (or Valkey) URL, e.g. redis://:password@redis:6379/0: workers share live state "
        "(calls admitted, chat sessions, the desk, throttles, leases) through it and run as a cluster; "
        "unset: one process holds it all. May carry a password: never logged.",
    )
    advertise_url: str | None = Field(
        default=None,
        description="How other workers of the cluster reach this one (e.g. http://10.0.0.5:8600), for "
        "the audio of a handoff between workers; default http://<host>:<port>.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8600, ge=0, le=65535)
    agents: list[Path] = Field(default_factory=list, description="Agent directories to serve.")
    environment: str = Field(default="dev", pattern=r"^[a-z][a-z0-9_-]*$")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    voice_capacity: int = Field(default=20, ge=1, le=1000, description="Concurrent calls this worker accepts.")
    voice_start_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds a voice socket has to send a valid `start` after it opens; "
        "one that does not is closed with 1008. A call takes a line (counts against voice_capacity) only at its start.",
    )
    voice_pending_max: int = Field(
        default=50,
        ge=1,
        le=100000,
        description="Voice sockets this worker holds open before their `start`; more are closed at once with 1008.",
    )
    voice_pending_per_address: int = Field(
        default=10,
        ge=1,
        le=100000,
        description="Voice sockets one client address may hold open before their "
        "`start`; more from it are closed at once with 1008 (behind a proxy every caller shares its address).",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a client has to send a request's line and headers "
        "(from when it connects, or from the first byte of a later request on a kept-alive connection); "
        "then the connection is closed with 408.",
    )
    http_keep_alive_s: int = Field(
        default=5, ge=1, le=300, description="Seconds an idle kept-alive HTTP connection stays open."
    )
    http_connection_limit: int = Field(
        default=500,
        ge=1,
        le=100000,
        description="Open connections (HTTP and WebSocket) past which this worker answers new requests with 503.",
    )
    chat_sessions_per_minute: int = Field(
        default=30,
        ge=0,
        le=100000,
        description="New chat sessions (HTTP and WebSocket) one client address may "
        "start per minute; more are refused (HTTP 429 with Retry-After, WebSocket close 1008). 0: no limit. "
        "Behind a proxy every caller shares its address.",
    )
    calls_per_number_per_minute: int = Field(
        default=10,
        ge=0,
        le=100000,
        description="Calls one calling number (the `from` a telephony `start` "
        "carries, when it does) may start per minute; more are closed at their start (1008). 0: no limit.",
    )
    asr_model: str = Field(default="tiny.en", description="tiny.en, base.en or a CTranslate2 model directory.")
    speech_workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Speech threads that take any job; one more takes only what a caller waits on (default: cores - 1, at least 1).",
    )
    voice_preload: bool = Field(default=False, description="Load speech models at start-up, not on the first call.")
    piper: bool = Field(
        default=True,
        description="Speak with Piper where an agent asks for it and the (GPL-3.0) extra is installed; false: "
        "this worker speaks with Pico as if the extra were absent (no GPL code loaded; about a tenth of the CPU).",
    )
    speech_cache_dir: Path | None = Field(
        default=None,
        description="Where rendered fixed prompts are kept, so a restarted worker (or another sharing the "
        "folder) need not synthesise them again; default <data_dir>/speech-cache. Holds no caller data.",
    )
    embedding_cache_dir: Path | None = Field(
        default=None,
        description="Where the sentence vectors of agents' intent examples are kept, so a restarted worker "
        "(or another sharing the folder) need not compute them again; default <data_dir>/embedding-cache. "
        "Holds no caller data.",
    )
    retention_interval_s: float = Field(
        default=3600.0, gt=0, le=86400, description="How often the retention purge runs in the server."
    )
    alert_interval_s: float = Field(default=30.0, gt=0, le=3600, description="How often alert rules are evaluated.")
    worker_heartbeat_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How often this worker records that it is alive (and repairs "
        "what workers that are gone left open).",
    )
    worker_liveness_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="A worker silent this long counts as gone: its open sessions "
        "are closed (`worker_lost`) and its waiting handoffs fail. Keep it several heartbeats long "
        "(the defaults close a dead worker's calls within 25 s).",
    )
    session_idle_timeout_s: float = Field(
        default=900.0,
        gt=0,
        le=86400,
        description="A conversation with no turn for this long is closed "
        "(`idle_timeout`); an HTTP chat's handoff nobody could take fails this long after it was queued.",
    )
    drain_grace_s: float = Field(
        default=600.0,
        ge=0,
        le=3600,
        description="On SIGTERM a worker stops taking new conversations and waits up to this long "
        "for its calls in progress to end before it shuts down (0: it shuts down at once).",
    )
    otel_exporter: Literal["none", "otlp", "console"] = Field(
        default="none", description="Where OpenTelemetry traces go: none (off), otlp (OTLP/HTTP) or console."
    )
    otel_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces (default: the "
        "exporter's, which honours OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).",
    )
    secrets_dir: Path | None = Field(
        default=None,
        description="Where `env:NAME` secret references are read from (a file NAME) when the "
        "environment variable NAME is not set, as Docker and Kubernetes mount secrets; default <data_dir>/secrets.",
    )
    policy_dir: Path | None = Field(
        default=None, description="Governance policy directory (environments.yaml, *.cedar); default: packaged."
    )
    environment_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Base URL of the worker serving each environment, e.g. "
        '{"prod": "https://voice.example.com"}: the console\'s phone links to them.',
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="The largest request body a route accepts "
        "(bundle upload has its own limit, from its archive limit); a larger one is answered 413 unread.",
    )
    anonymous_denials_per_minute: int = Field(
        default=120,
        ge=1,
        le=1000000,
        description="Refused anonymous requests one client address may make in a "
        "minute; past that its refusals are answered 429 until the minute ends (behind a proxy every caller "
        "shares its address).",
    )
    login_free_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Failed sign-ins per username and per client address before each "
        "further attempt waits (login_backoff_s, doubling).",
    )
    login_backoff_s: float = Field(
        default=1.0, gt=0, le=3600, description="The first wait after login_free_failures failed sign-ins."
    )
    login_lockout_after: int = Field(
        default=10,
        ge=2,
        le=10000,
        description="Failed sign-ins per username or client address that lock it (more than login_free_failures).",
    )
    login_lockout_s: float = Field(
        default=900.0,
        gt=0,
        le=86400,
        description="How long a lock lasts; failures are forgotten this long after the last.",
    )

    @field_validator("worker_liveness_timeout_s")
    @classmethod
    def _several_heartbeats(cls, value: float, info: Any) -> float:  # a pydantic ValidationInfo
        beat = info.data.get("worker_heartbeat_s")
        if beat is not None and value < 2 * beat:
            raise ValueError(
                f"must be at least twice worker_heartbeat_s ({beat} s), or a worker that is only slow counts as gone"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql:// (PostgreSQL uses the psycopg driver)")
        return value

    @field_validator("login_lockout_after")
    @classmethod
    def _lock_after_free(cls, value: int, info: ValidationInfo) -> int:
        free = info.data.get("login_free_failures")
        if free is not None and value <= free:
            raise ValueError(f"must be more than login_free_failures ({free})")
        return value

    @field_validator("environment_urls")
    @classmethod
    def _http_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for env, url in value.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{env}: {url!r} is not an http:// or https:// URL")
        return {env: url.rstrip("/") for env, url in value.items()}

    @property
    def db_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.data_dir / 'voxgate.db').as_posix()}"

    @property
    def secrets_path(self) -> Path:
        return self.secrets_dir if self.secrets_dir is not None else self.data_dir / "secrets"

    @property
    def speech_cache_path(self) -> Path:
        return self.speech_cache_dir if self.speech_cache_dir is not None else self.data_dir / "speech-cache"

    @property
    def embedding_cache_path(self) -> Path:
        return self.embedding_cache_dir if self.embedding_cache_dir is not None else self.data_dir / "embedding-cache"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Load settings or raise ConfigError naming each bad field and where it came from."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            env = "VOXGATE_" + field.upper()
            lines.append(f"setting '{field}' (env {env} or voxgate.toml): {err['msg']}")
        raise ConfigError("\n".join(lines)) from None
    except Exception as exc:  # a malformed TOML file
        if exc.__class__.__name__ == "TOMLDecodeError":
            raise ConfigError(f"voxgate.toml: {exc}") from None
        raise
