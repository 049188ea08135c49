"""The tables a database holds as they are, reflected once per schema.

Retention and erasure work on every table the database has, including ones this code does not
declare, so they read the schema from the database rather than from the ORM. Reflecting every
table's columns, keys and indexes costs tens of milliseconds (more on PostgreSQL), and a worker
purges as it starts; `reflect` therefore keeps what it read under a fingerprint of the schema: the
migration revision and every table's columns with their types, read in one cheap catalogue query.
Any change to a table, a column or a type, whoever makes it, changes the fingerprint and the schema
is read again. Databases of one dialect with the same fingerprint share the reflection.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from sqlalchemy import Connection, MetaData, text

#: reflections kept (per process): each database kind and schema version a process meets takes one
MAX_KEPT = 8

_FINGERPRINT_SQL = {
    # every column of every table: name, type, nullability and default (the DDL for SQLite)
    "sqlite": "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
    "postgresql": (
        "SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
    ),
}

_kept: OrderedDict[tuple[str, str], MetaData] = OrderedDict()
_lock = threading.Lock()


def fingerprint(conn: Connection) -> str | None:
    """A digest of the schema `conn` sees (tables, columns, types; the migration revision), or None
    for a database kind without a catalogue query here."""
    query = _FINGERPRINT_SQL.get(conn.dialect.name)
    if query is None:
        return None
    digest = hashlib.sha256()
    for row in conn.execute(text(query)):
        digest.update(repr(tuple(row)).encode())
    if conn.dialect.has_table(conn, "alembic_version"):
        for (revision,) in conn.execute(text("SELECT version_num FROM alembic_version ORDER BY version_num")):
            digest.update(f"revision:{revision}".encode())
    return digest.hexdigest()


def reflect(conn: Connection) -> MetaData:
    """Every table of the database `conn` is on, as reflected from it (shared, read-only: callers must
    not add to or change what it holds)."""
    stamp = fingerprint(conn)
    key = (conn.dialect.name, stamp or "")
    if stamp is not None:
        with _lock:
            meta = _kept.get(key)
            if meta is not None:
                _kept.move_to_end(key)
                return meta
    meta = MetaData()
    meta.reflect(bind=conn)
    if stamp is not None:
        with _lock:
            _kept[key] = meta
            while len(_kept) > MAX_KEPT:
                _kept.popitem(last=False)
    return meta
