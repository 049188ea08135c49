"""DLP policies on connectors: groups, endpoint filter, exceptions in the database, and the live host check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.helpers.agents import NOW, add_connector
from voxgate.bundle import load_bundle
from voxgate.bundle.models import HttpConnector
from voxgate.governance.dlp import (
    RULE_BLOCKED,
    RULE_ENDPOINT,
    RULE_MIXED,
    DlpExceptionError,
    DlpHostPolicy,
    active_exceptions,
    check_bundle,
    grant_exception,
    host_policy_for,
    list_exceptions,
    revoke_exception,
)
from voxgate.governance.environments import GovernanceConfig, load_governance
from voxgate.runtime.connectors import CallContext, ConnectorClient, HostPolicy
from voxgate.store.db import Database


@pytest.fixture(scope="module")
def gov() -> GovernanceConfig:
    return load_governance()


def rules(violations: list) -> set[tuple[str, str]]:
    return {(v.rule, v.connector) for v in violations}


def test_harbor_passes_every_default_environment(harbor_bundle, gov: GovernanceConfig) -> None:
    for name in gov.names():
        report = check_bundle(harbor_bundle, gov.get(name), now=NOW)
        assert report.ok, (name, report.violations)
        assert report.warnings == [] and report.exempted == []


def test_default_policy_groups_hosts(gov: GovernanceConfig) -> None:
    prod = gov.get("prod").dlp
    assert prod.group_of_host("127.0.0.1") == "business"
    assert prod.group_of_host("billing.harbor.internal") == "business"
    assert prod.group_of_host("BILLING.Harbor.Internal") == "business"  # host names are case-insensitive
    assert prod.group_of_host("api.socialnet.example") == "non_business"  # unknown: deny by default
    assert prod.group_of_host("abc123.ngrok.io") == "blocked"
    assert prod.endpoints.decide("127.0.0.1", "/api/outages") == (True, "endpoint rule 2 (allow)")
    assert prod.endpoints.decide("127.0.0.1", "/api/admin/users")[0] is False  # the earlier deny rule wins
    assert prod.endpoints.decide("127.0.0.1", "/healthz")[0] is False  # no rule: default deny
    assert prod.endpoints.decide("api.socialnet.example", "/api/x")[0] is False


def test_non_business_connector_cannot_join_business_data(agent_copy: Path, gov: GovernanceConfig) -> None:
    line = add_connector(agent_copy)
    source = load_bundle(agent_copy)
    report = check_bundle(source, gov.get("prod"), now=NOW)
    assert not report.ok
    assert rules(report.violations) == {(RULE_MIXED, "social_api"), (RULE_ENDPOINT, "social_api")}
    mixed = next(v for v in report.violations if v.rule == RULE_MIXED)
    assert "harbor_api" in mixed.message
    assert mixed.location == f"{agent_copy / 'agent.yaml'}:{line}"
    assert str(mixed).startswith(f"{agent_copy / 'agent.yaml'}:{line}: dlp.mixed_groups: ")
    # dev allows any endpoint, but the groups still keep the data apart
    assert rules(check_bundle(source, gov.get("dev"), now=NOW).violations) == {(RULE_MIXED, "social_api")}


def test_non_business_alone_is_allowed_where_its_endpoint_is(agent_copy: Path, gov: GovernanceConfig) -> None:
    text = (agent_copy / "agent.yaml").read_text(encoding="utf-8")
    # one connector spanning a business and a non-business host mixes on its own
    text = text.replace(
        'hosts: ["127.0.0.1", "localhost"]', 'hosts: ["127.0.0.1", "localhost", "cdn.socialnet.example"]'
    )
    (agent_copy / "agent.yaml").write_text(text, encoding="utf-8")
    report = check_bundle(load_bundle(agent_copy), gov.get("dev"), now=NOW)
    assert rules(report.violations) == {(RULE_MIXED, "harbor_api")}
    assert "cdn.socialnet.example" in report.violations[0].message


def test_blocked_connector_fails_everywhere(agent_copy: Path, gov: GovernanceConfig) -> None:
    add_connector(
        agent_copy,
        '  tunnel:\n    type: http\n    base_url: "https://a1b2.ngrok.io"\n    hosts: ["a1b2.ngrok.io"]\n'
        "    classification: internal\n",
        "  sync:\n    connector: tunnel\n    path: /sync\n    customer_scoped: false\n",
    )
    source = load_bundle(agent_copy)
    for name in ("dev", "prod"):
        report = check_bundle(source, gov.get(name), now=NOW)
        assert (RULE_BLOCKED, "tunnel") in rules(report.violations), name
        blocked = next(v for v in report.violations if v.rule == RULE_BLOCKED)
        assert blocked.host == "a1b2.ngrok.io" and "blocks" in blocked.message


def test_endpoint_filter_checks_action_paths(agent_copy: Path, gov: GovernanceConfig) -> None:
    text = (agent_copy / "agent.yaml").read_text(encoding="utf-8")
    text = text.replace("    path: /api/outages\n", "    path: /api/admin/outages\n")
    (agent_copy / "agent.yaml").write_text(text, encoding="utf-8")
    source = load_bundle(agent_copy)
    report = check_bundle(source, gov.get("prod"), now=NOW)
    assert rules(report.violations) == {(RULE_ENDPOINT, "harbor_api")}
    assert "/api/admin/outages" in report.violations[0].message
    assert check_bundle(source, gov.get("dev"), now=NOW).ok


# ---- exceptions ---------------------------------------------------------------------------------


def test_exception_lifts_a_violation_until_it_expires(db: Database, agent_copy: Path, gov: GovernanceConfig) -> None:
    add_connector(agent_copy)
    source = load_bundle(agent_copy)
    dev = gov.get("dev")
    granted = grant_exception(
        db,
        environment="dev",
        connector="social_api",
        rule="dlp.mixed_groups",
        reason="campaign pilot, ticket 42",
        approver_id="u-approver",
        created_by="u-maker",
        expires_at=NOW + dt.timedelta(days=7),
        now=NOW,
        agent="harbor-support",
        known_environments=gov.names(),
    )
    assert granted.rule == "mixing" and granted.approver_id == "u-approver"

    during = NOW + dt.timedelta(days=3)
    report = check_bundle(source, dev, active_exceptions(db, "dev", now=during), now=during)
    assert report.ok and report.warnings == []
    assert [(v.rule, v.exception_id) for v in report.exempted] == [(RULE_MIXED, granted.id)]

    after = NOW + dt.timedelta(days=8)
    report = check_bundle(source, dev, active_exceptions(db, "dev", now=after), now=after)
    assert rules(report.violations) == {(RULE_MIXED, "social_api")}
    assert len(report.warnings) == 1 and granted.id in report.warnings[0] and "expired" in report.warnings[0]

    # an exception for another environment or another agent lifts nothing
    report = check_bundle(source, gov.get("test"), active_exceptions(db, "dev", now=during), now=during)
    assert (RULE_MIXED, "social_api") in rules(report.violations)


def test_revoked_exception_stops_applying(db: Database, agent_copy: Path, gov: GovernanceConfig) -> None:
    add_connector(agent_copy)
    source = load_bundle(agent_copy)
    granted = grant_exception(
        db,
        environment="dev",
        connector="social_api",
        rule="mixing",
        reason="pilot",
        approver_id="u-a",
        created_by="u-m",
        expires_at=NOW + dt.timedelta(days=30),
        now=NOW,
    )
    assert [e.id for e in list_exceptions(db, "dev", now=NOW)] == [granted.id]
    revoked = revoke_exception(db, granted.id, now=NOW + dt.timedelta(days=1))
    assert revoked.revoked_at is not None
    later = NOW + dt.timedelta(days=2)
    assert list_exceptions(db, "dev", now=later) == []
    assert [e.id for e in list_exceptions(db, "dev", include_inactive=True, now=later)] == [granted.id]
    report = check_bundle(source, gov.get("dev"), active_exceptions(db, "dev", now=later), now=later)
    assert not report.ok and report.warnings == []  # revoked, not expired: no warning
    with pytest.raises(DlpExceptionError, match="no DLP exception with id 'nope'"):
        revoke_exception(db, "nope")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"expires_at": NOW + dt.timedelta(days=30, seconds=1)}, "exceptions last at most 30 days"),
        ({"expires_at": NOW - dt.timedelta(seconds=1)}, "is not in the future"),
        ({"reason": "  "}, "an exception must say why"),
        ({"approver_id": ""}, "must name the person who approved it"),
        ({"rule": "endpoint"}, "must name the one host it allows"),
        ({"rule": "everything"}, "unknown DLP rule 'everything'"),
        ({"environment": "staging"}, "unknown environment 'staging' (known: dev, test, prod)"),
        ({"host": "*.socialnet.example"}, "names one host, not a pattern"),
    ],
)
def test_invalid_exceptions_are_refused(db: Database, gov: GovernanceConfig, changes: dict, message: str) -> None:
    args = dict(
        environment="prod",
        connector="social_api",
        rule="mixing",
        reason="pilot",
        approver_id="u-a",
        created_by="u-m",
        expires_at=NOW + dt.timedelta(days=30),
        now=NOW,
        known_environments=gov.names(),
    )
    args.update(changes)
    with pytest.raises(DlpExceptionError) as err:
        grant_exception(db, **args)
    assert message in str(err.value)
    assert list_exceptions(db, include_inactive=True, now=NOW) == []


def test_exactly_thirty_days_is_allowed(db: Database) -> None:
    e = grant_exception(
        db,
        environment="prod",
        connector="c",
        rule="blocked",
        reason="r",
        approver_id="a",
        created_by="m",
        expires_at=NOW + dt.timedelta(days=30),
        now=NOW,
    )
    assert e.expires_at - e.created_at == dt.timedelta(days=30)


# ---- the live host check --------------------------------------------------------------------------


def _connector(hosts: list[str], base_url: str = "http://127.0.0.1:8700") -> HttpConnector:
    return HttpConnector(base_url=base_url, hosts=hosts, classification="personal")


def test_host_policy_refuses_hosts_the_environment_does_not_allow(gov: GovernanceConfig) -> None:
    policy = DlpHostPolicy.for_environment(gov.get("prod"))
    assert isinstance(policy, HostPolicy)
    # the bundle's own hosts list includes the host: the environment's policy still refuses it
    conn = _connector(["127.0.0.1", "exfil.example.net"])
    assert policy.allowed("harbor_api", conn, "127.0.0.1")[0] is True
    ok, why = policy.allowed("harbor_api", conn, "exfil.example.net")
    assert not ok and why.startswith(RULE_ENDPOINT) and "exfil.example.net" in why
    # a host the connector does not declare is refused before any DLP rule
    ok, why = policy.allowed("harbor_api", conn, "localhost")
    assert not ok and "not declared" in why
    # blocked wins even where every endpoint is allowed
    dev = DlpHostPolicy.for_environment(gov.get("dev"))
    ok, why = dev.allowed("tunnel", _connector(["x.ngrok.io"], "https://x.ngrok.io"), "x.ngrok.io")
    assert not ok and why.startswith(RULE_BLOCKED)
    # with the full URL, path rules apply too
    assert policy.allowed_url("harbor_api", conn, "http://127.0.0.1:8700/api/outages?postcode=1")[0] is True
    ok, why = policy.allowed_url("harbor_api", conn, "http://127.0.0.1:8700/api/admin/users")
    assert not ok and "/api/admin/users" in why


def test_host_policy_refuses_mixing_when_it_knows_the_connectors(gov: GovernanceConfig) -> None:
    connectors = {
        "harbor_api": _connector(["127.0.0.1"]),
        "social_api": _connector(["api.socialnet.example"], "https://api.socialnet.example"),
    }
    policy = DlpHostPolicy.for_environment(gov.get("dev"), connectors=connectors)
    assert policy.allowed("harbor_api", connectors["harbor_api"], "127.0.0.1")[0] is True
    ok, why = policy.allowed("social_api", connectors["social_api"], "api.socialnet.example")
    assert not ok and why.startswith(RULE_MIXED)


async def test_runtime_call_to_a_host_outside_the_allow_list_is_refused(
    db: Database, harbor_bundle, gov: GovernanceConfig
) -> None:
    """A bundle altered to point its connector elsewhere (hosts list included) still cannot call out."""
    agent = harbor_bundle.agent.model_copy(deep=True)
    agent.connectors["harbor_api"] = agent.connectors["harbor_api"].model_copy(
        update={"base_url": "http://exfil.example.net", "hosts": ["exfil.example.net"]}
    )
    policy = host_policy_for(db, gov.get("prod"))
    client = ConnectorClient(agent.connectors, agent.actions, host_policy=policy)
    try:
        result = await client.call(
            "check_outage", CallContext(verified_customer_id=None, slots={"postcode": "HB1 2AA"})
        )
    finally:
        await client.aclose()
    assert result.status == "denied"
    assert result.error is not None and result.error.startswith(RULE_ENDPOINT)
    assert result.attempts == 0 and result.http_status is None  # refused before any request was made


async def test_runtime_call_through_the_policy_reaches_an_allowed_backend(
    db: Database, harbor_bundle, harbor_backend, gov: GovernanceConfig
) -> None:
    client = ConnectorClient(
        harbor_bundle.agent.connectors, harbor_bundle.agent.actions, host_policy=host_policy_for(db, gov.get("prod"))
    )
    try:
        result = await client.call("check_outage", CallContext(verified_customer_id=None, slots={"postcode": "12345"}))
    finally:
        await client.aclose()
    assert result.status in ("ok", "not_found"), result.error
    assert result.http_status in (200, 404)


def test_exceptions_from_the_database_reach_the_live_check(db: Database, gov: GovernanceConfig) -> None:
    clock = {"now": NOW}
    policy = host_policy_for(db, gov.get("prod"), now=lambda: clock["now"], refresh_s=0)
    conn = _connector(["127.0.0.1", "partner.example.org"])
    assert policy.allowed("harbor_api", conn, "partner.example.org")[0] is False
    granted = grant_exception(
        db,
        environment="prod",
        connector="harbor_api",
        rule="endpoint",
        host="partner.example.org",
        reason="partner migration",
        approver_id="u-a",
        created_by="u-m",
        expires_at=NOW + dt.timedelta(days=2),
        now=NOW,
    )
    assert policy.allowed("harbor_api", conn, "partner.example.org") == (
        True,
        "allowed in prod (no endpoint rule matches (default deny))",
    )
    # only for that connector and host
    assert policy.allowed("other_api", conn, "partner.example.org")[0] is False
    clock["now"] = NOW + dt.timedelta(days=3)  # expired: refused again, by itself
    assert policy.allowed("harbor_api", conn, "partner.example.org")[0] is False
    clock["now"] = NOW + dt.timedelta(days=1)
    assert policy.allowed("harbor_api", conn, "partner.example.org")[0] is True
    revoke_exception(db, granted.id, now=NOW + dt.timedelta(hours=1))
    assert policy.allowed("harbor_api", conn, "partner.example.org")[0] is False
