"""Render bench/data/pii/templates.txt into utterances.jsonl: synthetic PII values, written and spoken.

Deterministic (fixed seed), so the committed utterances.jsonl can be rebuilt and diffed:

    .venv/bin/python bench/data/pii/build.py

Every value is synthetic: card numbers pass the Luhn check but come from test-style prefixes,
SSNs avoid the published sample numbers, phone numbers use real area codes with random lines.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20260

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

# Names: half frequent ones, half that no common-names list would hold.
FIRST = [
    "James",
    "Maria",
    "Sarah",
    "David",
    "Emily",
    "Michael",
    "Priya",
    "Daniel",
    "Laura",
    "Kevin",
    "Siobhan",
    "Tomasz",
    "Ngozi",
    "Aurelio",
    "Ingrid",
    "Kwame",
    "Rhiannon",
    "Yusuf",
    "Marisol",
    "Dagny",
    "Elodie",
    "Bartholomew",
    "Thandiwe",
    "Caoimhe",
    "Lachlan",
    "Hamish",
    "Anneliese",
    "Ravi",
    "Chloe",
    "Peter",
]
LAST = [
    "Smith",
    "Johnson",
    "Garcia",
    "Brown",
    "Patel",
    "Okafor",
    "Kowalczyk",
    "Fairweather",
    "Lindqvist",
    "Abernathy",
    "Nakashima",
    "Oyelaran",
    "Thistlewood",
    "Castellanos",
    "Whitfield",
    "Moreau",
    "Baptiste",
    "Jones",
    "Murphy",
    "Huang",
    "Delacroix",
    "Pemberton",
    "Achterberg",
    "Mbeki",
    "Quince",
    "Wilson",
]
DOMAINS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.co.uk",
    "icloud.com",
    "aol.com",
    "protonmail.com",
    "harbor-mail.net",
    "acme.org",
    "btinternet.com",
]
US_AREA = ["212", "917", "415", "312", "646", "718", "303", "617", "206", "512", "702", "404", "305", "818"]


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def gen_card(rng: random.Random) -> str:
    kind = rng.choice(["visa", "visa", "mc", "amex", "discover"])
    if kind == "visa":
        return luhn_complete("4", 16, rng)
    if kind == "mc":
        return luhn_complete(str(rng.randint(51, 55)), 16, rng)
    if kind == "amex":
        return luhn_complete(rng.choice(["34", "37"]), 15, rng)
    return luhn_complete("6011", 16, rng)


def gen_phone(rng: random.Random) -> tuple[str, str]:
    """(digits, region) with region US or GB."""
    if rng.random() < 0.75:
        exchange = rng.choice(["555", str(rng.randint(201, 989))])
        line = f"01{rng.randint(0, 99):02d}" if exchange == "555" else f"{rng.randint(0, 9999):04d}"
        return rng.choice(US_AREA) + exchange + line, "US"
    if rng.random() < 0.5:
        return "07700" + f"{rng.randint(900000, 900999)}", "GB"
    return "020" + rng.choice(["7946", "3946", "8123"]) + f"{rng.randint(0, 9999):04d}", "GB"


def gen_ssn(rng: random.Random) -> str:
    famous = {"123456789", "078051120", "219099999", "457555462"}
    while True:
        area = rng.randint(1, 899)
        if area == 666:
            continue
        ssn = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
        if ssn not in famous:
            return ssn


def gen_account(rng: random.Random) -> str:
    length = rng.choice([8, 8, 9, 10, 12])
    return str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(length - 1))


# --- written forms ----------------------------------------------------------------------


def write_card(d: str, rng: random.Random) -> str:
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain":
        return d
    sep = " " if style == "space" else "-"
    groups = [d[0:4], d[4:10], d[10:]] if len(d) == 15 else [d[i : i + 4] for i in range(0, 16, 4)]
    return sep.join(groups)


def write_phone(d: str, region: str, rng: random.Random) -> str:
    if region == "US":
        a, b, c = d[:3], d[3:6], d[6:]
        return rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", d, f"1-{a}-{b}-{c}"])
    if d.startswith("07"):
        return rng.choice([f"{d[:5]} {d[5:]}", f"+44 {d[1:5]} {d[5:]}", d])
    return rng.choice([f"{d[:3]} {d[3:7]} {d[7:]}", f"+44 {d[1:3]} {d[3:7]} {d[7:]}", f"({d[:3]}) {d[3:7]} {d[7:]}"])


def write_ssn(d: str, rng: random.Random) -> str:
    return rng.choice([f"{d[:3]}-{d[3:5]}-{d[5:]}", f"{d[:3]}-{d[3:5]}-{d[5:]}", f"{d[:3]} {d[3:5]} {d[5:]}", d])


def write_account(d: str, rng: random.Random) -> str:
    if len(d) >= 10 and rng.random() < 0.3:
        return f"{d[:4]} {d[4:8]} {d[8:]}"
    return d


def make_email(first: str, last: str, rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """The address and its spoken pieces [(kind, text)] for the local part."""
    f, last_l = first.lower(), last.lower()
    n = str(rng.randint(1, 99))
    style = rng.choice(["dot", "plain_num", "initial", "underscore", "dot_num"])
    if style == "dot":
        parts = [("w", f), ("dot", "."), ("w", last_l)]
    elif style == "plain_num":
        parts = [("w", f + last_l), ("n", n)]
    elif style == "initial":
        parts = [("w", f[0] + last_l)]
    elif style == "underscore":
        parts = [("w", f), ("underscore", "_"), ("w", last_l)]
    else:
        parts = [("w", f), ("dot", "."), ("w", last_l), ("n", n)]
    domain = rng.choice(DOMAINS)
    local = "".join(t for _, t in parts)
    return f"{local}@{domain}", parts + [("at", domain)]


# --- spoken forms -----------------------------------------------------------------------


def say_digit(ch: str, rng: random.Random, zero: str) -> str:
    return zero if ch == "0" else WORDS[int(ch)]


def say_digits(d: str, rng: random.Random, groups: list[int] | None = None) -> str:
    """Digit by digit, sometimes with "oh", "double", "triple", and comma pauses between groups."""
    zero = rng.choice(["zero", "oh", "oh"])
    use_repeat = rng.random() < 0.4
    chunks = []
    pos = 0
    for size in groups or [len(d)]:
        chunk = d[pos : pos + size]
        pos += size
        words: list[str] = []
        i = 0
        while i < len(chunk):
            ch = chunk[i]
            run = 1
            while i + run < len(chunk) and chunk[i + run] == ch:
                run += 1
            if use_repeat and run in (2, 3):
                words.append(("double " if run == 2 else "triple ") + say_digit(ch, rng, zero))
                i += run
                continue
            words.append(say_digit(ch, rng, zero))
            i += 1
        chunks.append(" ".join(words))
    return rng.choice([", ", " "]).join(chunks)


def say_pair(two: str) -> str | None:
    """ "34" -> "thirty four"; None when the pair starts with 0 (callers say those as digits)."""
    v = int(two)
    if two[0] == "0":
        return None
    if v < 10:
        return WORDS[v]
    if v < 20:
        return TEENS[v - 10]
    return TENS[v // 10] + ("" if v % 10 == 0 else " " + WORDS[v % 10])


def say_card(d: str, rng: random.Random) -> str:
    groups = [4, 6, 5] if len(d) == 15 else [4, 4, 4, 4]
    return say_digits(d, rng, groups if rng.random() < 0.6 else None)


def say_phone(d: str, region: str, rng: random.Random) -> str:
    if region == "US":
        if rng.random() < 0.3:
            first, last = d[6:8], d[8:]
            a, b = say_pair(first), say_pair(last)
            if a and b:
                return say_digits(d[:6], rng, [3, 3]) + " " + a + " " + b
        return say_digits(d, rng, [3, 3, 4])
    return say_digits(d, rng, [5, 6] if d.startswith("07") else [3, 4, 4])


def say_ssn(d: str, rng: random.Random) -> str:
    if rng.random() < 0.25:
        return " dash ".join(say_digits(p, rng) for p in (d[:3], d[3:5], d[5:]))
    return say_digits(d, rng, [3, 2, 4])


def say_number(n: str, rng: random.Random) -> str:
    if rng.random() < 0.5 and len(n) == 2:
        spoken = say_pair(n)
        if spoken:
            return spoken
    return say_digits(n, rng)


def say_email(parts: list[tuple[str, str]], rng: random.Random) -> str:
    out: list[str] = []
    for kind, text in parts:
        if kind == "w":
            out.append(text)
        elif kind == "dot":
            out.append("dot")
        elif kind == "underscore":
            out.append("underscore")
        elif kind == "n":
            out.append(say_number(text, rng))
        elif kind == "at":
            out.append("at " + text.replace(".", " dot ").replace("-", " dash "))
    return " ".join(out)


# --- rendering --------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def render(template: str, rng: random.Random) -> tuple[list[tuple[str, str | None]], bool]:
    """Segments [(text, type or None)] and whether the line is in the written style."""
    segments: list[tuple[str, str | None]] = []
    pos = 0
    first, last = rng.choice(FIRST), rng.choice(LAST)
    for m in PLACEHOLDER.finditer(template):
        segments.append((template[pos : m.start()], None))
        key = m.group(1)
        if key in ("card", "card_spoken"):
            d = gen_card(rng)
            segments.append((write_card(d, rng) if key == "card" else say_card(d, rng), "CREDIT_CARD"))
        elif key in ("phone", "phone_spoken"):
            d, region = gen_phone(rng)
            segments.append(
                (write_phone(d, region, rng) if key == "phone" else say_phone(d, region, rng), "PHONE_NUMBER")
            )
        elif key in ("email", "email_spoken"):
            address, parts = make_email(rng.choice(FIRST), rng.choice(LAST), rng)
            segments.append((address if key == "email" else say_email(parts, rng), "EMAIL_ADDRESS"))
        elif key in ("ssn", "ssn_spoken"):
            d = gen_ssn(rng)
            segments.append((write_ssn(d, rng) if key == "ssn" else say_ssn(d, rng), "US_SSN"))
        elif key in ("account", "account_spoken"):
            d = gen_account(rng)
            segments.append((write_account(d, rng) if key == "account" else say_digits(d, rng), "ACCOUNT_NUMBER"))
        elif key == "name":
            segments.append((f"{first} {last}", "PERSON"))
        elif key == "first":
            segments.append((first, "PERSON"))
        elif key == "last":
            segments.append((last, "PERSON"))
        else:
            raise ValueError(f"unknown placeholder {key!r} in {template!r}")
        pos = m.end()
    segments.append((template[pos:], None))
    written = template != template.lower() or any(c in template for c in ".?!,") or "{card}" in template
    return segments, written


def asr_variant(segments: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """Lower case, punctuation dropped outside the values (as a recogniser writes a chat line)."""
    out = []
    for text, kind in segments:
        text = text.lower()
        if kind is None:
            text = re.sub(r"[.,?!:;]+(\s|$)", r"\1", text)
        elif kind == "PERSON":
            text = text.lower()
        out.append((text, kind))
    return out


def to_record(segments: list[tuple[str, str | None]], style: str) -> dict:
    text = ""
    entities = []
    for piece, kind in segments:
        if kind is not None:
            entities.append({"type": kind, "start": len(text), "end": len(text) + len(piece)})
        text += piece
    stripped = text.strip()
    shift = len(text) - len(text.lstrip())
    for e in entities:
        e["start"] -= shift
        e["end"] -= shift
    return {"text": stripped, "style": style, "entities": entities}


def main() -> None:
    rng = random.Random(SEED)
    records: list[dict] = []
    seen: set[str] = set()
    for raw in (HERE / "templates.txt").read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        copies = 2 if PLACEHOLDER.search(raw) else 1
        for _ in range(copies):
            segments, written = render(raw, rng)
            variants = [(segments, "written" if written else "asr")]
            if written:
                variants.append((asr_variant(segments), "asr"))
            for segs, style in variants:
                rec = to_record(segs, style)
                if rec["text"] not in seen:
                    seen.add(rec["text"])
                    records.append(rec)
    out = HERE / "utterances.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"{len(records)} utterances -> {out}")


if __name__ == "__main__":
    main()
