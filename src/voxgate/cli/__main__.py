"""`python -m voxgate.cli …`: the same as the `voxgate` command."""

from voxgate.cli import app

app()
