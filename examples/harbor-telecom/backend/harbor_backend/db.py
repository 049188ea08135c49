"""SQLite storage for the Harbor Telecom demo backend (stdlib ``sqlite3``).

One connection is shared by all threads and guarded by a lock. Schema creation
and seeding are idempotent: the database is seeded from :mod:`harbor_backend.data`
only when it has no customers yet, and the seed parameters are recorded so a
database is never silently reused with different ones.

The data is dated relative to the day it was seeded for, recorded as ``today`` in
``meta``. Opened for another day (or by a version that recorded a fixed
``reference_date``), the dated tables (orders, invoices, outages) are drawn
again for that day; customers do not depend on the day and cases are kept.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from .data import Invoice, Order, Outage, generate, generate_activity

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    account_number TEXT NOT NULL UNIQUE,
    pin_salt TEXT NOT NULL,
    pin_hash TEXT NOT NULL,
    dob TEXT NOT NULL,
    phone TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    postcode TEXT NOT NULL,
    plan TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(customer_id),
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    placed_on TEXT NOT NULL,
    eta TEXT,
    delivered_on TEXT,
    carrier TEXT,
    tracking_number TEXT
);
CREATE INDEX IF NOT EXISTS orders_customer ON orders(customer_id);
CREATE TABLE IF NOT EXISTS invoices (
    invoice_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(customer_id),
    period TEXT NOT NULL,
    amount REAL NOT NULL,
    due_date TEXT NOT NULL,
    status TEXT NOT NULL,
    paid_on TEXT
);
CREATE INDEX IF NOT EXISTS invoices_customer ON invoices(customer_id);
CREATE TABLE IF NOT EXISTS outages (
    outage_id TEXT PRIMARY KEY,
    postcode TEXT NOT NULL,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    estimated_fix TEXT NOT NULL,
    description TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outages_postcode ON outages(postcode);
CREATE TABLE IF NOT EXISTS cases (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT UNIQUE,
    customer_id TEXT NOT NULL REFERENCES customers(customer_id),
    type TEXT NOT NULL,
    amount REAL,
    reason TEXT NOT NULL,
    invoice_id TEXT REFERENCES invoices(invoice_id),
    status TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_customer ON cases(customer_id);
"""

PUBLIC_CUSTOMER_COLUMNS = "customer_id, first_name, last_name, account_number, dob, phone, email, postcode, plan"
ORDER_COLUMNS = "order_id, item, status, placed_on, eta, delivered_on, carrier, tracking_number"
INVOICE_COLUMNS = "invoice_id, period, amount, due_date, status, paid_on"
OUTAGE_COLUMNS = "outage_id, postcode, service, status, started_at, estimated_fix, description"
CASE_COLUMNS = "case_id, customer_id, type, amount, reason, invoice_id, status, created_at"

Row = dict[str, Any]


class SeedMismatchError(RuntimeError):
    """The database was seeded with different parameters than requested."""


class HarborDB:
    """Thread-safe access to the backend's SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.seed: int | None = None
        self.customers: int | None = None
        self.today: date | None = None  # the day the dated data was drawn for
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA foreign_keys = ON")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock for one transaction (committed on success, rolled back on error)."""
        with self._lock, self._conn:
            yield self._conn

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        with self._tx() as conn:
            return [dict(r) for r in conn.execute(sql, params).fetchall()]

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- setup -------------------------------------------------------------

    def initialise(self, seed: int, customers: int, today: date) -> None:
        """Create the schema and seed it for ``today`` if empty; idempotent.

        A database seeded with another seed or customer count is refused (`SeedMismatchError`);
        one seeded for another day has its dated data drawn again for ``today`` (see `refresh`).
        """
        wanted = {"seed": str(seed), "customers": str(customers)}
        with self._lock:
            self._conn.executescript(SCHEMA)
            stored = self._meta()
            has_data = self._conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0] > 0
            if has_data:
                seeded_with = {k: stored[k] for k in wanted if k in stored}
                if seeded_with and seeded_with != wanted:
                    raise SeedMismatchError(
                        f"{self.path} was seeded with {seeded_with}, not {wanted}; "
                        "delete the file or pass matching --seed/--customers"
                    )
                self.seed, self.customers = seed, customers
                if stored.get("today") != today.isoformat():
                    self._replace_dated(today)
                self.today = today
                return
            with self._conn:
                self._insert_all(seed, customers, today)
                self._set_meta({**wanted, "today": today.isoformat()})
            self.seed, self.customers, self.today = seed, customers, today

    def refresh(self, today: date) -> bool:
        """Draw orders, invoices and outages again for ``today`` unless they already are for it;
        customers and cases are kept. True if the data was replaced."""
        if self.seed is None:
            raise RuntimeError("initialise the database first")
        with self._lock:
            if self._meta().get("today") == today.isoformat():
                self.today = today
                return False
            self._replace_dated(today)
            self.today = today
            return True

    def _meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._conn.execute("SELECT key, value FROM meta")}

    def _set_meta(self, values: dict[str, str]) -> None:
        self._conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items())
        self._conn.execute("DELETE FROM meta WHERE key = 'reference_date'")  # recorded by earlier versions

    def _insert_all(self, seed: int, customers: int, today: date) -> None:
        data = generate(seed, customers, today)
        self._conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    c.customer_id,
                    c.first_name,
                    c.last_name,
                    c.account_number,
                    c.pin_salt,
                    c.pin_hash,
                    c.dob.isoformat(),
                    c.phone,
                    c.email,
                    c.postcode,
                    c.plan,
                )
                for c in data.customers
            ],
        )
        self._insert_dated(data.orders, data.invoices, data.outages)

    def _replace_dated(self, today: date) -> None:
        """With the lock held and no transaction open: swap the dated tables for ``today``'s.

        Foreign keys are off meanwhile, so that a case naming a bill from before keeps it."""
        assert self.seed is not None and self.customers is not None
        orders, invoices, outages = generate_activity(self.seed, self.customers, today)
        self._conn.execute("PRAGMA foreign_keys = OFF")
        try:
            with self._conn:
                for table in ("orders", "invoices", "outages"):
                    self._conn.execute(f"DELETE FROM {table}")
                self._insert_dated(orders, invoices, outages)
                self._set_meta({"today": today.isoformat()})
        finally:
            self._conn.execute("PRAGMA foreign_keys = ON")

    def _insert_dated(self, orders: Iterable[Order], invoices: Iterable[Invoice], outages: Iterable[Outage]) -> None:
        conn = self._conn
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    o.order_id,
                    o.customer_id,
                    o.item,
                    o.status,
                    o.placed_on.isoformat(),
                    _iso(o.eta),
                    _iso(o.delivered_on),
                    o.carrier,
                    o.tracking_number,
                )
                for o in orders
            ],
        )
        conn.executemany(
            "INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (i.invoice_id, i.customer_id, i.period, i.amount, i.due_date.isoformat(), i.status, _iso(i.paid_on))
                for i in invoices
            ],
        )
        conn.executemany(
            "INSERT INTO outages VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    o.outage_id,
                    o.postcode,
                    o.service,
                    o.status,
                    o.started_at.isoformat(),
                    o.estimated_fix.isoformat(),
                    o.description,
                )
                for o in outages
            ],
        )

    # -- reads ---------------------------------------------------------------

    def customer_count(self) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM customers")
        return int(row["n"]) if row else 0

    def customer(self, customer_id: str) -> Row | None:
        """Public profile fields (never the PIN salt or hash)."""
        return self._one(f"SELECT {PUBLIC_CUSTOMER_COLUMNS} FROM customers WHERE customer_id = ?", (customer_id,))

    def credentials_by_account(self, account_number: str) -> Row | None:
        """Internal: the fields needed to verify a caller by account number."""
        return self._one(
            "SELECT customer_id, first_name, pin_salt, pin_hash, dob FROM customers WHERE account_number = ?",
            (account_number,),
        )

    def credentials_by_phone(self, phone: str) -> Row | None:
        """Internal: the fields needed to verify a caller by phone number."""
        return self._one(
            "SELECT customer_id, first_name, pin_salt, pin_hash, dob FROM customers WHERE phone = ?", (phone,)
        )

    def orders(self, customer_id: str) -> list[Row]:
        """Orders, newest first."""
        return self._all(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = ? ORDER BY placed_on DESC, order_id DESC",
            (customer_id,),
        )

    def order(self, customer_id: str, order_id: str) -> Row | None:
        return self._one(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = ? AND order_id = ?", (customer_id, order_id)
        )

    def invoices(self, customer_id: str) -> list[Row]:
        """Invoices, newest period first."""
        return self._all(
            f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE customer_id = ? ORDER BY period DESC", (customer_id,)
        )

    def invoice(self, customer_id: str, invoice_id: str) -> Row | None:
        return self._one(
            f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE customer_id = ? AND invoice_id = ?",
            (customer_id, invoice_id),
        )

    def outages(self, postcode: str) -> list[Row]:
        return self._all(f"SELECT {OUTAGE_COLUMNS} FROM outages WHERE postcode = ? ORDER BY started_at", (postcode,))

    def cases(self, customer_id: str) -> list[Row]:
        """Cases, newest first."""
        return self._all(f"SELECT {CASE_COLUMNS} FROM cases WHERE customer_id = ? ORDER BY seq DESC", (customer_id,))

    # -- writes --------------------------------------------------------------

    def create_case(
        self,
        customer_id: str,
        type: str,
        amount: float | None,
        reason: str,
        invoice_id: str | None,
        created_at: str,
    ) -> Row:
        """Insert an open case; ids are sequential: CASE-000001, CASE-000002, ..."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO cases (customer_id, type, amount, reason, invoice_id, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (customer_id, type, amount, reason, invoice_id, created_at),
            )
            seq = cur.lastrowid
            case_id = f"CASE-{seq:06d}"
            conn.execute("UPDATE cases SET case_id = ? WHERE seq = ?", (case_id, seq))
            row = conn.execute(f"SELECT {CASE_COLUMNS} FROM cases WHERE seq = ?", (seq,)).fetchone()
        return dict(row)


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None
