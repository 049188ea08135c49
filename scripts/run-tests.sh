#!/usr/bin/env bash
# The test command behind `make test`: start a throwaway PostgreSQL, then run pytest once;
# every database test is parametrised over SQLite and that PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${VOXGATE_TEST_PG_PORT:-55432}
pgdir=$(mktemp -d /tmp/voxgate-pg.XXXXXX)
chmod 755 "$pgdir"
trap 'scripts/pg-throwaway.sh stop "$pgdir"' EXIT
url=$(scripts/pg-throwaway.sh start "$pgdir" "$port")
export VOXGATE_TEST_POSTGRES_URL="$url"
export VOXGATE_REQUIRE_POSTGRES=1
.venv/bin/python -m pytest -q "$@"
