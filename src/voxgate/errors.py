"""One error model for voxgate: a base class and the few categories every caller can act on.

Every error voxgate raises on purpose derives from :class:`VoxgateError` through exactly one
category. Modules keep their own named errors (``BundleNotFoundError``, ``LegalHoldError`` ...)
so that callers can catch what they care about, but the *category* says what kind of failure it
is, and the web layer maps categories to HTTP statuses in one place (``api/app.py``), so no
error carries an HTTP status of its own.

- :class:`NotFoundError`: the thing named does not exist (or the caller may not know it does).
- :class:`ConflictError`: the request clashes with the current state (a stale version, a duplicate).
- :class:`ForbiddenError`: a policy refused it; ``rule`` names the rule that decided.
- :class:`InvalidError`: the input is malformed or breaks a documented limit.
- :class:`UnavailableError`: something needed is missing or unreachable (a model, a database).

This module is a leaf: it imports nothing from voxgate.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConflictError",
    "ForbiddenError",
    "InvalidError",
    "ModelError",
    "ModelIntegrityError",
    "ModelNotInstalledError",
    "NotFoundError",
    "TooLargeError",
    "UnavailableError",
    "VoxgateError",
]


class VoxgateError(Exception):
    """Base of every error voxgate raises on purpose; ``detail`` is extra JSON-safe context for the client."""

    def __init__(self, message: str = "", *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message or super().__str__()


class NotFoundError(VoxgateError, LookupError):
    """The thing named does not exist."""


class ConflictError(VoxgateError):
    """The request clashes with the current state: a stale version, a duplicate, a wrong status."""


class ForbiddenError(VoxgateError):
    """A policy refused the action; ``rule`` names the rule that decided."""

    def __init__(self, message: str = "", *, rule: str | None = None, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.rule = rule


class InvalidError(VoxgateError, ValueError):
    """The input is malformed or breaks a documented rule."""


class TooLargeError(InvalidError):
    """The input is over a documented size limit."""


class UnavailableError(VoxgateError, RuntimeError):
    """Something the action needs is missing or unreachable: a model package, a database, a backend."""


class ModelError(UnavailableError):
    """A shipped model cannot be used."""


class ModelNotInstalledError(ModelError):
    """The package that ships a model is not installed."""


class ModelIntegrityError(ModelError):
    """A model file is missing, has the wrong size or digest, or its package is not the pinned version."""
