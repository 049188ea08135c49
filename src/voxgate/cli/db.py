"""`voxgate db …`: database maintenance."""

from __future__ import annotations

import typer

from voxgate.cli._common import settings, shown_url

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database to the newest schema."""
    from voxgate.store.db import Database

    loaded = settings(secrets=True)
    db = Database(loaded.db_url)
    db.migrate()
    typer.echo(f"database at newest revision: {shown_url(loaded.db_url)}")
