"""Harbor Telecom demo backend: a small synthetic-data HTTP API that voxgate's demo agent calls."""

from __future__ import annotations

from .app import create_app
from .data import demo_credentials, generate
from .server import BackgroundProcess, BackgroundServer

__all__ = ["BackgroundProcess", "BackgroundServer", "create_app", "demo_credentials", "generate"]
__version__ = "0.1.0"
