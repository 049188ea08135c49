"""What the `voxgate` command groups share: one way to fail, to read the settings, to open the
configured database, to load an agent directory and to print `--json` output.

The settings, the store, SQLAlchemy and the bundle loader are imported when a command runs, not
when this module is imported, so `voxgate --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from voxgate.bundle import BundleSource
    from voxgate.config import Settings
    from voxgate.store.db import Database

CONFIG_ERROR = "configuration error:\n"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `message` on stderr and leave with `code` (2: bad input or setup; 1: the thing checked failed)."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def settings(*, label: str = CONFIG_ERROR, secrets: bool = False, **overrides: Any) -> Settings:
    """The settings (with `overrides`), or `label` and the problems on stderr and exit 2.

    With `secrets`, `env:NAME` references also read `<secrets_dir>/NAME`, as the server resolves them.
    """
    from voxgate.config import ConfigError, load_settings
    from voxgate.governance.secrets import use_secrets_dir

    try:
        loaded = load_settings(**overrides)
    except ConfigError as exc:
        fail(f"{label}{exc}")
    if secrets:
        use_secrets_dir(loaded.secrets_path)
    return loaded


def shown_url(url: str) -> str:
    """A database URL fit to print: the password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_database(table: str, what: str) -> tuple[Settings, Database]:
    """The settings and the configured database, which must already hold `table` (`what` names its
    tables in the message); otherwise one line naming the database and exit 2."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from voxgate.store.db import Database

    loaded = settings()
    url = loaded.db_url
    shown = shown_url(url)
    db = Database(url)
    try:
        ready = inspect(db.engine).has_table(table)
    except SQLAlchemyError as exc:
        fail(f"cannot open the database {shown}: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}")
    if not ready:
        fail(f"the database {shown} has no {what} tables; run `voxgate db upgrade` first")
    return loaded, db


def load_agent(path: Path) -> BundleSource:
    """The agent directory at `path`, or every problem as path:line:col on stderr and exit 2."""
    from voxgate.bundle import BundleError, load_bundle

    try:
        return load_bundle(path)
    except BundleError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        fail(f"{len(exc.problems)} problem(s) in {path}")


def echo_json(data: Any, *, sort_keys: bool = False) -> None:
    """Print `data` as indented JSON: the `--json` form of a command."""
    typer.echo(json.dumps(data, indent=2, sort_keys=sort_keys, default=str))
