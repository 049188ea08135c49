"""Hostile bundle uploads through the real API: names that point outside, members the scan would
miss, and archives that unpack to far more than they weigh. Each is refused with a clear status,
writes nothing outside the server's temporary folder and stores nothing."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.org import Org, bearer
from tests.helpers.uploads import harbor_files, problems_of, signed_body, stored_bundles, upload
from voxgate.governance import bundle_store
from voxgate.store.db import Database
from voxgate.store.models import BundleRow

pytestmark = (
    pytest.mark.sqlite_only
)  # hostile archives are refused before anything is stored; the stored rows are plain ORM

AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"  # split so this file is not itself a finding
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"


@pytest.fixture()
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's temporary folder for this test: tmp_path/jail/tmp (so '../..' lands in tmp_path/jail)."""
    tmp = tmp_path / "jail" / "tmp"
    tmp.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


# ---- the agent's name is a path nowhere ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["absolute", "parent"])
def test_bundle_upload_hostile_agent_name_writes_nothing_outside(
    kind: str, org: Org, client: TestClient, scratch: Path, tmp_path: Path
) -> None:
    if kind == "absolute":
        target = tmp_path / "outside-abs" / "planted"
        name = str(target)
    else:
        target = tmp_path / "jail" / "outside"
        name = "../../outside"
    files = harbor_files()
    files["agent.yaml"] = files["agent.yaml"].replace(b"name: harbor-support", f"name: '{name}'".encode(), 1)
    r = upload(client, org, signed_body(org, files, agent=name))
    assert r.status_code == 422, r.text
    assert "agent name" in problems_of(r) and "[a-z]" in problems_of(r)
    assert not target.exists()
    assert not (tmp_path / "outside-abs").exists()
    assert not (tmp_path / "jail" / "outside").exists()
    assert list(scratch.iterdir()) == []  # the temporary folder is gone too
    assert stored_bundles(org) == 0


def test_bundle_upload_hostile_topic_name_is_refused(org: Org, client: TestClient, scratch: Path) -> None:
    files = harbor_files()
    files["topics/store_hours.yaml"] = files["topics/store_hours.yaml"].replace(
        b"name: store_hours", b"name: '../../store_hours'", 1
    )
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 422, r.text
    assert "store_hours.yaml" in problems_of(r)
    assert list(scratch.iterdir()) == [] and stored_bundles(org) == 0


# ---- every member is scanned; a refused upload stores nothing --------------------------------------


@pytest.mark.parametrize(
    "member", [".creds.yaml", "__pycache__/creds.yaml", "knowledge/.hidden.md", "node_modules/x/creds.yaml"]
)
def test_bundle_upload_secret_in_a_skipped_member_is_refused_and_nothing_stored(
    member: str, org: Org, client: TestClient, scratch: Path
) -> None:
    files = harbor_files()
    files[member] = f"aws_access_key_id: {AWS_KEY}\naws_secret_access_key: {AWS_SECRET}\n".encode()
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 422, r.text
    assert member in problems_of(r)
    assert AWS_KEY not in r.text and AWS_SECRET not in r.text
    assert stored_bundles(org) == 0
    listed = client.get("/api/bundles", headers=bearer(org.auditor))
    assert listed.status_code == 200 and listed.json() == []


def test_bundle_upload_secret_in_any_other_member_is_named(org: Org, client: TestClient, scratch: Path) -> None:
    files = harbor_files()
    files["notes/ops.txt"] = f"backup key {AWS_KEY}\n".encode()
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 422, r.text
    assert "notes/ops.txt:1: inline secret" in problems_of(r)
    assert AWS_KEY not in r.text and stored_bundles(org) == 0


def test_bundle_upload_stored_manifest_lists_exactly_the_archive(org: Org, client: TestClient, scratch: Path) -> None:
    files = harbor_files()
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 201, r.text
    db = Database(org.db_url)
    try:
        with db.orm() as s:
            row = s.get(BundleRow, r.json()["digest"])
            assert row is not None
            in_archive, _ = bundle_store.read_archive(bytes(row.archive))
            assert sorted(row.manifest["content"]["files"]) == sorted(in_archive) == sorted(files)
    finally:
        db.dispose()


def test_bundle_diff_refuses_a_stored_row_that_fails_verification(org: Org, client: TestClient, scratch: Path) -> None:
    """A row altered in the store (or stored by an older server) is never shown as a diff."""
    files = harbor_files()
    first = upload(client, org, signed_body(org, files))
    assert first.status_code == 201, first.text
    changed = dict(files)
    changed["knowledge/stores.md"] += b"\nClosed on public holidays.\n"
    second = upload(client, org, signed_body(org, changed))
    assert second.status_code == 201, second.text
    tampered = dict(changed)
    tampered[".creds.yaml"] = f"aws_access_key_id: {AWS_KEY}\n".encode()
    content = bundle_store.content_manifest(changed, "harbor-support", "1.0.0")
    db = Database(org.db_url)
    try:
        with db.orm() as s, s.begin():
            row = s.get(BundleRow, second.json()["digest"])
            assert row is not None
            row.archive = bundle_store.make_archive(tampered, content)
    finally:
        db.dispose()
    r = client.get(f"/api/bundles/{first.json()['digest']}/diff/{second.json()['digest']}", headers=bearer(org.auditor))
    assert r.status_code == 409, r.text
    assert AWS_KEY not in r.text
    ok = client.get(f"/api/bundles/{first.json()['digest']}/diff/{first.json()['digest']}", headers=bearer(org.auditor))
    assert ok.status_code == 200 and ok.text == ""


# ---- decompression and scan bombs -------------------------------------------------------------------


def _raw_tar_gz(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_bundle_upload_gzip_bomb_is_refused_as_too_large(org: Org, client: TestClient, scratch: Path) -> None:
    files = harbor_files()
    files["knowledge/bomb.md"] = b"\n" * (8 * 1024 * 1024)  # 8 MiB of newlines, a few KiB compressed
    body = signed_body(org, files)
    assert len(base64.b64decode(body["archive"])) < 64 * 1024
    r = upload(client, org, body)
    assert r.status_code == 413, r.text
    assert "bytes" in problems_of(r)
    assert stored_bundles(org) == 0 and list(scratch.iterdir()) == []


def test_bundle_upload_big_single_file_is_refused_and_named(org: Org, client: TestClient, scratch: Path) -> None:
    files = harbor_files()
    files["knowledge/big.md"] = b"# Big\n" + b"\n" * (bundle_store.MAX_FILE_BYTES + 1)
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 413, r.text
    assert "knowledge/big.md" in problems_of(r)
    assert stored_bundles(org) == 0


def test_bundle_upload_too_many_members_is_refused(org: Org, client: TestClient, scratch: Path) -> None:
    files = harbor_files()
    for i in range(bundle_store.MAX_BUNDLE_FILES + 1):
        files[f"knowledge/n{i:04d}.md"] = b"# n\n"
    r = upload(client, org, signed_body(org, files))
    assert r.status_code == 413, r.text
    assert "files" in problems_of(r) and stored_bundles(org) == 0


def test_bundle_upload_bare_bomb_without_a_manifest_is_refused(org: Org, client: TestClient, scratch: Path) -> None:
    bomb = _raw_tar_gz([("knowledge/bomb.md", b"\n" * (16 * 1024 * 1024))])
    body = {"archive": base64.b64encode(bomb).decode(), "signature": "x", "key_id": org.key.key_id}
    r = upload(client, org, body)
    assert r.status_code == 413, r.text
    assert stored_bundles(org) == 0 and list(scratch.iterdir()) == []


# ---- a name that is both a file and a folder --------------------------------------------------------


def _ordered_archive(org: Org, files: dict[str, bytes], order: list[tuple[str, bytes, bytes]]) -> dict[str, Any]:
    """A signed upload whose archive holds the manifest, then `order` as given: (name, tar type, data)."""
    content = bundle_store.content_manifest(files, "harbor-support", "1.0.0")
    digest = bundle_store.digest_of(content)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        manifest = (json.dumps(content, sort_keys=True) + "\n").encode()
        entries = [(bundle_store.MANIFEST_NAME, tarfile.REGTYPE, manifest), *order]
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return {
        "archive": base64.b64encode(buf.getvalue()).decode(),
        "signature": org.key.sign(digest.encode("ascii")),
        "key_id": org.key.key_id,
    }


@pytest.mark.parametrize("file_first", [True, False])
def test_bundle_upload_name_that_is_a_file_and_a_folder_is_422(
    file_first: bool, org: Org, client: TestClient, scratch: Path
) -> None:
    files = harbor_files()
    files["knowledge/extra"] = b"# a file\n"
    files["knowledge/extra/more.md"] = b"# under a folder of the same name\n"
    r = upload(
        client,
        org,
        signed_body(org, files)
        if file_first
        else _ordered_archive(org, files, [(n, tarfile.REGTYPE, files[n]) for n in sorted(files, reverse=True)]),
    )
    assert r.status_code == 422, r.text
    assert "'knowledge/extra' both as a file and as a folder" in problems_of(r)
    assert list(scratch.iterdir()) == [] and stored_bundles(org) == 0


def test_bundle_upload_folder_member_named_like_a_file_is_422(org: Org, client: TestClient, scratch: Path) -> None:
    files = harbor_files()
    order = [(n, tarfile.REGTYPE, files[n]) for n in sorted(files)] + [("agent.yaml", tarfile.DIRTYPE, b"")]
    r = upload(client, org, _ordered_archive(org, files, order))
    assert r.status_code == 422, r.text
    assert "'agent.yaml' is not a regular file" in problems_of(r)
    assert list(scratch.iterdir()) == [] and stored_bundles(org) == 0


def test_bundle_open_refuses_a_file_and_folder_clash_before_writing(tmp_path: Path) -> None:
    files = {"agent.yaml": b"name: x\n", "topics/a": b"x: 1\n", "topics/a/b.yaml": b"x: 2\n"}
    archive = bundle_store.make_archive(files, bundle_store.content_manifest(files, "x", "1"))
    with pytest.raises(bundle_store.BundleFormatError, match="'topics/a' both as a file and as a folder"):
        bundle_store.extract_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
