"""Environments from environments.yaml: promotion order, errors with file:line, change windows, secret scope."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from voxgate.governance.environments import (
    ChangeWindow,
    GovernanceConfigError,
    SecretScope,
    UnknownEnvironmentError,
    load_environments_file,
    load_governance,
    scoped_secret_ref,
)
from voxgate.governance.secrets import SecretError

UTC = dt.UTC


def test_default_environments_in_promotion_order() -> None:
    config = load_governance()
    assert config.names() == ["dev", "test", "prod"]
    assert config.next_environment("dev") == "test"
    assert config.next_environment("test") == "prod"
    assert config.next_environment("prod") is None
    assert config.previous_environment("prod") == "test"
    assert config.previous_environment("dev") is None
    assert [config.get(n).tier for n in config.names()] == ["development", "test", "production"]
    assert config.get("prod").requires_approval and not config.get("dev").requires_approval
    assert config.source.endswith("governance/policies/environments.yaml")


def test_unknown_environment_lists_known_ones() -> None:
    config = load_governance()
    with pytest.raises(UnknownEnvironmentError, match=r"unknown environment 'staging' \(known: dev, test, prod\)"):
        config.get("staging")
    with pytest.raises(LookupError):
        config.next_environment("staging")


def test_policy_dir_overrides_the_default(tmp_path: Path) -> None:
    (tmp_path / "environments.yaml").write_text(
        "version: 1\n"
        "environments:\n"
        "  staging: {tier: test}\n"
        "  live:\n"
        "    tier: production\n"
        "    settings: {retention_days: 365, quotas: {max_concurrent_calls: 5}}\n",
        encoding="utf-8",
    )
    config = load_governance(tmp_path)
    assert config.names() == ["staging", "live"]
    assert config.next_environment("staging") == "live"
    live = config.get("live")
    assert live.settings.retention_days == 365 and live.settings.quotas.max_concurrent_calls == 5
    # an environment without a dlp section allows nothing: deny by default
    assert live.dlp.endpoints.decide("127.0.0.1", "/api/x") == (False, "no endpoint rule matches (default deny)")
    assert live.dlp.group_of_host("127.0.0.1") == "non_business"


def test_policy_dir_without_environments_file_uses_the_packaged_one(tmp_path: Path) -> None:
    (tmp_path / "rbac.cedar").write_text("// cedar policies live here too\n", encoding="utf-8")
    assert load_governance(tmp_path).names() == ["dev", "test", "prod"]
    with pytest.raises(GovernanceConfigError, match="policy directory does not exist"):
        load_governance(tmp_path / "missing")


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("  dev:\n    tier: developer\n", 4, "tier"),
        ("  dev:\n    tier: development\n    colour: blue\n", 5, "unknown field 'colour'"),
        (
            "  dev:\n    tier: development\n    change_windows:\n      - {days: [mon], start: '09:00', end: '17:00', timezone: Mars/Olympus}\n",
            6,
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            "  dev:\n    tier: development\n    dlp:\n      groups:\n        business: ['https://x.example/api']\n",
            7,
            "is not a host pattern",
        ),
        (
            "  dev:\n    tier: development\n    dlp:\n      endpoints:\n        rules:\n          - {effect: permit, hosts: ['*']}\n",
            8,
            "effect",
        ),
        ("  Dev:\n    tier: development\n", 3, "name"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = tmp_path / "environments.yaml"
    path.write_text("version: 1\nenvironments:\n" + body, encoding="utf-8")
    with pytest.raises(GovernanceConfigError) as err:
        load_environments_file(path)
    problems = [str(p) for p in err.value.problems]
    assert any(p.startswith(f"{path}:{line}:") and message in p for p in problems), problems


def test_invalid_yaml_and_empty_file_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "environments.yaml"
    path.write_text("environments:\n  dev: {tier: development\n", encoding="utf-8")
    with pytest.raises(GovernanceConfigError, match=rf"{path}:\d+:\d+: invalid YAML"):
        load_environments_file(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(GovernanceConfigError, match="file is empty"):
        load_environments_file(path)
    path.write_text("version: 1\nenvironments: {}\n", encoding="utf-8")
    with pytest.raises(GovernanceConfigError, match="environments"):
        load_environments_file(path)


def _london(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("Europe/London"))


def test_change_window_weekdays_in_local_time() -> None:
    w = ChangeWindow(days=["mon-fri"], start=dt.time(9), end=dt.time(17), timezone="Europe/London")
    assert w.days == ["mon", "tue", "wed", "thu", "fri"]
    assert w.contains(_london(2030, 1, 7, 10))  # a Monday
    assert not w.contains(_london(2030, 1, 7, 8, 59))
    assert not w.contains(_london(2030, 1, 7, 17))  # the end is exclusive
    assert not w.contains(_london(2030, 1, 12, 10))  # a Saturday
    # summer time: 09:30 in London is 08:30 UTC
    assert w.contains(dt.datetime(2030, 7, 1, 8, 30, tzinfo=UTC))
    assert not w.contains(dt.datetime(2030, 7, 1, 16, 30, tzinfo=UTC))


def test_change_window_across_midnight() -> None:
    w = ChangeWindow(days=["fri"], start=dt.time(22), end=dt.time(2), timezone="UTC")
    friday_night = dt.datetime(2030, 1, 11, 23, tzinfo=UTC)
    assert w.contains(friday_night)
    assert w.contains(friday_night + dt.timedelta(hours=2))  # Saturday 01:00
    assert not w.contains(friday_night + dt.timedelta(hours=4))  # Saturday 03:00
    assert not w.contains(dt.datetime(2030, 1, 10, 23, tzinfo=UTC))  # Thursday night


def test_window_open_per_environment(tmp_path: Path) -> None:
    (tmp_path / "environments.yaml").write_text(
        "environments:\n"
        "  dev: {tier: development}\n"
        "  prod:\n"
        "    tier: production\n"
        "    change_windows:\n"
        "      - {days: [tue, thu], start: '10:00', end: '12:00', timezone: America/New_York}\n",
        encoding="utf-8",
    )
    config = load_governance(tmp_path)
    tuesday_11_ny = dt.datetime(2030, 1, 8, 16, tzinfo=UTC)
    assert config.get("prod").window_open(tuesday_11_ny)
    assert not config.get("prod").window_open(tuesday_11_ny + dt.timedelta(hours=2))
    assert config.get("dev").window_open(tuesday_11_ny + dt.timedelta(hours=2))  # no windows: always open


def test_change_window_rejects_empty_and_bad_ranges() -> None:
    with pytest.raises(ValueError, match="window would be empty"):
        ChangeWindow(days=["mon"], start=dt.time(9), end=dt.time(9))
    with pytest.raises(ValueError, match="not a day range"):
        ChangeWindow(days=["mon-funday"], start=dt.time(9), end=dt.time(10))


def test_secret_scope_points_references_at_the_environments_secrets(tmp_path: Path) -> None:
    scope = SecretScope(env_prefix="PROD_", vault_prefix="secret/prod/", file_root=str(tmp_path))
    assert scope.apply("env:HARBOR_API_KEY") == "env:PROD_HARBOR_API_KEY"
    assert scope.apply("vault:harbor#api_key") == "vault:secret/prod/harbor#api_key"
    assert scope.apply("file:harbor.key") == f"file:{tmp_path.resolve() / 'harbor.key'}"
    with pytest.raises(SecretError, match="outside this environment's secret root") as err:
        scope.apply("file:../../etc/passwd")
    assert "passwd" in str(err.value) and "root:" not in str(err.value)
    assert SecretScope().apply("env:HARBOR_API_KEY") == "env:HARBOR_API_KEY"
    with pytest.raises(ValueError, match="vault_prefix"):
        SecretScope(vault_prefix="/secret/prod")
    with pytest.raises(SecretError, match="must start with env:, file: or vault:"):
        scoped_secret_ref(load_governance().get("dev"), "HARBOR_API_KEY")
