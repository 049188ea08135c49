"""Bundle uploads as a hostile maker makes them: signed with the maker's own registered key, the
content anything. Shared by the upload tests of tests/security/ (the `org` and `client` fixtures are
in tests/security/conftest.py)."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.helpers.org import Org, bearer
from tests.helpers.paths import HARBOR_AGENT
from voxgate.governance import bundle_store
from voxgate.store.db import Database
from voxgate.store.models import BundleRow


def harbor_files() -> dict[str, bytes]:
    """The Harbor agent's files by their path in the bundle."""
    return {
        p.relative_to(HARBOR_AGENT).as_posix(): p.read_bytes() for p in sorted(HARBOR_AGENT.rglob("*")) if p.is_file()
    }


def signed_body(
    org: Org, files: dict[str, bytes], *, agent: str | None = None, version: str = "1.0.0", archive: bytes | None = None
) -> dict[str, Any]:
    """An upload body the maker's own registered key signs: a hostile maker, not a forger."""
    content = bundle_store.content_manifest(files, agent if agent is not None else "harbor-support", version)
    digest = bundle_store.digest_of(content)
    raw = archive if archive is not None else bundle_store.make_archive(files, content)
    return {
        "archive": base64.b64encode(raw).decode(),
        "signature": org.key.sign(digest.encode("ascii")),
        "key_id": org.key.key_id,
    }


def upload(client: TestClient, org: Org, body: dict[str, Any]) -> Any:
    """The maker's upload of `body` to dev: the response."""
    return client.post("/api/environments/dev/bundles", json=body, headers=bearer(org.maker))


def stored_bundles(org: Org) -> int:
    """How many bundles the organisation's database holds."""
    db = Database(org.db_url)
    try:
        with db.orm() as s:
            return int(s.scalar(select(func.count()).select_from(BundleRow)) or 0)
    finally:
        db.dispose()


def problems_of(r: Any) -> str:
    """The problems a refused upload names, one a line."""
    detail = r.json().get("detail")
    return "\n".join(detail["problems"]) if isinstance(detail, dict) else str(detail)
