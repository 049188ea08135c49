"""Data-subject requests: find every record of a person, erase them with a receipt, and legal holds.

A subject is named by any of a customer id, a phone number and an account number. What the
platform holds about them is resolved from the store itself:

- their sessions: verified as their customer id, or where the caller gave their account number
  and was not verified as somebody else (the escalation packet's identity block, the slots);
- everything recorded under those sessions (any table with a ``session_id`` column);
- mentions elsewhere: every text and JSON column of every other table is scanned for their
  customer id, account number and phone — written or spoken ("five five five …", via the
  runtime's spoken-number normaliser) — their full name when the platform holds one (a lone
  first name is not identifying and is only removed with their own sessions), and the
  pseudonymous ``ref:`` references the runtime writes into events (keyed with the salt, so found
  only when the salt is given) and the unkeyed ``sha256:`` ones of earlier releases.

``erase`` deletes their sessions and everything under them and replaces every other mention
with a typed placeholder (``<ACCOUNT_NUMBER>``, ``<PHONE>``, …). The audit chain is never
touched: the erasure is recorded there as one event holding only a keyed hash (HMAC-SHA256
with an installation secret) of the subject. A legal hold blocks erasure (``LegalHoldError``)
and retention purge for the subject until released; holding and releasing are audited too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import JSON, Connection, String, Table, Text, cast, delete, insert, or_, select, update

from voxgate.compliance.audit import AuditEvent, AuditLog
from voxgate.compliance.recording import drop_unused_keys
from voxgate.errors import ConflictError, InvalidError, VoxgateError
from voxgate.runtime.nlu.numbers import normalize_numbers
from voxgate.store.db import Database
from voxgate.store.desk_models import CallbackRequestRow
from voxgate.store.files import create_private
from voxgate.store.models import HandoffRow, LegalHoldRow, PrivacyRequestRow, SessionRow, TurnRow
from voxgate.store.schema import reflect

log = logging.getLogger("voxgate.compliance.privacy")

# Never scanned or changed: the append-only audit chain, schema bookkeeping, and this module's own
# receipts and holds (which hold hashes, or identifiers on purpose while a hold is active).
SKIPPED_TABLES = frozenset({"audit_events", "audit_checkpoints", "alembic_version", "legal_holds", "privacy_requests"})
MatchKind = Literal["session", "customer_id", "account_number", "phone", "name", "reference"]
PLACEHOLDERS: dict[str, str] = {
    "customer_id": "<CUSTOMER_ID>",
    "account_number": "<ACCOUNT_NUMBER>",
    "phone": "<PHONE>",
    "name": "<PERSON>",
    "reference": "<REF>",
}
_CHUNK = 500
_HOLDS = LegalHoldRow.__table__
_MIN_SUBSTRING_DIGITS = 6  # shorter digit identifiers must be a whole spoken/written number, not part of one
_SEPARATORS = re.compile(r"[\s\-./(),+]*")
_MAYBE_NUMBER = re.compile(
    r"\d|\b(?:zero|nought|oh|o|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
    r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
    r"eighty|ninety|hundred|thousand|double|triple)\b",
    re.IGNORECASE,
)


class PrivacyError(VoxgateError, ValueError):
    """A data-subject request that cannot be carried out; the message says why. Each kind has its category."""


class PrivacyRequestError(PrivacyError, InvalidError):
    """The request breaks a rule: no usable identifier, no reason, a salt too short."""


class LegalHoldError(PrivacyError, ConflictError):
    """The subject is under an active legal hold: erasure is refused until it is released."""

    def __init__(self, hold: LegalHold):
        self.hold = hold
        super().__init__(
            f"erasure refused: the subject is under legal hold {hold.id} since "
            f"{hold.created_at:%Y-%m-%d} (reason: {hold.reason}); release the hold first"
        )


# ---- boundary models -------------------------------------------------------------------------------


class Subject(BaseModel):
    """Who a request is about: at least one of a customer id, a phone number and an account number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_id: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=40)
    account_number: str | None = Field(default=None, max_length=40)

    @field_validator("customer_id")
    @classmethod
    def _customer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or not value.isprintable() or len(value) < 2:
            raise ValueError("customer id must be at least 2 printable characters")
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if re.search(r"[^\d\s\-.()+]", value) or value.count("+") > 1 or ("+" in value and not value.startswith("+")):
            raise ValueError(
                f"'{value}' is not a phone number: use digits, spaces, dashes, brackets, an optional leading +"
            )
        digits = re.sub(r"\D", "", value)
        if not 7 <= len(digits) <= 15:
            raise ValueError(f"a phone number has 7 to 15 digits, not {len(digits)}")
        return ("+" if value.startswith("+") else "") + digits

    @field_validator("account_number")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = re.sub(r"[\s\-]", "", value)
        if not digits.isdigit() or not 4 <= len(digits) <= 34:
            raise ValueError(f"an account number is 4 to 34 digits (spaces and dashes allowed), not '{value}'")
        return digits

    @model_validator(mode="after")
    def _something(self) -> Subject:
        if not (self.customer_id or self.phone or self.account_number):
            raise ValueError("name the subject: give a customer id, a phone number or an account number")
        return self

    def canonical(self) -> str:
        return json.dumps({"a": self.account_number, "c": self.customer_id, "p": self.phone}, sort_keys=True)


class Record(BaseModel):
    """One stored row that holds data of the subject: `field` is the column, `match` why it matched."""

    table: str
    id: str
    field: str
    match: MatchKind


class Receipt(BaseModel):
    """What an erasure did: rows deleted and rows anonymised per table, under a request id."""

    request_id: str
    subject_hash: str
    at: dt.datetime
    deleted: dict[str, int]
    anonymised: dict[str, int]
    audit_seq: int | None = None

    @property
    def total(self) -> int:
        return sum(self.deleted.values()) + sum(self.anonymised.values())


class LegalHold(BaseModel):
    id: str
    subject_hash: str
    reason: str
    created_by: str
    created_at: dt.datetime
    released_at: dt.datetime | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None


def subject_from(customer_id: str | None, phone: str | None, account_number: str | None) -> Subject:
    """The privacy subject a request names, by customer id, phone number or account number."""
    from pydantic import ValidationError

    try:
        return Subject(customer_id=customer_id, phone=phone, account_number=account_number)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{err['loc'][0]}: " if err["loc"] else "") + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise PrivacyRequestError(problems) from None


# ---- the installation secret for subject hashes ----------------------------------------------------


def load_salt(path: str | Path) -> bytes:
    """The installation's secret for subject hashes: read from `path`, created (0600) on first use."""
    path = Path(path)
    if path.is_file():
        salt = path.read_bytes()
        if len(salt) < 16:
            raise PrivacyRequestError(f"{path}: the privacy salt is {len(salt)} bytes, at least 16 are needed")
        return salt
    create_private(path, secrets.token_bytes(32))  # False: another process made it first; read theirs
    return path.read_bytes()


def subject_hash(subject: Subject, salt: bytes) -> str:
    """HMAC-SHA256 of the subject's identifiers: the only trace of them the audit chain keeps."""
    if len(salt) < 16:
        raise PrivacyRequestError("the privacy salt must be at least 16 bytes")
    return hmac.new(salt, subject.canonical().encode("utf-8"), hashlib.sha256).hexdigest()


def runtime_ref(value: str, salt: bytes) -> str:
    """The pseudonymous reference a worker's runtime writes into events for an account number or
    customer id: keyed with the installation's privacy salt, so that someone who reads events (an
    auditor, an exported log) cannot recover an 8-digit account by hashing every candidate."""
    return "ref:" + hmac.new(salt, f"ref={value}".encode(), hashlib.sha256).hexdigest()[:20]


def legacy_runtime_ref(value: str) -> str:
    """The unkeyed reference events held before references were keyed: still found and erased."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


class RuntimeRefs:
    """`runtime_ref` with the salt at `salt_path`, read (or created) once: the worker's runtimes'
    pseudonymiser. Call `load()` from a thread at start-up so no conversation waits on the file."""

    def __init__(self, salt_path: str | Path) -> None:
        self._path = Path(salt_path)
        self._salt: bytes | None = None
        self._lock = threading.Lock()

    def load(self) -> bytes:
        if self._salt is None:
            with self._lock:
                self._salt = self._salt or load_salt(self._path)
        return self._salt

    def __call__(self, value: str) -> str:
        return runtime_ref(value, self.load())


# ---- identifiers and how they are matched in text --------------------------------------------------


@dataclass
class _Identifiers:
    customer_ids: set[str] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)

    def size(self) -> int:
        return len(self.customer_ids) + len(self.accounts) + len(self.phones) + len(self.names)

    def keys(self) -> set[tuple[str, str]]:
        """Comparable forms, to tell whether two subjects overlap."""
        out = {("c", c.lower()) for c in self.customer_ids} | {("a", a) for a in self.accounts}
        return out | {("p", d) for p in self.phones for d in _phone_targets(p)}


def _phone_targets(phone: str) -> set[str]:
    """Digit strings that identify `phone` inside a longer number: its national number."""
    digits = re.sub(r"\D", "", phone)
    targets = {digits.lstrip("0") or digits}
    for candidate in [phone] if phone.startswith("+") else ["+" + digits]:
        try:
            parsed = phonenumbers.parse(candidate, None)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            nsn = phonenumbers.national_significant_number(parsed)
            if len(nsn) >= 7:
                targets.add(nsn)
    if phone.startswith("+"):
        targets.discard(digits)  # the national number is part of every way it is written
    return {t for t in targets if len(t) >= 7} or {digits}


class _Matcher:
    """Finds the subject's identifiers in text, written or spoken, and replaces them."""

    def __init__(self, ids: _Identifiers, *, names: bool, salt: bytes | None = None) -> None:
        literals: list[tuple[str, str]] = []
        self.digits: list[tuple[str, str]] = []  # (kind, digit string)
        for cid in ids.customer_ids:
            if cid.isdigit():
                self.digits.append(("customer_id", cid))
            else:
                literals.append(("customer_id", re.escape(cid)))
        self.digits += [("account_number", a) for a in ids.accounts]
        self.digits += [("phone", t) for p in ids.phones for t in _phone_targets(p)]
        values = ids.customer_ids | ids.accounts | {v for p in ids.phones for v in {p, re.sub(r"\D", "", p)}}
        refs = {legacy_runtime_ref(v) for v in values}  # what events held before references were keyed
        if salt is not None:
            refs |= {runtime_ref(v, salt) for v in values}
        literals += [("reference", r"(?:sha256:|ref:)?" + ref.split(":", 1)[1]) for ref in refs]
        if names:
            literals += [("name", r"\s+".join(map(re.escape, n.split()))) for n in ids.names if len(n.split()) >= 2]
        self._literals = [
            (kind, re.compile(rf"(?<![0-9A-Za-z]){pattern}(?![0-9A-Za-z])", re.IGNORECASE))
            for kind, pattern in literals
        ]

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        found = [(m.start(), m.end(), kind) for kind, rx in self._literals for m in rx.finditer(text)]
        if self.digits and _MAYBE_NUMBER.search(text):
            for run in _digit_runs(text):
                joined = "".join(d for d, _, _ in run)
                for kind, target in self.digits:
                    if len(target) < _MIN_SUBSTRING_DIGITS:
                        if joined == target:
                            found.append((run[0][1], run[-1][2], kind))
                        continue
                    start = joined.find(target)
                    while start >= 0:
                        # a phone's country code or trunk prefix in front of it goes with it
                        first = 0 if kind == "phone" and start <= 3 else start
                        found.append((run[first][1], run[start + len(target) - 1][2], kind))
                        start = joined.find(target, start + 1)
        return _merge(found)

    def scrub(self, text: str) -> tuple[str, list[str]]:
        spans = self.spans(text)
        if not spans:
            return text, []
        out, cursor = [], 0
        for start, end, kind in spans:
            out += [text[cursor:start], PLACEHOLDERS[kind]]
            cursor = end
        out.append(text[cursor:])
        return "".join(out), [kind for _, _, kind in spans]

    def scrub_value(self, value: Any) -> tuple[Any, list[str]]:
        """A text or JSON value with every mention replaced, and the kinds replaced."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, bool) or value is None:
            return value, []
        if isinstance(value, (int, float)):
            text = str(value)
            new, found = self.scrub(text)
            return (new if found else value), found
        if isinstance(value, list):
            pairs = [self.scrub_value(v) for v in value]
            return [p[0] for p in pairs], [k for p in pairs for k in p[1]]
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            kinds: list[str] = []
            for key, item in value.items():
                new_key, key_kinds = self.scrub(key) if isinstance(key, str) else (key, [])
                new_item, item_kinds = self.scrub_value(item)
                out[new_key] = new_item
                kinds += key_kinds + item_kinds
            return out, kinds
        return value, []


def _digit_runs(text: str) -> list[list[tuple[str, int, int]]]:
    """Numbers in `text` joined across separators, each digit with the original span it came from.

    A spoken digit maps to all the words of its number (so a replacement takes the whole spoken
    number); a written digit maps to itself. Digits glued to letters (hex ids, model names) are
    not a number anyone dictated and break the run.
    """
    runs: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    last_end = 0
    for span in normalize_numbers(text).spans:
        start, end = span.orig_start, span.orig_end
        glued = not span.spoken and (
            (start > 0 and text[start - 1].isalpha()) or (end < len(text) and text[end].isalpha())
        )
        if span.kind == "ordinal" or glued:
            if current:
                runs.append(current)
            current = []
            continue
        if span.spoken:
            digits = [(ch, start, end) for ch in span.text if ch.isdigit()]
        else:
            digits = [(ch, start + k, start + k + 1) for k, ch in enumerate(text[start:end]) if ch.isdigit()]
        if current and not _SEPARATORS.fullmatch(text[last_end:start]):
            runs.append(current)
            current = []
        current.extend(digits)
        last_end = end
    if current:
        runs.append(current)
    return runs


def _merge(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans):
        if out and start < out[-1][1]:
            prev = out[-1]
            out[-1] = (prev[0], max(prev[1], end), prev[2])
        else:
            out.append((start, end, kind))
    return out


# ---- resolving a subject to their sessions and identifiers -----------------------------------------


@dataclass
class _Resolved:
    subject: Subject
    ids: _Identifiers
    session_ids: set[str]


def _chunks(items: Iterable[str]) -> Iterator[list[str]]:
    items = sorted(items)
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _resolve(conn: Connection, subject: Subject) -> _Resolved:
    """Their sessions and every identifier the platform holds for them (to a fixed point)."""
    ids = _Identifiers()
    if subject.customer_id:
        ids.customer_ids.add(subject.customer_id)
    if subject.account_number:
        ids.accounts.add(subject.account_number)
    if subject.phone:
        ids.phones.add(subject.phone)
    sessions: set[str] = set()
    for _ in range(8):
        before = (ids.size(), len(sessions))
        for chunk in _chunks(ids.customer_ids):
            sessions.update(conn.scalars(select(SessionRow.id).where(SessionRow.customer_id.in_(chunk))))
        packets = select(HandoffRow.session_id, HandoffRow.packet, SessionRow.customer_id).join(
            SessionRow, SessionRow.id == HandoffRow.session_id
        )
        slot_turns = select(TurnRow.session_id, TurnRow.data, SessionRow.customer_id).join(
            SessionRow, SessionRow.id == TurnRow.session_id
        )
        text_of_packet, text_of_turn = cast(HandoffRow.packet, Text), cast(TurnRow.data, Text)
        conditions = [text_of_packet.contains(a) for a in ids.accounts]
        turn_conditions = [text_of_turn.contains(a) for a in ids.accounts]
        queries = []
        for chunk in _chunks(sessions):
            queries.append(packets.where(HandoffRow.session_id.in_(chunk)))
            queries.append(slot_turns.where(TurnRow.session_id.in_(chunk)))
        if conditions:
            queries.append(packets.where(or_(*conditions)))
            queries.append(slot_turns.where(or_(*turn_conditions)))
        for query in queries:
            for sid, data, cid in conn.execute(query):
                _learn(data if isinstance(data, dict) else {}, sid, cid, ids, sessions)
        _learn_callbacks(conn, ids, sessions)
        if (ids.size(), len(sessions)) == before:
            break
    return _Resolved(subject=subject, ids=ids, session_ids=sessions)


def _learn_callbacks(conn: Connection, ids: _Identifiers, sessions: set[str]) -> None:
    """The numbers the live-agent desk's fallback took to call callers back: a session that left the
    subject's number is theirs, and the number left in a session of theirs is one of their identifiers."""
    targets = {t for phone in ids.phones for t in _phone_targets(phone)}
    number = CallbackRequestRow.callback_number
    conditions = [number.contains(t) for t in targets]
    conditions += [CallbackRequestRow.session_id.in_(chunk) for chunk in _chunks(sessions)]
    if not conditions:
        return
    query = select(CallbackRequestRow.session_id, number).where(number.is_not(None), or_(*conditions))
    for sid, value in conn.execute(query):
        digits = re.sub(r"\D", "", value or "")
        if sid in sessions or any(digits.endswith(t) for t in targets):
            sessions.add(sid)
            if digits and value:
                ids.phones.add(value)


def _mapping(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _learn(data: dict[str, Any], sid: str, verified_as: str | None, ids: _Identifiers, sessions: set[str]) -> None:
    """From a packet or a turn's data: the identity it names, if that is the subject's.

    The account a caller identified with (the slot, the packet's identity) makes the session
    theirs, and a session verified with it names their customer id: a verified caller who
    merely mentions another account is refused by the runtime and never fills the slot.
    """
    identity = _mapping(data.get("identity"))
    slots = _mapping(data.get("slots"))
    account = identity.get("account_number") or slots.get("account_number")
    account = re.sub(r"\D", "", str(account)) if account else None
    if sid not in sessions and account not in ids.accounts:
        return
    sessions.add(sid)
    if verified_as:
        ids.customer_ids.add(verified_as)
    if account:
        ids.accounts.add(account)
    if identity.get("verified") and identity.get("customer_id"):
        ids.customer_ids.add(str(identity["customer_id"]))
    if identity.get("name"):
        ids.names.add(str(identity["name"]).strip())
    for action in data.get("actions") or []:
        result = action.get("result") if isinstance(action, dict) else None
        if isinstance(result, dict):
            full = " ".join(str(result[k]).strip() for k in ("first_name", "last_name") if result.get(k))
            if full:
                ids.names.add(full)


# ---- scanning every table --------------------------------------------------------------------------


def _tables(conn: Connection) -> list[Table]:
    meta = reflect(conn)
    return [t for name, t in sorted(meta.tables.items()) if name not in SKIPPED_TABLES]


def _row_id(table: Table, row: Any) -> str:
    return "/".join(str(row._mapping[c.name]) for c in table.primary_key.columns)


def _text_columns(table: Table) -> list[Any]:
    pk = {c.name for c in table.primary_key.columns}
    return [c for c in table.columns if c.name not in pk and isinstance(c.type, (String, JSON))]


@dataclass
class _Scan:
    owned: list[tuple[Table, Any]]  # rows of their sessions (to delete)
    mentions: list[tuple[Table, Any, dict[str, tuple[Any, list[str]]]]]  # rows elsewhere: column -> (new, kinds)


def _scan(conn: Connection, resolved: _Resolved, salt: bytes | None = None) -> _Scan:
    matcher = _Matcher(resolved.ids, names=True, salt=salt)
    owned: list[tuple[Table, Any]] = []
    mentions: list[tuple[Table, Any, dict[str, tuple[Any, list[str]]]]] = []
    for table in _tables(conn):
        if not table.primary_key.columns:
            log.warning("table %s has no primary key: it cannot be scanned for data-subject requests", table.name)
            continue
        columns = _text_columns(table)
        keyed = "session_id" in table.c or table.name == "sessions"
        key = table.c.id if table.name == "sessions" else (table.c.session_id if keyed else None)
        if not columns and key is None:
            continue
        pk = list(table.primary_key.columns)
        query = select(*pk, *([key] if key is not None and key not in pk else []), *columns)
        for row in conn.execute(query).yield_per(2000):
            values = row._mapping
            if key is not None and values[key.name] in resolved.session_ids:
                owned.append((table, row))
                continue
            changed: dict[str, tuple[Any, list[str]]] = {}
            for column in columns:
                value = values[column.name]
                if value is None:
                    continue
                new, found = matcher.scrub_value(value)
                if found:
                    changed[column.name] = (new, found)
            if changed:
                mentions.append((table, row, changed))
    return _Scan(owned=owned, mentions=mentions)


def _records(scan: _Scan) -> list[Record]:
    out = [
        Record(table=t.name, id=_row_id(t, row), field="id" if t.name == "sessions" else "session_id", match="session")
        for t, row in scan.owned
    ]
    for table, row, changed in scan.mentions:
        for column, (_, kinds) in changed.items():
            for kind in dict.fromkeys(kinds):
                out.append(Record(table=table.name, id=_row_id(table, row), field=column, match=kind))
    return out


# ---- the public operations -------------------------------------------------------------------------


def find(
    db: Database,
    customer_id: str | None = None,
    phone: str | None = None,
    account_number: str | None = None,
    *,
    salt: bytes | None = None,
) -> list[Record]:
    """Every stored record of the subject (their sessions' rows and mentions anywhere else).
    With the installation's `salt`, the keyed references workers write into events are found too."""
    subject = subject_from(customer_id, phone, account_number)
    with db.engine.connect() as conn:
        return _records(_scan(conn, _resolve(conn, subject), salt))


def held(db: Database, salt: bytes | None = None) -> tuple[set[str], set[tuple[str, str]]]:
    """What active legal holds keep: session ids, and (table, id) of other rows that mention a held subject."""
    sessions: set[str] = set()
    rows: set[tuple[str, str]] = set()
    with db.engine.connect() as conn:
        for hold in conn.execute(select(_HOLDS).where(_HOLDS.c.released_at.is_(None))):
            resolved = _resolve(conn, Subject(**hold.identifiers))
            sessions |= resolved.session_ids
            scan = _scan(conn, resolved, salt)
            for table, row, _ in scan.mentions:
                rows.add((table.name, _row_id(table, row)))
                if "session_id" in table.c and row._mapping["session_id"]:
                    sessions.add(row._mapping["session_id"])
    return sessions, rows


def _blocking_hold(conn: Connection, resolved: _Resolved) -> LegalHold | None:
    keys = resolved.ids.keys()
    for hold in conn.execute(select(_HOLDS).where(_HOLDS.c.released_at.is_(None)).order_by(_HOLDS.c.created_at)):
        other = _resolve(conn, Subject(**hold.identifiers))
        if other.ids.keys() & keys or other.session_ids & resolved.session_ids:
            return _hold_view(hold)
    return None


def _hold_view(row: Any) -> LegalHold:
    return LegalHold(
        id=row.id,
        subject_hash=row.subject_hash,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        released_at=row.released_at,
        released_by=row.released_by,
        release_reason=row.release_reason,
    )


def _audit(audit: AuditLog, by: str, action: str, resource: str, outcome: str, data: dict[str, Any]) -> int:
    return audit.append(
        AuditEvent(
            actor=by,
            action=action,
            resource=resource,
            outcome=outcome,  # type: ignore[arg-type]
            data=data,
        )
    )[0]


def erase(
    db: Database,
    *,
    audit: AuditLog,
    salt: bytes,
    customer_id: str | None = None,
    phone: str | None = None,
    account_number: str | None = None,
    by: str = "system",
    now: dt.datetime | None = None,
) -> Receipt:
    """Delete the subject's sessions and all under them, anonymise every other mention; audited by hash.

    Raises LegalHoldError (and records the refusal) when an active hold covers the subject.
    """
    subject = subject_from(customer_id, phone, account_number)
    digest = subject_hash(subject, salt)
    request_id = secrets.token_hex(8)
    now = now or dt.datetime.now(dt.UTC)
    deleted: dict[str, int] = {}
    anonymised: dict[str, int] = {}
    with db.engine.begin() as conn:
        resolved = _resolve(conn, subject)
        blocking = _blocking_hold(conn, resolved)
        if blocking is None:
            scan = _scan(conn, resolved, salt)
            _delete_sessions(conn, resolved.session_ids, deleted)
            for table, row, changed in scan.mentions:
                pk = list(table.primary_key.columns)
                conn.execute(
                    update(table)
                    .where(*[c == row._mapping[c.name] for c in pk])
                    .values(**{name: new for name, (new, _) in changed.items()})
                )
                anonymised[table.name] = anonymised.get(table.name, 0) + 1
        status = "refused" if blocking else "completed"
        counts = {"deleted": deleted, "anonymised": anonymised, **({"hold": blocking.id} if blocking else {})}
        conn.execute(
            insert(PrivacyRequestRow).values(
                id=request_id,
                kind="erase",
                subject_hash=digest,
                status=status,
                requested_by=by,
                counts=counts,
                created_at=now,
            )
        )
    seq = _audit(
        audit,
        by,
        "privacy.erase",
        f"privacy_request:{request_id}",
        "denied" if blocking else "ok",
        {"subject": digest, **counts},
    )
    if blocking is not None:
        raise LegalHoldError(blocking)
    log.info("erasure %s: %d rows deleted, %d anonymised", request_id, sum(deleted.values()), sum(anonymised.values()))
    return Receipt(
        request_id=request_id, subject_hash=digest, at=now, deleted=deleted, anonymised=anonymised, audit_seq=seq
    )


def _delete_sessions(conn: Connection, session_ids: set[str], deleted: dict[str, int]) -> None:
    if not session_ids:
        return
    meta = reflect(conn)
    dependents = [
        t
        for name, t in sorted(meta.tables.items())
        if name not in SKIPPED_TABLES and name != "sessions" and "session_id" in t.c
    ]
    sessions = meta.tables["sessions"]
    for chunk in _chunks(session_ids):
        for table in dependents:
            n = conn.execute(delete(table).where(table.c.session_id.in_(chunk))).rowcount
            if n:
                deleted[table.name] = deleted.get(table.name, 0) + n
        n = conn.execute(delete(sessions).where(sessions.c.id.in_(chunk))).rowcount
        deleted["sessions"] = deleted.get("sessions", 0) + n
    if "recording_keys" in meta.tables:
        n = drop_unused_keys(conn)  # a caller key with no recording left is shredded
        if n:
            deleted["recording_keys"] = deleted.get("recording_keys", 0) + n


def hold(
    db: Database,
    *,
    audit: AuditLog,
    salt: bytes,
    reason: str,
    by: str,
    customer_id: str | None = None,
    phone: str | None = None,
    account_number: str | None = None,
) -> LegalHold:
    """Place a legal hold on the subject: purge and erasure leave their records alone until released."""
    subject = subject_from(customer_id, phone, account_number)
    reason = _reason(reason)
    row = LegalHoldRow(
        id=secrets.token_hex(8),
        subject_hash=subject_hash(subject, salt),
        identifiers=subject.model_dump(),
        reason=reason,
        created_by=by,
        created_at=dt.datetime.now(dt.UTC),
    )
    with db.orm() as orm, orm.begin():
        orm.add(row)
    _audit(audit, by, "privacy.hold", f"legal_hold:{row.id}", "ok", {"subject": row.subject_hash})
    return _hold_view(row)


def release(
    db: Database,
    *,
    audit: AuditLog,
    salt: bytes,
    reason: str,
    by: str,
    customer_id: str | None = None,
    phone: str | None = None,
    account_number: str | None = None,
) -> list[LegalHold]:
    """Release every active hold placed on exactly this subject; their identifiers are cleared from the hold."""
    subject = subject_from(customer_id, phone, account_number)
    reason = _reason(reason)
    digest = subject_hash(subject, salt)
    now = dt.datetime.now(dt.UTC)
    with db.orm() as orm, orm.begin():
        rows = list(
            orm.scalars(
                select(LegalHoldRow).where(LegalHoldRow.subject_hash == digest, LegalHoldRow.released_at.is_(None))
            )
        )
        if not rows:
            raise PrivacyRequestError(
                "no active legal hold on this subject (a hold is released with the identifiers it was placed with)"
            )
        for row in rows:
            row.released_at, row.released_by, row.release_reason, row.identifiers = now, by, reason, {}
    for row in rows:
        _audit(audit, by, "privacy.release", f"legal_hold:{row.id}", "ok", {"subject": digest})
    return [_hold_view(r) for r in rows]


def holds(db: Database, *, active_only: bool = True) -> list[LegalHold]:
    with db.orm() as orm:
        query = select(LegalHoldRow).order_by(LegalHoldRow.created_at)
        if active_only:
            query = query.where(LegalHoldRow.released_at.is_(None))
        return [_hold_view(r) for r in orm.scalars(query)]


def _reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if len(reason) < 3:
        raise PrivacyRequestError("give a reason (at least 3 characters), e.g. the case or matter reference")
    if len(reason) > 500:
        raise PrivacyRequestError("the reason is at most 500 characters")
    return reason
