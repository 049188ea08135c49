"""Anonymous refusals are counted, not audited one by one: a thousand of them are a handful of audit
events with the right counts, a signed-in user's refusals are still one event each, an address over
its limit gets 429, and the chain still verifies. Over a real socket, on each database the run has.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.databases import query
from tests.helpers.servers import serving
from voxgate.api.app import create_app
from voxgate.api.denials import ACTION, OVERFLOW, AnonymousDenials
from voxgate.compliance.audit import AuditLog, audit_public_keys
from voxgate.config import Settings
from voxgate.store.db import Database

LIMIT = 120  # the default anonymous_denials_per_minute
REFUSALS = 1000  # anonymous requests in one minute: most are over the limit


class Clock:
    """A worker's clock the test moves: the minute windows are counted on it."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(second=5, microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


def audit_rows(db_url: str, action: str) -> list[tuple[str, dict[str, Any]]]:
    rows = query(db_url, "SELECT actor, data FROM audit_events WHERE action = :action ORDER BY seq", action=action)
    return [(actor, json.loads(data)) for actor, data in rows]


def test_a_thousand_anonymous_refusals_are_a_handful_of_audit_events(db_url: str, tmp_path: Path) -> None:
    assert Settings().anonymous_denials_per_minute == LIMIT
    app = create_app(Settings(database_url=db_url, data_dir=tmp_path / "data"), [])
    clock = Clock()
    statuses: dict[str, collections.Counter[int]] = {}
    with serving(app) as url:
        state = app.state.voxgate
        state.clock = clock
        maker = state.identity.create_user("mia", "a long enough password")
        state.identity.bind_role(maker.id, "*", "maker", None)
        token, _ = state.identity.create_token(maker.id, "t", ["*"], 1)
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            bad = {"Authorization": "Bearer vxg_" + "x" * 43}
            statuses["bad token"] = collections.Counter(
                client.get("/api/users", headers=bad).status_code for _ in range(20)
            )
            statuses["anonymous"] = collections.Counter(client.get("/api/users").status_code for _ in range(REFUSALS))
            limited = client.get("/api/users")
            statuses["maker"] = collections.Counter(
                client.get("/api/users", headers={"Authorization": f"Bearer {token}"}).status_code for _ in range(3)
            )
            clock.now += dt.timedelta(minutes=1)  # a new minute: the address may be refused again
            statuses["next minute"] = collections.Counter(client.get("/api/users").status_code for _ in range(5))
    # the worker has stopped: the counts of the minute under way were written on the way out

    assert statuses["bad token"] == {401: 20}
    assert statuses["anonymous"] == {401: LIMIT - 20, 429: REFUSALS - (LIMIT - 20)}
    assert limited.status_code == 429 and limited.headers["x-voxgate-denied"] == "user.read"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert statuses["maker"] == {403: 3}  # signed in: refused by policy, never rate-limited
    assert statuses["next minute"] == {401: 5}

    counted = audit_rows(db_url, ACTION)
    assert len(counted) == 4
    totals = {(d["route"], d["client"], d["reason"], d["window_start"]): d["count"] for _, d in counted}
    first = clock.now.replace(second=0) - dt.timedelta(minutes=1)
    at = first.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    later = clock.now.replace(second=0).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert totals == {
        ("/api/users", "127.0.0.1", "invalid_token", at): 20,
        ("/api/users", "127.0.0.1", "denied", at): LIMIT - 20,
        ("/api/users", "127.0.0.1", "rate_limited", at): REFUSALS - (LIMIT - 20) + 1,
        ("/api/users", "127.0.0.1", "denied", later): 5,
    }
    assert {actor for actor, _ in counted} == {"anonymous"}
    # each refusal of a signed-in user is its own event; no anonymous refusal is
    denied = audit_rows(db_url, "auth.denied")
    assert [(actor, d["attempted"]) for actor, d in denied] == [
        (f"user:{maker.id}/token:{_token_id(db_url)}", "user.read")
    ] * 3

    db = Database(db_url)
    try:
        report = AuditLog(db).verify(audit_public_keys(db))
    finally:
        db.dispose()
    assert report.ok, report.reason


def _token_id(db_url: str) -> str:
    return str(query(db_url, "SELECT id FROM api_tokens")[0][0])


def test_the_counts_stay_bounded_whatever_the_addresses() -> None:
    clock = Clock()
    denials = AnonymousDenials(environment="dev", per_client_per_minute=5, clock=clock, max_keys=3)
    answers = [denials.record("/api/users", f"10.0.0.{n}", "denied") for n in range(100)]
    # three addresses are counted on their own; the other 97 share one key, and its limit
    assert answers[:3] == [None] * 3 and answers[3:8] == [None] * 5 and all(a is not None for a in answers[8:])
    assert denials.due() == []  # the minute is not over
    clock.now += dt.timedelta(seconds=60)
    events = denials.due()
    counts = {(e.data["client"], e.data["reason"]): e.data["count"] for e in events}
    assert counts == {
        ("10.0.0.0", "denied"): 1,
        ("10.0.0.1", "denied"): 1,
        ("10.0.0.2", "denied"): 1,
        (OVERFLOW, "denied"): 5,
        (OVERFLOW, "rate_limited"): 92,
    }
    assert all(e.action == ACTION and e.actor == "anonymous" and e.outcome == "denied" for e in events)
    assert denials.due() == [] and denials.due(final=True) == []  # written once


def test_the_minute_under_way_is_written_on_the_way_out() -> None:
    denials = AnonymousDenials(environment="dev", per_client_per_minute=5, clock=Clock())
    denials.record("/api/me", "127.0.0.1", "invalid_token")
    assert denials.due() == []
    [event] = denials.due(final=True)
    assert event.data["count"] == 1 and event.data["reason"] == "invalid_token" and event.environment == "dev"


def test_a_throttled_sign_in_does_not_spend_the_address_budget() -> None:
    denials = AnonymousDenials(environment="dev", per_client_per_minute=2, clock=Clock())
    assert [denials.record("/api/auth/login", "127.0.0.1", "throttled") for _ in range(10)] == [None] * 10
    assert denials.record("/api/users", "127.0.0.1", "denied") is None


def test_whatever_a_path_holds_its_count_can_be_audited() -> None:
    denials = AnonymousDenials(environment="dev", per_client_per_minute=5, clock=Clock())
    denials.record("/api/x\n\x00\ud800" + "y" * 500, "127.0.0.1\r", "denied")
    [event] = denials.due(final=True)  # an AuditEvent refuses control characters and lone surrogates
    assert event.data["route"].startswith("/api/x??") and len(event.data["route"]) == 150
    assert event.data["client"] == "127.0.0.1?"
