"""Deterministic synthetic data for the Harbor Telecom demo backend.

Everything here is a pure function of ``(seed, n_customers, today)``: the same
arguments always produce the same customers, orders, invoices and outages, so
tests can regenerate the data instead of reading it back. ``today`` defaults to
the real date, so the demo looks current on any day: orders were placed in the
last weeks and are delivered around now, the latest bills are due in the coming
weeks, outages began yesterday and are expected fixed tomorrow. Pass ``today``
to pin it.

Customers (names, account numbers, PINs, dates of birth, phones, postcodes) do
not depend on ``today``: the demo credentials are the same on every day.

PINs are drawn in plaintext, then stored only as salted PBKDF2 hashes. The
plaintext view is exposed solely through :func:`demo_credentials`, which exists
so people (and tests) can try the demo; the HTTP API never returns PINs.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Literal

DEFAULT_SEED = 7
DEFAULT_CUSTOMERS = 300
# Dates of birth are drawn back from this fixed date, not from today, so that a
# customer's date of birth (a verification secret) never changes.
DOB_REFERENCE = date(2026, 11, 1)
# A bill is due this many days after it is issued; each customer is billed on their own day of the month.
BILL_DUE_DAYS = 21

# A 4-digit PIN has only 10,000 values, so no amount of key stretching protects
# a leaked database; the hash just keeps PINs out of plaintext. A modest
# iteration count keeps seeding (one hash per customer) fast.
PIN_HASH_ITERATIONS = 2_000

OrderStatus = Literal["processing", "shipped", "out_for_delivery", "delivered", "cancelled"]
InvoiceStatus = Literal["paid", "due", "overdue"]
Service = Literal["broadband", "mobile", "tv"]

FIRST_NAMES: tuple[str, ...] = (
    "Ana",
    "Liam",
    "Priya",
    "Mateo",
    "Chloe",
    "Kwame",
    "Sofia",
    "Hiroshi",
    "Amara",
    "Lucas",
    "Fatima",
    "Oliver",
    "Mei",
    "Diego",
    "Zara",
    "Noah",
    "Aisha",
    "Ethan",
    "Ingrid",
    "Ravi",
    "Elena",
    "Tomasz",
    "Yasmin",
    "Jonah",
    "Leila",
    "Marcus",
    "Nadia",
    "Samuel",
    "Freya",
    "Omar",
    "Grace",
    "Kenji",
    "Lucia",
    "Aaron",
    "Siobhan",
    "Tariq",
    "Hannah",
    "Mohammed",
    "Isla",
    "Pedro",
    "Chiara",
    "Daniel",
    "Esi",
    "Felix",
    "Gabriela",
    "Hugo",
    "Imani",
    "Jakub",
    "Keiko",
    "Leon",
    "Maya",
    "Nikos",
    "Olga",
    "Pablo",
    "Rosa",
    "Sven",
    "Thandiwe",
    "Uma",
    "Victor",
    "Wen",
)

LAST_NAMES: tuple[str, ...] = (
    "Silva",
    "Okafor",
    "Nguyen",
    "Schmidt",
    "Patel",
    "Kowalski",
    "Garcia",
    "Tanaka",
    "Murphy",
    "Haddad",
    "Johansson",
    "Mensah",
    "Rossi",
    "Chen",
    "Dubois",
    "Ibrahim",
    "Fernandes",
    "O'Brien",
    "Novak",
    "Kim",
    "Alvarez",
    "Andersen",
    "Bianchi",
    "Castro",
    "Dimitrov",
    "Eriksen",
    "Fischer",
    "Gonzalez",
    "Hughes",
    "Ito",
    "Jensen",
    "Kaur",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Osei",
    "Petrov",
    "Quinn",
    "Rahman",
    "Santos",
    "Thompson",
    "Usman",
    "Varga",
    "Walsh",
    "Xu",
    "Yilmaz",
    "Zhang",
    "Abbott",
    "Banerjee",
    "Costa",
    "Doyle",
    "Esposito",
    "Farouk",
    "Gallagher",
    "Horvat",
    "Iyer",
    "Jovanovic",
    "Kelly",
    "Larsen",
    "Mwangi",
)

# Fixed pool of postcodes: several customers share each one.
POSTCODES: tuple[str, ...] = (
    "20417",
    "20583",
    "21146",
    "22809",
    "23351",
    "24470",
    "25192",
    "26038",
    "27615",
    "28364",
    "30129",
    "31572",
    "32806",
    "33941",
    "34287",
    "35510",
    "36673",
    "37024",
    "38195",
    "39452",
    "40718",
    "41386",
    "42259",
    "43607",
    "44830",
)

# Plan name -> monthly price.
PLANS: dict[str, float] = {
    "Fibre 100": 32.00,
    "Fibre 500": 45.00,
    "Fibre 1000": 62.00,
    "Mobile Essentials": 15.00,
    "Mobile Unlimited": 38.00,
    "Home Bundle (Fibre 500 + TV)": 74.00,
    "Family Mobile 4 Lines": 89.00,
}

ITEMS: tuple[str, ...] = (
    "Harbor Hub 6 router",
    "Harbor Mesh Extender (2-pack)",
    "Nimbus X12 phone 128GB",
    "Nimbus X12 Pro phone 256GB",
    "Orca Lite phone 64GB",
    "Orca Fold phone 512GB",
    "Harbor SIM kit",
    "Harbor eSIM activation pack",
    "StreamBox 4K TV box",
    "Pulse Buds wireless earbuds",
    "Harbor 5G home modem",
    "Tidewatch smartwatch",
)

CARRIERS: dict[str, str] = {"ParcelPoint": "PP", "SwiftHarbor Courier": "SH", "Northline Freight": "NL"}

OUTAGE_POSTCODES_COUNT = 6
OUTAGE_STATUSES: tuple[str, ...] = ("investigating", "engineer_assigned", "repair_in_progress")
OUTAGE_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "broadband": (
        "Fibre cable damaged during roadworks; broadband down or intermittent.",
        "Fault at the local exchange; broadband speeds severely reduced.",
    ),
    "mobile": (
        "Mobile mast offline after a power failure; no 4G/5G signal in the area.",
        "Network equipment fault; calls may fail and mobile data is slow.",
    ),
    "tv": (
        "TV platform fault; some channels unavailable and on-demand not loading.",
        "Signal distribution fault; TV boxes may show 'no signal'.",
    ),
}


@dataclass(frozen=True)
class Customer:
    customer_id: str
    first_name: str
    last_name: str
    account_number: str
    pin_salt: str  # hex
    pin_hash: str  # hex, PBKDF2-HMAC-SHA256 of the PIN
    dob: date
    phone: str
    email: str
    postcode: str
    plan: str


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    item: str
    status: OrderStatus
    placed_on: date
    eta: date | None
    delivered_on: date | None
    carrier: str | None
    tracking_number: str | None


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    customer_id: str
    period: str  # "YYYY-MM"
    amount: float
    due_date: date
    status: InvoiceStatus
    paid_on: date | None


@dataclass(frozen=True)
class Outage:
    outage_id: str
    postcode: str
    service: Service
    status: str
    started_at: datetime
    estimated_fix: datetime
    description: str


@dataclass(frozen=True)
class Dataset:
    seed: int
    today: date
    customers: tuple[Customer, ...]
    orders: tuple[Order, ...]
    invoices: tuple[Invoice, ...]
    outages: tuple[Outage, ...]


def hash_pin(pin: str, salt_hex: str) -> str:
    """Return the hex PBKDF2-HMAC-SHA256 hash of ``pin`` with the given hex salt."""
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), bytes.fromhex(salt_hex), PIN_HASH_ITERATIONS)
    return digest.hex()


def pin_matches(pin: str, salt_hex: str, pin_hash: str) -> bool:
    """Check ``pin`` against a stored salt and hash in constant time."""
    return hmac.compare_digest(hash_pin(pin, salt_hex), pin_hash)


def _resolve_today(today: date | None = None) -> date:
    """``today`` if given, else the real (local) date."""
    return date.today() if today is None else today


def _add_months(d: date, months: int) -> date:
    """First day of the month ``months`` away from ``d``'s month."""
    index = d.year * 12 + (d.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def _unique_digits(rng: random.Random, length: int, used: set[str], first_nonzero: bool) -> str:
    while True:
        first = str(rng.randint(1, 9)) if first_nonzero else str(rng.randint(0, 9))
        value = first + "".join(str(rng.randint(0, 9)) for _ in range(length - 1))
        if value not in used:
            used.add(value)
            return value


def _draw(seed: int, n_customers: int, today: date) -> tuple[list[tuple[Customer, str]], list[Order], list[Invoice]]:
    """Draw customers (with plaintext PINs; ``pin_hash`` is left empty), orders and invoices.

    One generator draws customers, orders and invoices in turn, and how many numbers it draws never
    depends on ``today``: so the customers are the same whatever the day. Billing days come from a
    second generator.
    """
    if not 1 <= n_customers <= 9999:
        raise ValueError("n_customers must be between 1 and 9999")
    rng = random.Random(seed)
    billing_rng = random.Random(f"harbor-billing:{seed}")
    accounts: set[str] = set()
    phones: set[str] = set()
    order_ids: set[str] = set()
    customers: list[tuple[Customer, str]] = []
    orders: list[Order] = []
    invoices: list[Invoice] = []

    for i in range(1, n_customers + 1):
        customer_id = f"C{i:04d}"
        first = rng.choice(FIRST_NAMES)
        last = rng.choice(LAST_NAMES)
        pin = f"{rng.randint(0, 9999):04d}"
        plan = rng.choice(sorted(PLANS))
        email_local = f"{first}.{last}".lower().replace("'", "")
        customer = Customer(
            customer_id=customer_id,
            first_name=first,
            last_name=last,
            account_number=_unique_digits(rng, 8, accounts, first_nonzero=True),
            pin_salt=rng.randbytes(16).hex(),
            pin_hash="",
            dob=DOB_REFERENCE - timedelta(days=rng.randint(18 * 365 + 5, 85 * 365)),
            phone="+1555" + _unique_digits(rng, 7, phones, first_nonzero=False),
            email=f"{email_local}{i}@example.net",
            postcode=rng.choice(POSTCODES),
            plan=plan,
        )
        customers.append((customer, pin))
        orders.extend(_draw_orders(rng, customer_id, i <= 50, today, order_ids))
        invoices.extend(_draw_invoices(rng, billing_rng, customer_id, PLANS[plan], today))

    return customers, orders, invoices


def _draw_orders(
    rng: random.Random, customer_id: str, at_least_one: bool, today: date, used_ids: set[str]
) -> list[Order]:
    """Orders placed in the last 60 days; those still on their way arrive in the next days."""
    count = rng.randint(1 if at_least_one else 0, 3)
    result: list[Order] = []
    for _ in range(count):
        placed_on = today - timedelta(days=rng.randint(0, 60))
        age = (today - placed_on).days
        # Recent orders are more likely still on their way.
        if age <= 2:
            status: OrderStatus = rng.choice(("processing", "processing", "shipped", "cancelled"))
        elif age <= 7:
            status = rng.choice(("processing", "shipped", "shipped", "out_for_delivery", "delivered", "cancelled"))
        else:
            status = rng.choice(("delivered", "delivered", "delivered", "delivered", "shipped", "cancelled"))
        eta: date | None = None
        delivered_on: date | None = None
        carrier: str | None = None
        tracking: str | None = None
        if status in ("shipped", "out_for_delivery", "delivered"):
            carrier = rng.choice(sorted(CARRIERS))
            tracking = CARRIERS[carrier] + "".join(str(rng.randint(0, 9)) for _ in range(10))
        if status == "processing":
            eta = today + timedelta(days=rng.randint(2, 6))
        elif status == "shipped":
            eta = today + timedelta(days=rng.randint(1, 4))
        elif status == "out_for_delivery":
            eta = today
        elif status == "delivered":
            delivered_on = min(today, placed_on + timedelta(days=rng.randint(1, 5)))
        result.append(
            Order(
                order_id="HT-" + _unique_digits(rng, 6, used_ids, first_nonzero=True),
                customer_id=customer_id,
                item=rng.choice(ITEMS),
                status=status,
                placed_on=placed_on,
                eta=eta,
                delivered_on=delivered_on,
                carrier=carrier,
                tracking_number=tracking,
            )
        )
    return result


def _draw_invoices(
    rng: random.Random, billing_rng: random.Random, customer_id: str, monthly: float, today: date
) -> list[Invoice]:
    """The last three monthly bills, oldest first.

    Each customer is billed on their own day of the month (1-28), so the newest bill was issued
    within the last month (``period`` is the month it was issued in), and it is due
    ``BILL_DUE_DAYS`` later. The two older bills are paid, or now and then overdue. The newest is
    paid early about a third of the time; otherwise it is due (its due date is today or later) or,
    once that date has passed, mostly paid by then and sometimes overdue. Payments are never after
    ``today`` nor before the bill.
    """
    billing_day = billing_rng.randint(1, 28)
    paid_by_due_date = billing_rng.random() < 0.85  # the newest bill, if its due date has passed
    days_before_due = billing_rng.randint(0, 12)
    latest = today if billing_day <= today.day else _add_months(today, -1)
    result: list[Invoice] = []
    for months_back in (2, 1, 0):
        issued_on = _add_months(latest, -months_back).replace(day=billing_day)
        due_date = issued_on + timedelta(days=BILL_DUE_DAYS)
        amount = round(monthly + rng.choice((0.0, 0.0, 0.0, 4.99, 7.50, 12.25)), 2)
        paid_on: date | None = None
        if months_back:
            if rng.random() >= 0.08:
                paid_on = due_date - timedelta(days=rng.randint(0, 12))
        elif rng.random() < 0.35:
            paid_on = due_date - timedelta(days=rng.randint(0, 12))
            lately = today - timedelta(days=rng.randint(0, 3))
            if paid_on > today:
                paid_on = max(issued_on, lately)
        elif due_date < today and paid_by_due_date:
            paid_on = due_date - timedelta(days=days_before_due)
        if paid_on is not None:
            status: InvoiceStatus = "paid"
        else:
            status = "due" if due_date >= today else "overdue"
        result.append(
            Invoice(
                invoice_id=f"INV-{customer_id[1:]}-{issued_on:%Y%m}",
                customer_id=customer_id,
                period=f"{issued_on:%Y-%m}",
                amount=amount,
                due_date=due_date,
                status=status,
                paid_on=paid_on,
            )
        )
    return result


def draw_outages(seed: int = DEFAULT_SEED, today: date | None = None) -> list[Outage]:
    """Active outages, one each for a few postcodes; depends only on the seed and the day, not the
    customer count. Which postcodes, services and descriptions depends on the seed alone.

    Each outage began yesterday (between 4 am and 11:30 pm) and is expected fixed tomorrow (between
    7 am and 9 pm): whatever the time of ``today``, it has begun and is not fixed yet.
    """
    rng = random.Random(f"harbor-outages:{seed}")
    midnight = datetime.combine(_resolve_today(today), time(0, 0))
    tomorrow_morning = midnight + timedelta(days=1, hours=6)
    result: list[Outage] = []
    for n, postcode in enumerate(sorted(rng.sample(POSTCODES, OUTAGE_POSTCODES_COUNT)), start=1):
        service: Service = rng.choice(("broadband", "mobile", "tv"))
        started_at = midnight - timedelta(minutes=rng.randint(30, 20 * 60))
        status = rng.choice(OUTAGE_STATUSES)
        estimated_fix = tomorrow_morning + timedelta(minutes=rng.randint(2, 30) * 30)
        result.append(
            Outage(
                outage_id=f"OUT-{n:04d}",
                postcode=postcode,
                service=service,
                status=status,
                started_at=started_at,
                estimated_fix=estimated_fix,
                description=rng.choice(OUTAGE_DESCRIPTIONS[service]),
            )
        )
    return result


def generate(seed: int = DEFAULT_SEED, n_customers: int = DEFAULT_CUSTOMERS, today: date | None = None) -> Dataset:
    """Generate the full dataset for ``today`` (default: the real date); PINs appear only as salted hashes."""
    today = _resolve_today(today)
    drawn, orders, invoices = _draw(seed, n_customers, today)
    customers = tuple(replace(c, pin_hash=hash_pin(pin, c.pin_salt)) for c, pin in drawn)
    return Dataset(
        seed=seed,
        today=today,
        customers=customers,
        orders=tuple(orders),
        invoices=tuple(invoices),
        outages=tuple(draw_outages(seed, today)),
    )


def generate_activity(
    seed: int = DEFAULT_SEED, n_customers: int = DEFAULT_CUSTOMERS, today: date | None = None
) -> tuple[list[Order], list[Invoice], list[Outage]]:
    """Only the dated data (orders, invoices, outages) of :func:`generate`, without hashing PINs:
    what a database seeded on another day replaces."""
    today = _resolve_today(today)
    _, orders, invoices = _draw(seed, n_customers, today)
    return orders, invoices, draw_outages(seed, today)


def demo_credentials(seed: int = DEFAULT_SEED, n: int = DEFAULT_CUSTOMERS) -> list[dict[str, str]]:
    """Plaintext credentials for trying the demo (test-fixture view; never served over HTTP).
    They are the same on every day."""
    drawn, _, _ = _draw(seed, n, DOB_REFERENCE)  # customers do not depend on the day
    return [
        {
            "customer_id": c.customer_id,
            "account_number": c.account_number,
            "pin": pin,
            "dob": c.dob.isoformat(),
            "phone": c.phone,
            "postcode": c.postcode,
            "first_name": c.first_name,
        }
        for c, pin in drawn
    ]
