"""The one error model: every category answered with its HTTP status and body in one place
(`api/app.py`), and every exception class voxgate defines derives from `VoxgateError`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient

import voxgate
from voxgate.api import console
from voxgate.api.app import HTTP_STATUS, create_app, http_status, install_error_mapping
from voxgate.config import Settings
from voxgate.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    ModelIntegrityError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
    VoxgateError,
)
from voxgate.governance.bundle_store import BundleFormatError, BundleRejected, BundleRejectedTooLarge
from voxgate.governance.releases import ReleaseConflictError, ReleaseForbiddenError, ReleaseNotFoundError

#: the categories an error can belong to (TooLargeError and ModelError refine InvalidError and UnavailableError)
CATEGORIES = (NotFoundError, ConflictError, ForbiddenError, InvalidError, UnavailableError)

#: exception classes under src/voxgate that may stay outside the error model, and why; keep it short
ALLOWED_OUTSIDE: dict[str, str] = {
    # FastAPI turns anything but an HTTPException raised while it reads a body into a 400
    "voxgate.api.limits.BodyTooLarge": "must be a starlette HTTPException to pass through FastAPI's body reading",
    # private control flow, caught in the function that raised it, never seen by a caller
    "voxgate.testing.escalation._Stuck": "control flow inside the escalation gate's scripted caller",
    "voxgate.testing.redteam._Skip": "control flow inside the red-team runner",
}


def _app(*errors: tuple[str, Exception]) -> FastAPI:
    """A bare app with the error mapping and the console's not-found page, and one route per error."""
    app = FastAPI()
    install_error_mapping(app)
    console.install_not_found_page(app)
    for path, error in errors:
        app.add_api_route(path, _raiser(error), methods=["GET"])
    return app


def _raiser(error: Exception) -> Any:
    """A route function that raises `error`."""

    def route() -> None:
        raise error

    return route


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (NotFoundError("no such session"), 404, {"detail": "no such session"}),
        (ConflictError("that key is registered to someone else"), 409, {"detail": "that key is registered to someone else"}),
        (ForbiddenError("a scoped token cannot mint tokens", rule="token.scoped"), 403, {"detail": "a scoped token cannot mint tokens"}),
        (InvalidError("archive must be base64"), 422, {"detail": "archive must be base64"}),
        (TooLargeError("past the limit"), 413, {"detail": "past the limit"}),
        (UnavailableError("the speech models are not installed"), 503, {"detail": "the speech models are not installed"}),
        (ModelIntegrityError("model file changed"), 503, {"detail": "model file changed"}),
        # a structured detail is sent as it is
        (ConflictError("x", detail={"error": "bundle sha256:1 failed verification; it is not shown"}), 409,
         {"detail": {"error": "bundle sha256:1 failed verification; it is not shown"}}),
        (ReleaseNotFoundError("no publish request 'r1'"), 404, {"detail": {"error": "no publish request 'r1'"}}),
        (ReleaseConflictError("gates have not passed", rule="gates.not_passed"), 409,
         {"detail": {"error": "gates have not passed", "rule": "gates.not_passed"}}),
        (ReleaseForbiddenError("the author cannot approve", rule="sod.approver_is_author"), 403,
         {"detail": {"error": "the author cannot approve", "rule": "sod.approver_is_author"}}),
        (BundleRejected(["agent.yaml:3: unknown field 'x'"]), 422,
         {"detail": {"error": "bundle rejected", "problems": ["agent.yaml:3: unknown field 'x'"]}}),
        (BundleRejectedTooLarge(["the archive is larger than 10 bytes"]), 413,
         {"detail": {"error": "bundle rejected", "problems": ["the archive is larger than 10 bytes"]}}),
        (BundleFormatError("bundle archive has no agent.yaml"), 422,
         {"detail": {"error": "bundle rejected", "problems": ["bundle archive has no agent.yaml"]}}),
    ],
)  # fmt: skip
def test_each_category_is_answered_with_its_status_and_detail(error: VoxgateError, status: int, body: Any) -> None:
    client = TestClient(_app(("/api/boom", error)))
    response = client.get("/api/boom")
    assert (response.status_code, response.json()) == (status, body)
    assert response.headers["content-type"] == "application/json"


def test_create_app_installs_the_mapping(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path), [])
    assert VoxgateError in app.exception_handlers
    assert app.exception_handlers[VoxgateError] is _app().exception_handlers[VoxgateError]


def test_the_table_names_each_category_once_and_too_large_before_invalid() -> None:
    categories = [category for category, _ in HTTP_STATUS]
    assert len(categories) == len(set(categories))
    assert set(CATEGORIES) <= set(categories)
    assert categories.index(TooLargeError) < categories.index(InvalidError)  # the first match wins
    assert http_status(VoxgateError("no category")) is None


def test_an_error_of_no_category_is_a_500_as_any_other_exception() -> None:
    client = TestClient(_app(("/api/boom", VoxgateError("internal"))), raise_server_exceptions=False)
    response = client.get("/api/boom")
    assert response.status_code == 500


def test_a_browser_gets_the_not_found_page_for_a_not_found_error_outside_the_api() -> None:
    client = TestClient(_app(("/somewhere", NotFoundError("Not Found")), ("/api/thing", NotFoundError("no thing"))))
    page = client.get("/somewhere", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text
    api = client.get("/api/thing", headers={"Accept": "text/html"})  # nothing under /api/ is a page
    assert (api.status_code, api.json()) == (404, {"detail": "no thing"})


def test_an_error_on_a_socket_is_left_to_fail_the_socket() -> None:
    app = _app()

    @app.websocket("/ws/boom")
    async def boom(websocket: WebSocket) -> None:
        await websocket.accept()
        raise NotFoundError("gone")

    # not turned into an HTTP answer (a socket has none to send): it fails the socket, as before
    with pytest.raises(NotFoundError), TestClient(app) as client, client.websocket_connect("/ws/boom") as ws:
        ws.receive_text()


# ---- every exception derives from VoxgateError ----------------------------------------------------


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the voxgate package, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(voxgate.__path__, "voxgate."):
        if info.name.endswith("__main__") or info.name.startswith("voxgate.store.migrations"):
            continue  # __main__ runs the CLI; the migrations' env.py runs only under Alembic
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def _categories(cls: type[BaseException]) -> set[type[VoxgateError]]:
    return {category for category in CATEGORIES if issubclass(cls, category)}


def test_every_exception_voxgate_defines_derives_from_voxgate_error() -> None:
    classes = _exception_classes()
    outside = sorted(
        name for name, cls in classes.items() if not issubclass(cls, VoxgateError) and name not in ALLOWED_OUTSIDE
    )
    assert outside == [], f"derive these from one category in voxgate/errors.py: {outside}"


def test_the_allowed_list_names_only_exceptions_that_still_stand_outside() -> None:
    classes = _exception_classes()
    stale = sorted(name for name in ALLOWED_OUTSIDE if name not in classes or issubclass(classes[name], VoxgateError))
    assert stale == [], f"remove from ALLOWED_OUTSIDE: {stale}"


def test_no_exception_belongs_to_two_categories() -> None:
    twice = {
        name: sorted(c.__name__ for c in _categories(cls))
        for name, cls in _exception_classes().items()
        if len(_categories(cls)) > 1
    }
    assert twice == {}
