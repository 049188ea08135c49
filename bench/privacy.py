"""Data-subject requests and retention: how well mentions are found, and how long find/erase/purge take.

    .venv/bin/python bench/privacy.py [--sessions 2000] [--database-url URL]

Accuracy: for every Harbor demo customer, utterances that state their account number and phone
in different ways (spoken digit by digit, "oh" and "double", grouped, with a country code) must
be found (recall); the same utterances with another customer's numbers must not be (false hits).
Speed: a store of N sessions of 6 turns each (1 % of them the subject's), timed find, erase and
retention purge. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "harbor-telecom" / "backend"))

from harbor_backend import demo_credentials

from voxgate.compliance.audit import AuditLog
from voxgate.compliance.privacy import _Identifiers, _Matcher, erase, find
from voxgate.compliance.retention import purge
from voxgate.governance.environments import load_governance
from voxgate.store.db import Database
from voxgate.store.models import SessionRow, TurnRow

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spoken(digits: str, rng: random.Random) -> str:
    out, i = [], 0
    while i < len(digits):
        d = digits[i]
        if i + 1 < len(digits) and digits[i + 1] == d and rng.random() < 0.5:
            out.append("double " + WORDS[int(d)])
            i += 2
            continue
        out.append("oh" if d == "0" and rng.random() < 0.5 else WORDS[int(d)])
        i += 1
    return " ".join(out)


def phrasings(account: str, phone: str, rng: random.Random) -> list[tuple[str, str]]:
    national = phone.removeprefix("+1")
    return [
        ("account_number", f"my account is {spoken(account, rng)}"),
        ("account_number", f"account number {account[:4]} {account[4:]} please"),
        ("account_number", f"it's {account}, can you check"),
        ("phone", f"call me on {spoken(national, rng)}"),
        ("phone", f"my number is ({national[:3]}) {national[3:6]}-{national[6:]}"),
        ("phone", f"reach me at {phone} tomorrow"),
        ("phone", f"one {spoken(national, rng)} is my mobile"),
        ("phone", f"text {national[:3]}.{national[3:6]}.{national[6:]}"),
    ]


def accuracy() -> None:
    rng = random.Random(7)
    creds = demo_credentials()
    found = {"account_number": [0, 0], "phone": [0, 0]}
    false_hits = checked = 0
    for i, c in enumerate(creds):
        other = creds[(i + 1) % len(creds)]
        matcher = _Matcher(
            _Identifiers(customer_ids={c["customer_id"]}, accounts={c["account_number"]}, phones={c["phone"]}),
            names=True,
        )
        for kind, text in phrasings(c["account_number"], c["phone"], rng):
            found[kind][1] += 1
            if any(k == kind for _, _, k in matcher.spans(text)):
                found[kind][0] += 1
        for _, text in phrasings(other["account_number"], other["phone"], rng):
            checked += 1
            false_hits += bool(matcher.spans(text))
    for kind, (hit, total) in found.items():
        print(f"recall {kind:15s} {hit}/{total} = {hit / total:.1%}")
    print(f"false hits on other customers' utterances: {false_hits}/{checked} = {false_hits / checked:.2%}")


def speed(n_sessions: int, url: str | None) -> None:
    rng = random.Random(11)
    creds = demo_credentials()
    tmp = tempfile.mkdtemp()
    db = Database(url or f"sqlite:///{tmp}/bench.db")
    db.migrate()
    now = dt.datetime.now(dt.UTC)
    subject = creds[0]
    t0 = time.perf_counter()
    with db.orm() as orm, orm.begin():
        for i in range(n_sessions):
            c = subject if i % 100 == 0 else creds[1 + i % (len(creds) - 1)]
            sid = f"s{i:07d}"
            orm.add(
                SessionRow(
                    id=sid,
                    agent="harbor-support",
                    agent_version="1",
                    environment="prod",
                    channel="text",
                    started_at=now - dt.timedelta(days=rng.randint(0, 120)),
                    verified=True,
                    customer_id=c["customer_id"],
                    turn_count=6,
                )
            )
            texts = [
                "what's my balance",
                spoken(c["account_number"], rng),
                "<PIN>",
                "call me on " + spoken(c["phone"].removeprefix("+1"), rng),
                "is there an outage at 22809",
                "I want a human",
            ]
            for seq, t in enumerate(texts):
                orm.add(
                    TurnRow(
                        session_id=sid,
                        seq=seq,
                        user_text=t,
                        agent_text="Thanks. Anything else?",
                        state="idle",
                        data={"slots": {"account_number": c["account_number"]}, "events": []},
                    )
                )
    print(f"store: {n_sessions} sessions, {n_sessions * 6} turns (built in {time.perf_counter() - t0:.1f} s)")
    audit = AuditLog(db)
    t0 = time.perf_counter()
    records = find(db, customer_id=subject["customer_id"])
    print(f"find:  {len(records)} records in {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    receipt = erase(
        db, audit=audit, salt=b"bench salt, 16+ bytes", customer_id=subject["customer_id"], phone=subject["phone"]
    )
    print(
        f"erase: {sum(receipt.deleted.values())} deleted, {sum(receipt.anonymised.values())} anonymised "
        f"in {time.perf_counter() - t0:.2f} s"
    )
    t0 = time.perf_counter()
    report = purge(db, load_governance(), now, audit=audit)
    print(f"purge: {report.total} rows ({report.counts['prod']}) in {time.perf_counter() - t0:.2f} s")
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    accuracy()
    speed(args.sessions, args.database_url)


if __name__ == "__main__":
    main()
