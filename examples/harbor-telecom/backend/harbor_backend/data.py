"""Deterministic synthetic data for the Harbor Telecom demo backend.

Everything here is a pure function of ``(seed, n_customers, reference_date)``:
the same arguments always produce the same customers, orders, invoices and
outages, so tests can regenerate the data instead of reading it back.

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
REFERENCE_DATE = date(2026, 11, 1)

# A 4-digit PIN has only 10,000 values, so no amount of key stretching protects
# a leaked database; the hash just keeps PINs out of plaintext. A modest
# iteration count keeps seeding (one hash per customer) fast.
PIN_HASH_ITERATIONS = 2_000

OrderStatus = Literal["processing", "shipped", "out_for_delivery", "delivered", "cancelled"]
InvoiceStatus = Literal["paid", "due", "overdue"]
Service = Literal["broadband", "mobile", "tv"]

FIRST_NAMES: tuple[str, ...] = (
    "Ana", "Liam", "Priya", "Mateo", "Chloe", "Kwame", "Sofia", "Hiroshi", "Amara", "Lucas",
    "Fatima", "Oliver", "Mei", "Diego", "Zara", "Noah", "Aisha", "Ethan", "Ingrid", "Ravi",
    "Elena", "Tomasz", "Yasmin", "Jonah", "Leila", "Marcus", "Nadia", "Samuel", "Freya", "Omar",
    "Grace", "Kenji", "Lucia", "Aaron", "Siobhan", "Tariq", "Hannah", "Mohammed", "Isla", "Pedro",
    "Chiara", "Daniel", "Esi", "Felix", "Gabriela", "Hugo", "Imani", "Jakub", "Keiko", "Leon",
    "Maya", "Nikos", "Olga", "Pablo", "Rosa", "Sven", "Thandiwe", "Uma", "Victor", "Wen",
)

LAST_NAMES: tuple[str, ...] = (
    "Silva", "Okafor", "Nguyen", "Schmidt", "Patel", "Kowalski", "Garcia", "Tanaka", "Murphy", "Haddad",
    "Johansson", "Mensah", "Rossi", "Chen", "Dubois", "Ibrahim", "Fernandes", "O'Brien", "Novak", "Kim",
    "Alvarez", "Andersen", "Bianchi", "Castro", "Dimitrov", "Eriksen", "Fischer", "Gonzalez", "Hughes", "Ito",
    "Jensen", "Kaur", "Lindqvist", "Moreau", "Nakamura", "Osei", "Petrov", "Quinn", "Rahman", "Santos",
    "Thompson", "Usman", "Varga", "Walsh", "Xu", "Yilmaz", "Zhang", "Abbott", "Banerjee", "Costa",
    "Doyle", "Esposito", "Farouk", "Gallagher", "Horvat", "Iyer", "Jovanovic", "Kelly", "Larsen", "Mwangi",
)

# Fixed pool of postcodes: several customers share each one.
POSTCODES: tuple[str, ...] = (
    "20417", "20583", "21146", "22809", "23351", "24470", "25192", "26038", "27615", "28364",
    "30129", "31572", "32806", "33941", "34287", "35510", "36673", "37024", "38195", "39452",
    "40718", "41386", "42259", "43607", "44830",
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
    "Harbor Hub 6 router", "Harbor Mesh Extender (2-pack)", "Nimbus X12 phone 128GB",
    "Nimbus X12 Pro phone 256GB", "Orca Lite phone 64GB", "Orca Fold phone 512GB",
    "Harbor SIM kit", "Harbor eSIM activation pack", "StreamBox 4K TV box",
    "Pulse Buds wireless earbuds", "Harbor 5G home modem", "Tidewatch smartwatch",
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
    reference_date: date
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


def _draw(
    seed: int, n_customers: int, reference_date: date
) -> tuple[list[tuple[Customer, str]], list[Order], list[Invoice], list[Outage]]:
    """Draw all data with plaintext PINs (the customers' ``pin_hash`` is left empty)."""
    if not 1 <= n_customers <= 9999:
        raise ValueError("n_customers must be between 1 and 9999")
    rng = random.Random(seed)
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
            dob=reference_date - timedelta(days=rng.randint(18 * 365 + 5, 85 * 365)),
            phone="+1555" + _unique_digits(rng, 7, phones, first_nonzero=False),
            email=f"{email_local}{i}@example.net",
            postcode=rng.choice(POSTCODES),
            plan=plan,
        )
        customers.append((customer, pin))
        orders.extend(_draw_orders(rng, customer_id, i <= 50, reference_date, order_ids))
        invoices.extend(_draw_invoices(rng, customer_id, PLANS[plan], reference_date))

    return customers, orders, invoices, draw_outages(seed, reference_date)


def _draw_orders(
    rng: random.Random, customer_id: str, at_least_one: bool, ref: date, used_ids: set[str]
) -> list[Order]:
    count = rng.randint(1 if at_least_one else 0, 3)
    result: list[Order] = []
    for _ in range(count):
        placed_on = ref - timedelta(days=rng.randint(0, 60))
        age = (ref - placed_on).days
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
            eta = ref + timedelta(days=rng.randint(2, 6))
        elif status == "shipped":
            eta = ref + timedelta(days=rng.randint(1, 4))
        elif status == "out_for_delivery":
            eta = ref
        elif status == "delivered":
            delivered_on = min(ref, placed_on + timedelta(days=rng.randint(1, 5)))
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


def _draw_invoices(rng: random.Random, customer_id: str, monthly: float, ref: date) -> list[Invoice]:
    """The last three monthly invoices; each is due on the 20th of the following month."""
    result: list[Invoice] = []
    for months_back in (3, 2, 1):
        period_start = _add_months(ref, -months_back)
        due_date = _add_months(period_start, 1).replace(day=20)
        amount = round(monthly + rng.choice((0.0, 0.0, 0.0, 4.99, 7.50, 12.25)), 2)
        if due_date >= ref:
            status: InvoiceStatus = "paid" if rng.random() < 0.35 else "due"
        else:
            status = "overdue" if rng.random() < 0.08 else "paid"
        paid_on = due_date - timedelta(days=rng.randint(0, 12)) if status == "paid" else None
        if paid_on is not None and paid_on > ref:
            paid_on = ref - timedelta(days=rng.randint(0, 3))
        result.append(
            Invoice(
                invoice_id=f"INV-{customer_id[1:]}-{period_start:%Y%m}",
                customer_id=customer_id,
                period=f"{period_start:%Y-%m}",
                amount=amount,
                due_date=due_date,
                status=status,
                paid_on=paid_on,
            )
        )
    return result


def draw_outages(seed: int = DEFAULT_SEED, reference_date: date = REFERENCE_DATE) -> list[Outage]:
    """Active outages, one each for a few postcodes; depends only on the seed, not the customer count."""
    rng = random.Random(f"harbor-outages:{seed}")
    ref = reference_date
    morning = datetime.combine(ref, time(9, 0))
    result: list[Outage] = []
    for n, postcode in enumerate(sorted(rng.sample(POSTCODES, OUTAGE_POSTCODES_COUNT)), start=1):
        service: Service = rng.choice(("broadband", "mobile", "tv"))
        started_at = morning - timedelta(minutes=rng.randint(30, 20 * 60))
        result.append(
            Outage(
                outage_id=f"OUT-{n:04d}",
                postcode=postcode,
                service=service,
                status=rng.choice(OUTAGE_STATUSES),
                started_at=started_at,
                estimated_fix=morning + timedelta(minutes=rng.randint(2, 30) * 30),
                description=rng.choice(OUTAGE_DESCRIPTIONS[service]),
            )
        )
    return result


def generate(
    seed: int = DEFAULT_SEED,
    n_customers: int = DEFAULT_CUSTOMERS,
    reference_date: date = REFERENCE_DATE,
) -> Dataset:
    """Generate the full dataset; PINs appear only as salted hashes."""
    drawn, orders, invoices, outages = _draw(seed, n_customers, reference_date)
    customers = tuple(replace(c, pin_hash=hash_pin(pin, c.pin_salt)) for c, pin in drawn)
    return Dataset(
        seed=seed,
        reference_date=reference_date,
        customers=customers,
        orders=tuple(orders),
        invoices=tuple(invoices),
        outages=tuple(outages),
    )


def demo_credentials(
    seed: int = DEFAULT_SEED,
    n: int = DEFAULT_CUSTOMERS,
    reference_date: date = REFERENCE_DATE,
) -> list[dict[str, str]]:
    """Plaintext credentials for trying the demo (test-fixture view; never served over HTTP)."""
    drawn, _, _, _ = _draw(seed, n, reference_date)
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

