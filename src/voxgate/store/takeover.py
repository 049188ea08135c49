"""A conversation that moves between workers (an HTTP chat in a cluster): the worker that takes its next
turn becomes the holder of its row (`sessions.worker_id`), so that idle expiry and crash repair
(store/liveness.py) follow the worker that last continued it."""

from __future__ import annotations

from sqlalchemy import update

from voxgate.store.db import Database
from voxgate.store.models import SessionRow


def take_over(db: Database, session_id: str, worker_id: str | None) -> bool:
    """Make `worker_id` the holder of the open session `session_id`; False when the row is closed (or
    unknown): the conversation must not go on. Blocking: call it from a thread."""
    with db.orm() as orm, orm.begin():
        done = orm.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.ended_at.is_(None))
            .values(worker_id=worker_id)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]
