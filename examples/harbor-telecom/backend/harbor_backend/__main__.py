"""Command line for the Harbor Telecom demo backend: ``serve`` and ``credentials``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import date

from .data import DEFAULT_CUSTOMERS, DEFAULT_SEED, demo_credentials, draw_outages

API_KEY_ENV = "HARBOR_API_KEY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harbor_backend", description="Harbor Telecom demo backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help=f"run the HTTP API (API key from ${API_KEY_ENV})")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8700)
    serve.add_argument("--db", default="var/harbor.db", help="SQLite file, created and seeded if empty")
    serve.add_argument("--seed", type=int, default=DEFAULT_SEED)
    serve.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    serve.add_argument(
        "--today",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="date the data as if it were this day (default: the real date, followed while running)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    creds = sub.add_parser("credentials", help="print demo credentials (PINs included) for trying the demo")
    creds.add_argument("--limit", type=int, default=10)
    creds.add_argument("--json", action="store_true", help="print JSON instead of a table")
    creds.add_argument("--seed", type=int, default=DEFAULT_SEED)
    creds.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    return parser


def _serve(args: argparse.Namespace) -> int:
    api_key = os.environ.get(API_KEY_ENV, "")
    if not api_key:
        print(
            f"error: set {API_KEY_ENV} to the API key clients must send as 'Authorization: Bearer <key>', "
            f"e.g. export {API_KEY_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    from .app import create_app
    from .db import SeedMismatchError

    try:
        app = create_app(args.db, api_key, seed=args.seed, customers=args.customers, today=args.today)
    except SeedMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level in ("debug", "info")
    )
    return 0


def _credentials(args: argparse.Namespace) -> int:
    rows = demo_credentials(args.seed, args.customers)[: max(args.limit, 0)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'customer':<9} {'name':<10} {'account':<9} {'PIN':<4} {'dob':<10} {'phone':<12} postcode"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['customer_id']:<9} {r['first_name']:<10} {r['account_number']:<9} {r['pin']:<4} "
            f"{r['dob']:<10} {r['phone']:<12} {r['postcode']}"
        )
    outage_postcodes = ", ".join(o.postcode for o in draw_outages(args.seed))
    print(f"\nPostcodes with an active outage: {outage_postcodes}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _credentials(args)


if __name__ == "__main__":
    sys.exit(main())
