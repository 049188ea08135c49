"""Alembic environment: runs on the connection voxgate hands it, or on the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from voxgate.errors import InvalidError
from voxgate.store.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    """Migrate the connection voxgate handed over, or the configured database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise InvalidError("alembic needs a connection or a sqlalchemy.url to migrate")
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
