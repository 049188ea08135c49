"""Tests for the Harbor Telecom demo backend (examples/harbor-telecom/backend)."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from harbor_backend import BackgroundProcess, BackgroundServer, create_app, demo_credentials, generate
from harbor_backend.__main__ import main as cli_main
from harbor_backend.data import BILL_DUE_DAYS, POSTCODES, Dataset, draw_outages, generate_activity, hash_pin
from harbor_backend.db import SeedMismatchError

API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
N = 80  # enough customers for customers with and without orders, small enough to be quick
TODAY = date(2027, 3, 15)  # the data is dated relative to a day; tests pin it

DATA = generate(7, N, today=TODAY)
CREDS = {c["customer_id"]: c for c in demo_credentials(7, N)}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Read-only tests share one seeded app."""
    app = create_app(tmp_path_factory.mktemp("harbor") / "harbor.db", API_KEY, seed=7, customers=N, today=TODAY)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def fresh_client(tmp_path: Path) -> Iterator[TestClient]:
    """Tests that write (cases) get their own database."""
    with TestClient(create_app(tmp_path / "harbor.db", API_KEY, seed=7, customers=N, today=TODAY)) as c:
        yield c


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


# -- data --------------------------------------------------------------------


def test_generation_is_deterministic() -> None:
    assert generate(7, N, today=TODAY) == DATA
    assert demo_credentials(7, N) == list(CREDS.values())
    other = generate(8, N)
    assert [c.account_number for c in other.customers] != [c.account_number for c in DATA.customers]
    # a smaller population is a prefix of a larger one's customers
    assert generate(7, 10).customers == DATA.customers[:10]


def test_generated_data_shape() -> None:
    customers = DATA.customers
    assert [c.customer_id for c in customers] == [f"C{i:04d}" for i in range(1, N + 1)]
    accounts = [c.account_number for c in customers]
    assert len(set(accounts)) == N
    assert all(re.fullmatch(r"[1-9]\d{7}", a) for a in accounts)
    assert len({c.phone for c in customers}) == N
    assert all(re.fullmatch(r"\+1555\d{7}", c.phone) for c in customers)
    assert all(c.postcode in POSTCODES for c in customers)
    assert len({c.postcode for c in customers}) < N  # postcodes are shared
    assert all(c.email.endswith("@example.net") for c in customers)
    with_orders = {o.customer_id for o in DATA.orders}
    assert all(f"C{i:04d}" in with_orders for i in range(1, 51))
    assert any(c.customer_id not in with_orders for c in customers)  # some have none
    assert all(re.fullmatch(r"HT-\d{6}", o.order_id) for o in DATA.orders)
    assert len({o.order_id for o in DATA.orders}) == len(DATA.orders)
    assert len(DATA.invoices) == 3 * N
    assert {i.status for i in DATA.invoices} <= {"paid", "due", "overdue"}
    outage_postcodes = {o.postcode for o in DATA.outages}
    assert len(outage_postcodes) == 6 and outage_postcodes < set(POSTCODES)
    # PINs are stored only as salted hashes that match the demo credentials
    for c in customers[:5]:
        assert hash_pin(CREDS[c.customer_id]["pin"], c.pin_salt) == c.pin_hash


def _months_back(d: date, n: int) -> str:
    index = d.year * 12 + d.month - 1 - n
    return f"{index // 12}-{index % 12 + 1:02d}"


def _check_dated_relative_to(today: date, orders: Any, invoices: Any, outages: Any) -> None:
    """What must hold of data drawn for ``today``, whatever the day."""
    assert orders and invoices and outages
    for o in orders:
        assert today - timedelta(days=60) <= o.placed_on <= today, o
        if o.status in ("processing", "shipped"):
            assert o.eta is not None and today < o.eta <= today + timedelta(days=6), o
        elif o.status == "out_for_delivery":
            assert o.eta == today, o
        elif o.status == "delivered":
            assert o.delivered_on is not None and o.placed_on <= o.delivered_on <= today, o
    by_customer: dict[str, list[Any]] = {}
    for i in invoices:
        by_customer.setdefault(i.customer_id, []).append(i)
    for bills in by_customer.values():
        periods = [i.period for i in bills]
        assert len(bills) == 3 and periods == sorted(periods)
        newest = 0 if periods[-1] == f"{today:%Y-%m}" else 1
        assert periods == [_months_back(today, n) for n in (newest + 2, newest + 1, newest)]
        assert today - timedelta(days=31) < bills[-1].due_date - timedelta(days=BILL_DUE_DAYS)  # the newest
        for i in bills:
            issued = i.due_date - timedelta(days=BILL_DUE_DAYS)
            assert f"{issued:%Y-%m}" == i.period and issued <= today, i
            if i.status == "paid":
                assert i.paid_on is not None and issued <= i.paid_on <= today, i
            else:
                assert i.paid_on is None and (i.due_date >= today) == (i.status == "due"), i
    assert {i.status for i in invoices} == {"paid", "due", "overdue"}
    start_of_day, end_of_day = datetime.combine(today, time.min), datetime.combine(today, time.max)
    for o in outages:
        # begun before today and fixed after it: plausible at any time of the day
        assert today - timedelta(days=1) <= o.started_at.date() and o.started_at < start_of_day, o
        assert end_of_day < o.estimated_fix <= start_of_day + timedelta(days=2), o


def test_dates_are_relative_to_the_day_they_are_drawn_for() -> None:
    days = [date(2026, 11, 1), date(2026, 12, 24)]
    first, later = (generate(7, 20, today=d) for d in days)
    shift = days[1] - days[0]
    assert first.today == days[0] and later.today == days[1]
    for a, b in ((first, days[0]), (later, days[1])):
        _check_dated_relative_to(b, a.orders, a.invoices, a.outages)
    # the same orders and outages, moved by the days in between
    assert [o.order_id for o in later.orders] == [o.order_id for o in first.orders]
    assert [b.placed_on - a.placed_on for a, b in zip(first.orders, later.orders)] == [shift] * len(first.orders)
    assert all(b.eta - a.eta == shift for a, b in zip(first.orders, later.orders) if a.eta)
    assert [
        (b.postcode, b.started_at - a.started_at, b.estimated_fix - a.estimated_fix)
        for a, b in zip(first.outages, later.outages)
    ] == [(a.postcode, shift, shift) for a in first.outages]
    # bills are the last three of each customer's monthly cycle
    assert {i.period for i in first.invoices} <= {"2026-08", "2026-09", "2026-10", "2026-11"}
    assert {i.period for i in later.invoices} <= {"2026-09", "2026-10", "2026-11", "2026-12"}
    # customers, and so the demo credentials, do not depend on the day
    assert later.customers == first.customers


def test_dates_are_plausible_on_every_day() -> None:
    """A year of days, month ends and a leap day included."""
    for n in range(366 + 31):
        today = date(2027, 12, 1) + timedelta(days=n)
        _check_dated_relative_to(today, *generate_activity(7, N, today=today))


def test_outage_fix_is_after_its_start_and_after_now() -> None:
    for outage in draw_outages():  # the real date
        now = datetime.now()
        assert outage.started_at < now < outage.estimated_fix
    for hour in range(24):
        now = datetime.combine(TODAY, time(hour, 59))
        assert all(o.started_at < now < o.estimated_fix for o in DATA.outages)


def test_same_seed_and_day_give_the_same_data() -> None:
    day = date(2026, 12, 24)
    again: Dataset = generate(7, N, today=day)
    assert generate(7, N, today=day) == again
    assert (list(again.orders), list(again.invoices), list(again.outages)) == generate_activity(7, N, today=day)
    assert draw_outages(7, day) == list(again.outages)
    assert generate(7, N, today=day + timedelta(days=1)) != again
    # the default is the real date
    assert generate(7, 10).today == date.today() and generate(7, 10) == generate(7, 10, today=date.today())
    assert demo_credentials(7, N) == list(CREDS.values())


def test_database_stores_no_plaintext_pin(tmp_path: Path) -> None:
    create_app(tmp_path / "h.db", API_KEY, customers=N, today=TODAY)
    with sqlite3.connect(tmp_path / "h.db") as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(customers)")}
        assert "pin" not in columns and {"pin_salt", "pin_hash"} <= columns


def test_seeding_is_idempotent_and_checks_parameters(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    create_app(db, API_KEY, customers=N, today=TODAY)
    with TestClient(create_app(db, API_KEY, customers=N, today=TODAY)) as c:
        assert c.get("/health").json() == {"status": "ok", "customers": N}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == len(DATA.orders)
    with pytest.raises(SeedMismatchError):
        create_app(db, API_KEY, seed=8, customers=N, today=TODAY)
    with pytest.raises(SeedMismatchError):  # another day does not excuse another seed
        create_app(db, API_KEY, seed=8, customers=N, today=TODAY + timedelta(days=1))


def _dated_rows(c: TestClient, customer_id: str) -> tuple[Any, ...]:
    return (
        c.get(f"/api/customers/{customer_id}/orders", headers=AUTH).json()["orders"],
        c.get(f"/api/customers/{customer_id}/invoices", headers=AUTH).json()["invoices"],
        c.get(f"/api/outages?postcode={DATA.outages[0].postcode}", headers=AUTH).json()["outages"],
    )


def _expected_rows(data: Dataset, customer_id: str) -> tuple[Any, ...]:
    iso = lambda v: v.isoformat() if v is not None else None  # noqa: E731
    orders = sorted(
        (o for o in data.orders if o.customer_id == customer_id), key=lambda o: (o.placed_on, o.order_id), reverse=True
    )
    invoices = sorted((i for i in data.invoices if i.customer_id == customer_id), key=lambda i: i.period, reverse=True)
    return (
        [
            {
                "order_id": o.order_id,
                "item": o.item,
                "status": o.status,
                "placed_on": iso(o.placed_on),
                "eta": iso(o.eta),
                "delivered_on": iso(o.delivered_on),
                "carrier": o.carrier,
                "tracking_number": o.tracking_number,
            }
            for o in orders
        ],
        [
            {
                "invoice_id": i.invoice_id,
                "period": i.period,
                "amount": i.amount,
                "due_date": iso(i.due_date),
                "status": i.status,
                "paid_on": iso(i.paid_on),
            }
            for i in invoices
        ],
        [
            {
                "outage_id": o.outage_id,
                "postcode": o.postcode,
                "service": o.service,
                "status": o.status,
                "started_at": iso(o.started_at),
                "estimated_fix": iso(o.estimated_fix),
                "description": o.description,
            }
            for o in data.outages[:1]
        ],
    )


def test_a_database_seeded_on_another_day_is_redrawn_for_today(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    earlier = TODAY - timedelta(days=40)
    with TestClient(create_app(db, API_KEY, customers=N, today=earlier)) as c:
        assert _dated_rows(c, "C0003") == _expected_rows(generate(7, N, today=earlier), "C0003")
        invoice_id = c.get("/api/customers/C0003/invoices", headers=AUTH).json()["invoices"][0]["invoice_id"]
        case = c.post(
            "/api/customers/C0003/cases",
            headers=AUTH,
            json={"type": "billing_dispute", "reason": "charged twice", "invoice_id": invoice_id},
        ).json()
    with TestClient(create_app(db, API_KEY, customers=N, today=TODAY)) as c:
        assert _dated_rows(c, "C0003") == _expected_rows(DATA, "C0003")
        # customers do not change with the day, and cases are kept (with the bill they named)
        cred = CREDS["C0003"]
        body = {"account_number": cred["account_number"], "pin": cred["pin"]}
        assert c.post("/api/verify", headers=AUTH, json=body).json()["verified"] is True
        assert c.get("/api/customers/C0003/cases", headers=AUTH).json() == {"cases": [case]}
        assert (
            c.post("/api/customers/C0003/cases", headers=AUTH, json={"type": "complaint", "reason": "slow"}).json()[
                "case_id"
            ]
            == "CASE-000002"
        )
    with sqlite3.connect(db) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta == {"seed": "7", "customers": str(N), "today": TODAY.isoformat()}
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == len(DATA.orders)
        assert conn.execute("SELECT COUNT(*) FROM invoices").fetchone()[0] == len(DATA.invoices)
        assert conn.execute("SELECT COUNT(*) FROM outages").fetchone()[0] == len(DATA.outages)
        assert conn.execute("PRAGMA foreign_key_check(orders)").fetchall() == []


def test_a_database_from_the_fixed_date_era_is_redrawn(tmp_path: Path) -> None:
    """Earlier versions dated everything from 2026-11-01 and recorded it as reference_date."""
    db = tmp_path / "h.db"
    create_app(db, API_KEY, customers=N, today=date(2026, 11, 1))
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'today'")
        conn.execute("INSERT INTO meta VALUES ('reference_date', '2026-11-01')")
    with TestClient(create_app(db, API_KEY, customers=N, today=TODAY)) as c:
        assert _dated_rows(c, "C0001") == _expected_rows(DATA, "C0001")
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT key, value FROM meta")) == {
            "seed": "7",
            "customers": str(N),
            "today": TODAY.isoformat(),
        }


def test_a_running_backend_follows_the_date(tmp_path: Path) -> None:
    clock = [TODAY - timedelta(days=1)]
    app = create_app(tmp_path / "h.db", API_KEY, customers=N, clock=lambda: clock[0])
    with TestClient(app) as c:
        assert _dated_rows(c, "C0002") == _expected_rows(generate(7, N, today=clock[0]), "C0002")
        clock[0] = TODAY  # midnight passes
        assert c.get("/api/outages?postcode=99999", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert app.state.db.today == TODAY - timedelta(days=1)  # an unauthorised call changes nothing
        assert _dated_rows(c, "C0002") == _expected_rows(DATA, "C0002")
        assert app.state.db.today == TODAY
    # pinned to a day, it stays on it
    pinned = create_app(tmp_path / "p.db", API_KEY, customers=N, today=TODAY, clock=lambda: TODAY + timedelta(days=3))
    with TestClient(pinned) as c:
        assert _dated_rows(c, "C0002") == _expected_rows(DATA, "C0002")


# -- auth ----------------------------------------------------------------------


def test_health_needs_no_auth(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "customers": N}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}, {"Authorization": f"Basic {API_KEY}"}],
)
def test_api_requires_bearer_key(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/api/customers/C0001"),
        ("GET", "/api/customers/C0001/orders"),
        ("GET", "/api/outages?postcode=20417"),
        ("POST", "/api/verify"),
    ]:
        r = client.request(method, path, headers=headers, json={"account_number": "12345678", "pin": "1234"})
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"] == "Bearer"


# -- verify --------------------------------------------------------------------


def test_verify_with_account_and_pin(client: TestClient) -> None:
    cred = CREDS["C0007"]
    r = client.post("/api/verify", headers=AUTH, json={"account_number": cred["account_number"], "pin": cred["pin"]})
    assert r.status_code == 200
    assert r.json() == {"verified": True, "customer_id": "C0007", "first_name": cred["first_name"]}


def test_verify_wrong_pin_and_unknown_account_look_the_same(client: TestClient) -> None:
    cred = CREDS["C0007"]
    wrong_pin = f"{(int(cred['pin']) + 1) % 10000:04d}"
    known = {c["account_number"] for c in CREDS.values()}
    unknown = next(str(n) for n in range(10_000_000, 10_001_000) if str(n) not in known)
    r1 = client.post("/api/verify", headers=AUTH, json={"account_number": cred["account_number"], "pin": wrong_pin})
    r2 = client.post("/api/verify", headers=AUTH, json={"account_number": unknown, "pin": cred["pin"]})
    assert r1.status_code == r2.status_code == 200
    assert r1.json() == r2.json() == {"verified": False, "reason": "no_match"}


def test_verify_with_dob(client: TestClient) -> None:
    cred = CREDS["C0012"]
    ok = client.post("/api/verify", headers=AUTH, json={"account_number": cred["account_number"], "dob": cred["dob"]})
    assert ok.json() == {"verified": True, "customer_id": "C0012", "first_name": cred["first_name"]}
    wrong = date.fromisoformat(cred["dob"]).replace(year=date.fromisoformat(cred["dob"]).year - 1).isoformat()
    bad = client.post("/api/verify", headers=AUTH, json={"account_number": cred["account_number"], "dob": wrong})
    assert bad.json() == {"verified": False, "reason": "no_match"}


def test_verify_with_phone_and_pin(client: TestClient) -> None:
    cred = CREDS["C0003"]
    ok = client.post("/api/verify", headers=AUTH, json={"phone": cred["phone"], "pin": cred["pin"]})
    assert ok.json()["verified"] is True and ok.json()["customer_id"] == "C0003"
    other_pin = CREDS["C0004"]["pin"]
    if other_pin != cred["pin"]:
        bad = client.post("/api/verify", headers=AUTH, json={"phone": cred["phone"], "pin": other_pin})
        assert bad.json() == {"verified": False, "reason": "no_match"}


@pytest.mark.parametrize(
    "body",
    [
        {"account_number": "12345678"},  # no secret
        {"pin": "1234"},  # no identifier
        {"account_number": "12345678", "phone": "+15551234567", "pin": "1234"},
        {"account_number": "12345678", "pin": "1234", "dob": "1980-01-01"},
        {"phone": "+15551234567", "dob": "1980-01-01"},  # phone needs a PIN
        {"account_number": "1234567", "pin": "1234"},
        {"account_number": "12345678", "pin": "12a4"},
        {"account_number": "12345678", "dob": "not-a-date"},
    ],
)
def test_verify_rejects_bad_input(client: TestClient, body: dict[str, str]) -> None:
    assert client.post("/api/verify", headers=AUTH, json=body).status_code == 422


# -- customers, orders, invoices -----------------------------------------------


def test_no_pin_in_any_response(fresh_client: TestClient) -> None:
    c = fresh_client
    cred = CREDS["C0001"]
    customer = DATA.customers[0]
    c.post("/api/customers/C0001/cases", headers=AUTH, json={"type": "complaint", "reason": "slow broadband"})
    bodies = [
        c.post("/api/verify", headers=AUTH, json={"account_number": cred["account_number"], "pin": cred["pin"]}),
        c.get("/api/customers/C0001", headers=AUTH),
        c.get("/api/customers/C0001/orders", headers=AUTH),
        c.get("/api/customers/C0001/orders/latest", headers=AUTH),
        c.get("/api/customers/C0001/invoices", headers=AUTH),
        c.get("/api/customers/C0001/balance", headers=AUTH),
        c.get("/api/customers/C0001/cases", headers=AUTH),
        c.get(f"/api/outages?postcode={customer.postcode}", headers=AUTH),
    ]
    for r in bodies:
        assert r.status_code == 200, r.url
        assert not any("pin" in k.lower() for k in _keys(r.json())), r.url
        assert customer.pin_hash not in r.text and customer.pin_salt not in r.text
    profile = bodies[1].json()
    assert profile["account_number"] == cred["account_number"] and profile["first_name"] == cred["first_name"]
    assert profile["phone"] == cred["phone"] and profile["postcode"] == cred["postcode"]


def test_unknown_customer_is_404(client: TestClient) -> None:
    for path in ["", "/orders", "/orders/latest", "/invoices", "/balance", "/cases"]:
        r = client.get(f"/api/customers/C9999{path}", headers=AUTH)
        assert r.status_code == 404 and r.json() == {"detail": "customer not found"}


def test_orders_newest_first_and_latest(client: TestClient) -> None:
    orders = client.get("/api/customers/C0002/orders", headers=AUTH).json()["orders"]
    expected = sorted((o for o in DATA.orders if o.customer_id == "C0002"), key=lambda o: o.placed_on, reverse=True)
    assert [o["order_id"] for o in orders] == [o.order_id for o in expected]
    assert [o["placed_on"] for o in orders] == sorted((o["placed_on"] for o in orders), reverse=True)
    latest = client.get("/api/customers/C0002/orders/latest", headers=AUTH)
    assert latest.status_code == 200 and latest.json() == orders[0]
    one = client.get(f"/api/customers/C0002/orders/{orders[0]['order_id']}", headers=AUTH)
    assert one.status_code == 200 and one.json() == orders[0]


def test_customer_without_orders_has_no_latest(client: TestClient) -> None:
    with_orders = {o.customer_id for o in DATA.orders}
    cid = next(c.customer_id for c in DATA.customers if c.customer_id not in with_orders)
    assert client.get(f"/api/customers/{cid}/orders", headers=AUTH).json() == {"orders": []}
    r = client.get(f"/api/customers/{cid}/orders/latest", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"detail": "no orders"}


def test_other_customers_order_is_404(client: TestClient) -> None:
    theirs = next(o for o in DATA.orders if o.customer_id == "C0005")
    assert client.get(f"/api/customers/C0005/orders/{theirs.order_id}", headers=AUTH).status_code == 200
    r = client.get(f"/api/customers/C0006/orders/{theirs.order_id}", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"detail": "order not found"}
    assert client.get("/api/customers/C0006/orders/HT-000000", headers=AUTH).status_code == 404


def test_invoices_and_balance(client: TestClient) -> None:
    for customer in DATA.customers:
        cid = customer.customer_id
        invoices = client.get(f"/api/customers/{cid}/invoices", headers=AUTH).json()["invoices"]
        assert len(invoices) == 3 and [i["period"] for i in invoices] in (
            ["2027-03", "2027-02", "2027-01"],
            ["2027-02", "2027-01", "2026-12"],
        )
        balance = client.get(f"/api/customers/{cid}/balance", headers=AUTH).json()
        unpaid = [i for i in invoices if i["status"] != "paid"]
        assert balance["amount_due"] == pytest.approx(sum(i["amount"] for i in unpaid))
        if unpaid:
            oldest = min(unpaid, key=lambda i: i["due_date"])
            assert balance["due_date"] == oldest["due_date"] and balance["invoice_id"] == oldest["invoice_id"]
            assert balance["status"] == ("overdue" if any(i["status"] == "overdue" for i in unpaid) else "due")
        else:
            assert balance["amount_due"] == 0 and balance["due_date"] is None and balance["status"] == "paid"
    # the data covers all three situations
    statuses = {
        client.get(f"/api/customers/{c.customer_id}/balance", headers=AUTH).json()["status"] for c in DATA.customers
    }
    assert statuses == {"paid", "due", "overdue"}


# -- cases -----------------------------------------------------------------------


def test_case_creation_is_sequential_and_persists(tmp_path: Path) -> None:
    db = tmp_path / "harbor.db"
    invoice = next(i for i in DATA.invoices if i.customer_id == "C0003")
    with TestClient(create_app(db, API_KEY, customers=N, today=TODAY)) as c:
        assert c.get("/api/customers/C0003/cases", headers=AUTH).json() == {"cases": []}
        r1 = c.post(
            "/api/customers/C0003/cases",
            headers=AUTH,
            json={
                "type": "billing_dispute",
                "amount": 4.991,
                "reason": " charged twice ",
                "invoice_id": invoice.invoice_id,
            },
        )
        assert r1.status_code == 201
        case1 = r1.json()
        assert case1["case_id"] == "CASE-000001" and case1["status"] == "open"
        assert case1["customer_id"] == "C0003" and case1["type"] == "billing_dispute"
        assert case1["amount"] == 4.99 and case1["reason"] == "charged twice"
        assert case1["invoice_id"] == invoice.invoice_id and case1["created_at"]
        r2 = c.post("/api/customers/C0004/cases", headers=AUTH, json={"type": "technical_fault", "reason": "no signal"})
        assert r2.status_code == 201 and r2.json()["case_id"] == "CASE-000002" and r2.json()["amount"] is None
    # a new app on the same file (a restart) sees the cases and continues the sequence
    with TestClient(create_app(db, API_KEY, customers=N, today=TODAY)) as c:
        assert c.get("/api/customers/C0003/cases", headers=AUTH).json() == {"cases": [case1]}
        r3 = c.post("/api/customers/C0003/cases", headers=AUTH, json={"type": "complaint", "reason": "long wait"})
        assert r3.json()["case_id"] == "CASE-000003"
        ids = [x["case_id"] for x in c.get("/api/customers/C0003/cases", headers=AUTH).json()["cases"]]
        assert ids == ["CASE-000003", "CASE-000001"]  # newest first, only this customer's


def test_case_validation(fresh_client: TestClient) -> None:
    c = fresh_client
    other_invoice = next(i for i in DATA.invoices if i.customer_id == "C0009")
    own_invoice = next(i for i in DATA.invoices if i.customer_id == "C0008")
    url = "/api/customers/C0008/cases"
    assert c.post(url, headers=AUTH, json={"type": "free_money", "reason": "x"}).status_code == 422
    assert c.post(url, headers=AUTH, json={"type": "complaint", "reason": "   "}).status_code == 422
    assert c.post(url, headers=AUTH, json={"type": "refund_request", "amount": -1, "reason": "x"}).status_code == 422
    r = c.post(
        url, headers=AUTH, json={"type": "billing_dispute", "reason": "x", "invoice_id": other_invoice.invoice_id}
    )
    assert r.status_code == 404 and r.json() == {"detail": "invoice not found"}
    too_much = {
        "type": "billing_dispute",
        "amount": own_invoice.amount + 1,
        "reason": "x",
        "invoice_id": own_invoice.invoice_id,
    }
    assert c.post(url, headers=AUTH, json=too_much).status_code == 422
    assert c.post("/api/customers/C9999/cases", headers=AUTH, json={"type": "other", "reason": "x"}).status_code == 404
    assert c.get(url, headers=AUTH).json() == {"cases": []}  # nothing was stored


# -- outages -----------------------------------------------------------------------


def test_outages_by_postcode(client: TestClient) -> None:
    outage = DATA.outages[0]
    r = client.get(f"/api/outages?postcode={outage.postcode}", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["postcode"] == outage.postcode and len(body["outages"]) == 1
    got = body["outages"][0]
    assert got["service"] == outage.service in ("broadband", "mobile", "tv")
    assert got["started_at"] == outage.started_at.isoformat() and got["estimated_fix"] > got["started_at"]
    quiet = next(p for p in POSTCODES if p not in {o.postcode for o in DATA.outages})
    assert client.get(f"/api/outages?postcode={quiet}", headers=AUTH).json() == {"postcode": quiet, "outages": []}
    for bad in ["?postcode=1234", "?postcode=123456", "?postcode=abcde", ""]:
        assert client.get(f"/api/outages{bad}", headers=AUTH).status_code == 422


# -- server and CLI -------------------------------------------------------------------


def test_background_server_starts_and_stops(tmp_path: Path) -> None:
    with BackgroundServer(tmp_path / "harbor.db", API_KEY, customers=20) as server:
        port = server.port
        assert port > 0 and server.url == f"http://127.0.0.1:{port}"
        assert httpx.get(server.url + "/health").json() == {"status": "ok", "customers": 20}
        profile = httpx.get(server.url + "/api/customers/C0001", headers=server.auth_headers)
        assert profile.status_code == 200 and profile.json()["customer_id"] == "C0001"
        assert httpx.get(server.url + "/api/customers/C0001").status_code == 401
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_background_process_starts_and_stops(tmp_path: Path) -> None:
    with BackgroundProcess(tmp_path / "harbor.db", API_KEY, customers=20, today=TODAY) as server:
        assert server._proc is not None
        pid, port = server._proc.pid, server.port
        assert httpx.get(server.url + "/health").json() == {"status": "ok", "customers": 20}
        outage = DATA.outages[0]  # --today reached the process
        got = httpx.get(server.url + f"/api/outages?postcode={outage.postcode}", headers=server.auth_headers).json()
        assert got["outages"][0]["estimated_fix"] == outage.estimated_fix.isoformat()
        profile = httpx.get(server.url + "/api/customers/C0001", headers=server.auth_headers)
        assert profile.status_code == 200 and profile.json()["customer_id"] == "C0001"
        assert httpx.get(server.url + "/api/customers/C0001").status_code == 401
        assert pid != os.getpid()  # its own interpreter
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped


def test_background_process_reports_why_it_did_not_start(tmp_path: Path) -> None:
    with BackgroundServer(tmp_path / "harbor.db", API_KEY, customers=20):
        pass  # seeds the file with 20 customers
    with pytest.raises(RuntimeError, match="seeded with"):
        BackgroundProcess(tmp_path / "harbor.db", API_KEY, customers=30).start()


def test_cli_credentials_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["credentials", "--limit", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == demo_credentials()[:3]
    assert set(rows[0]) == {"customer_id", "account_number", "pin", "dob", "phone", "postcode", "first_name"}


def test_cli_serve_requires_api_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HARBOR_API_KEY", raising=False)
    assert cli_main(["serve", "--db", "unused.db"]) == 2
    assert "HARBOR_API_KEY" in capsys.readouterr().err
