"""FastAPI application for the Harbor Telecom demo backend.

Every ``/api/...`` route requires ``Authorization: Bearer <api_key>``; ``/health``
is open. PINs are verified here but never returned by any route.

The data is dated relative to a day: a fixed one if ``today`` is given, else the
real date, and then the first ``/api`` call on a new day draws the dated data
(orders, invoices, outages) again, so a backend left running stays current.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .data import DEFAULT_CUSTOMERS, DEFAULT_SEED, pin_matches
from .db import HarborDB, Row

CaseType = Literal[
    "billing_dispute", "refund_request", "technical_fault", "delivery_issue", "complaint", "callback_request", "other"
]

# Used to spend the same hashing work on unknown accounts as on wrong PINs.
_DUMMY_SALT = "00" * 16
_DUMMY_HASH = "00" * 32


class VerifyRequest(BaseModel):
    """Identify by account number or phone; prove it with a PIN or (account number only) date of birth."""

    model_config = ConfigDict(extra="forbid")

    account_number: str | None = Field(default=None, pattern=r"^\d{8}$")
    phone: str | None = Field(default=None, pattern=r"^\+[1-9]\d{6,14}$")
    pin: str | None = Field(default=None, pattern=r"^\d{4}$")
    dob: date | None = None

    @model_validator(mode="after")
    def _one_identifier_one_secret(self) -> VerifyRequest:
        if (self.account_number is None) == (self.phone is None):
            raise ValueError("give exactly one of account_number or phone")
        if (self.pin is None) == (self.dob is None):
            raise ValueError("give exactly one of pin or dob")
        if self.phone is not None and self.dob is not None:
            raise ValueError("phone must be verified with a pin")
        return self


class CaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: CaseType
    amount: float | None = Field(default=None, ge=0, le=10_000)
    reason: str = Field(min_length=1, max_length=1000)
    invoice_id: str | None = None


def balance_of(invoices: list[Row]) -> dict[str, Any]:
    """Summarise what is owed: all unpaid invoices, dated by the oldest one."""
    unpaid = sorted((i for i in invoices if i["status"] != "paid"), key=lambda i: str(i["due_date"]))
    paid = sorted((i for i in invoices if i["status"] == "paid"), key=lambda i: str(i["paid_on"]), reverse=True)
    last_payment = (
        {"invoice_id": paid[0]["invoice_id"], "amount": paid[0]["amount"], "paid_on": paid[0]["paid_on"]}
        if paid
        else None
    )
    if not unpaid:
        return {
            "amount_due": 0.0,
            "due_date": None,
            "status": "paid",
            "invoice_id": None,
            "unpaid_invoice_ids": [],
            "last_payment": last_payment,
        }
    return {
        "amount_due": round(sum(float(i["amount"]) for i in unpaid), 2),
        "due_date": unpaid[0]["due_date"],
        "status": "overdue" if any(i["status"] == "overdue" for i in unpaid) else "due",
        "invoice_id": unpaid[0]["invoice_id"],
        "unpaid_invoice_ids": [i["invoice_id"] for i in unpaid],
        "last_payment": last_payment,
    }


def create_app(
    db_path: str | Path,
    api_key: str,
    seed: int = DEFAULT_SEED,
    customers: int = DEFAULT_CUSTOMERS,
    today: date | None = None,
    *,
    clock: Callable[[], date] = date.today,
) -> FastAPI:
    """Build the app; the SQLite file is created and seeded now if it is empty.

    The data is for ``today``; without it, for ``clock()`` (the real date), checked again on
    each ``/api`` call so that the dated data moves on with the date.
    """
    if not api_key:
        raise ValueError("api_key must not be empty")
    db = HarborDB(db_path)
    db.initialise(seed, customers, today if today is not None else clock())
    expected = api_key.encode()

    def require_key(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
            )

    def keep_current() -> None:
        if today is None:
            now = clock()
            if now != db.today:
                db.refresh(now)

    def customer_or_404(customer_id: str) -> Row:
        row = db.customer(customer_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "customer not found")
        return row

    app = FastAPI(title="Harbor Telecom demo backend", version="0.1.0")
    app.state.db = db
    api = APIRouter(prefix="/api", dependencies=[Depends(require_key), Depends(keep_current)])

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "customers": db.customer_count()}

    @api.post("/verify")
    def verify(body: VerifyRequest) -> dict[str, Any]:
        if body.account_number is not None:
            record = db.credentials_by_account(body.account_number)
        else:
            record = db.credentials_by_phone(str(body.phone))
        if body.pin is not None:
            if record is None:
                pin_matches(body.pin, _DUMMY_SALT, _DUMMY_HASH)
                ok = False
            else:
                ok = pin_matches(body.pin, record["pin_salt"], record["pin_hash"])
        else:
            ok = record is not None and hmac.compare_digest(str(record["dob"]), str(body.dob))
        if not ok or record is None:
            return {"verified": False, "reason": "no_match"}
        return {"verified": True, "customer_id": record["customer_id"], "first_name": record["first_name"]}

    @api.get("/customers/{customer_id}")
    def get_customer(customer_id: str) -> Row:
        return customer_or_404(customer_id)

    @api.get("/customers/{customer_id}/orders")
    def list_orders(customer_id: str) -> dict[str, list[Row]]:
        customer_or_404(customer_id)
        return {"orders": db.orders(customer_id)}

    @api.get("/customers/{customer_id}/orders/latest")
    def latest_order(customer_id: str) -> Row:
        customer_or_404(customer_id)
        orders = db.orders(customer_id)
        if not orders:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no orders")
        return orders[0]

    @api.get("/customers/{customer_id}/orders/{order_id}")
    def get_order(customer_id: str, order_id: str) -> Row:
        customer_or_404(customer_id)
        order = db.order(customer_id, order_id)
        if order is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "order not found")
        return order

    @api.get("/customers/{customer_id}/invoices")
    def list_invoices(customer_id: str) -> dict[str, list[Row]]:
        customer_or_404(customer_id)
        return {"invoices": db.invoices(customer_id)}

    @api.get("/customers/{customer_id}/balance")
    def get_balance(customer_id: str) -> dict[str, Any]:
        customer_or_404(customer_id)
        return balance_of(db.invoices(customer_id))

    @api.post("/customers/{customer_id}/cases", status_code=status.HTTP_201_CREATED)
    def create_case(customer_id: str, body: CaseRequest) -> Row:
        customer_or_404(customer_id)
        amount = round(body.amount, 2) if body.amount is not None else None
        if body.invoice_id is not None:
            invoice = db.invoice(customer_id, body.invoice_id)
            if invoice is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "invoice not found")
            if amount is not None and amount > float(invoice["amount"]):
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "amount exceeds the invoice amount")
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        return db.create_case(customer_id, body.type, amount, body.reason, body.invoice_id, created_at)

    @api.get("/customers/{customer_id}/cases")
    def list_cases(customer_id: str) -> dict[str, list[Row]]:
        customer_or_404(customer_id)
        return {"cases": db.cases(customer_id)}

    @api.get("/outages")
    def outages(postcode: Annotated[str, Query(pattern=r"^\d{5}$")]) -> dict[str, Any]:
        return {"postcode": postcode, "outages": db.outages(postcode)}

    app.include_router(api)
    return app
