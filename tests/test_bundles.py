"""Signed, content-addressed bundles: build checks, determinism, verification, safe opening, diff, store."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from tests.helpers.agents import NOW, add_connector
from tests.helpers.paths import HARBOR_AGENT
from voxgate.cli.bundle import app as bundle_cli
from voxgate.governance.bundle_store import (
    MANIFEST_NAME,
    BundleBuildError,
    BundleFormatError,
    BundleIntegrityError,
    BundleLoadError,
    BundleNotFoundError,
    BundleRejected,
    accept_upload,
    build_bundle,
    diff_bundles,
    load_stored,
    make_archive,
    open_bundle,
    read_archive,
    register_signing_key,
    scan_secrets,
    store_bundle,
    verify_bundle,
)
from voxgate.governance.dlp import active_exceptions, grant_exception
from voxgate.governance.environments import GovernanceConfig, load_governance
from voxgate.signing import KeyPair
from voxgate.store.db import Database
from voxgate.store.models import BundleRow, SigningKeyRow

STRIPE_KEY = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"  # split so this test file is not itself a finding


@pytest.fixture(scope="module")
def gov() -> GovernanceConfig:
    return load_governance()


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture(scope="module")
def built(gov: GovernanceConfig, key: KeyPair):  # type: ignore[no-untyped-def]
    return build_bundle(HARBOR_AGENT, gov.get("prod"), [], key, "u-maker", now=NOW)


def insert_line(path: Path, after: str, text: str) -> int:
    """Insert `text` as a new line after the first line equal to `after`; returns its line number."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    i = next(n for n, ln in enumerate(lines) if ln.rstrip("\n") == after)
    lines.insert(i + 1, text + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return i + 2


# ---- build ---------------------------------------------------------------------------------------


def test_harbor_builds_for_every_environment_with_one_digest(gov: GovernanceConfig, key: KeyPair, built) -> None:
    digests = set()
    for name in gov.names():
        b = build_bundle(HARBOR_AGENT, gov.get(name), [], key, "u-maker", now=NOW)
        assert b.built_for == name and b.agent == "harbor-support" and b.version == "1.0.0"
        assert b.dlp is not None and b.dlp.ok
        assert b.archive == built.archive  # the archive depends on content only
        digests.add(b.digest)
    assert digests == {built.digest}
    assert built.digest.startswith("sha256:") and len(built.digest) == 7 + 64
    content = built.manifest["content"]
    assert sorted(content["files"]) == sorted(
        p.relative_to(HARBOR_AGENT).as_posix() for p in HARBOR_AGENT.rglob("*") if p.is_file()
    )
    assert built.manifest["build"]["built_for"] == "prod" and built.manifest["build"]["author_id"] == "u-maker"


def test_rebuild_is_byte_identical_and_ignores_mtimes_and_line_endings(
    agent_copy: Path, gov: GovernanceConfig, key: KeyPair, built
) -> None:
    first = build_bundle(agent_copy, gov.get("dev"), [], key, "u-maker", now=NOW)
    assert first.digest == built.digest and first.archive == built.archive
    for p in agent_copy.rglob("*.yaml"):
        os.utime(p, (1_000_000, 1_000_000))
    topic = agent_copy / "topics" / "order_status.yaml"
    topic.write_bytes(topic.read_bytes().replace(b"\n", b"\r\n"))
    (agent_copy / ".DS_Store").write_bytes(b"\x00\x01finder junk")  # hidden files are not content
    again = build_bundle(agent_copy, gov.get("dev"), [], key, "u-maker", now=NOW + dt.timedelta(days=1))
    assert again.digest == built.digest and again.archive == built.archive


def test_archive_is_normalised(built) -> None:
    raw = built.archive
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\x00\x00\x00\x00"  # gzip magic, mtime 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == MANIFEST_NAME and names[1:] == sorted(names[1:])
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) for m in members} == {
        (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
    }


def test_any_content_change_changes_the_digest(agent_copy: Path, gov: GovernanceConfig, key: KeyPair, built) -> None:
    knowledge = agent_copy / "knowledge" / "stores.md"
    knowledge.write_text(knowledge.read_text(encoding="utf-8") + "Closed on public holidays.\n", encoding="utf-8")
    changed = build_bundle(agent_copy, gov.get("dev"), [], key, "u-maker", now=NOW)
    assert changed.digest != built.digest


def test_non_business_connector_fails_the_prod_build_naming_the_rule(
    agent_copy: Path, gov: GovernanceConfig, key: KeyPair
) -> None:
    line = add_connector(agent_copy)
    with pytest.raises(BundleBuildError) as err:
        build_bundle(agent_copy, gov.get("prod"), [], key, "u-maker", now=NOW)
    problems = err.value.problems
    assert (
        f"{agent_copy / 'agent.yaml'}:{line}: dlp.mixed_groups: non-business connector 'social_api' cannot be "
        "combined with business connector(s) harbor_api in prod" in problems
    )
    assert any(p.startswith(f"{agent_copy / 'agent.yaml'}:{line}: dlp.endpoint_denied:") for p in problems)


def test_blocked_connector_fails_the_build(agent_copy: Path, gov: GovernanceConfig, key: KeyPair) -> None:
    line = add_connector(
        agent_copy,
        '  paste:\n    type: http\n    base_url: "https://pastebin.com"\n    hosts: ["pastebin.com"]\n'
        "    classification: public\n",
        "  dump:\n    connector: paste\n    method: POST\n    path: /api/api_post.php\n    customer_scoped: false\n",
    )
    with pytest.raises(BundleBuildError) as err:
        build_bundle(agent_copy, gov.get("dev"), [], key, "u-maker", now=NOW)
    assert any(
        p.startswith(f"{agent_copy / 'agent.yaml'}:{line}: dlp.blocked_connector:") and "pastebin.com" in p
        for p in err.value.problems
    ), err.value.problems


def test_exception_lets_the_build_pass_until_it_expires(
    db: Database, agent_copy: Path, gov: GovernanceConfig, key: KeyPair
) -> None:
    add_connector(agent_copy)
    for rule, host in (("mixing", None), ("endpoint", "api.socialnet.example")):
        grant_exception(
            db,
            environment="prod",
            connector="social_api",
            rule=rule,
            host=host,
            reason="marketing pilot, CAB-1234",
            approver_id="u-approver",
            created_by="u-maker",
            expires_at=NOW + dt.timedelta(days=14),
            now=NOW,
        )
    during = NOW + dt.timedelta(days=1)
    b = build_bundle(agent_copy, gov.get("prod"), active_exceptions(db, "prod", now=during), key, "u-maker", now=during)
    assert b.dlp is not None and {v.rule for v in b.dlp.exempted} == {"dlp.mixed_groups", "dlp.endpoint_denied"}
    assert b.manifest["build"]["dlp"]["exempted"]  # the signed build record says what was lifted
    after = NOW + dt.timedelta(days=15)
    with pytest.raises(BundleBuildError) as err:
        build_bundle(agent_copy, gov.get("prod"), active_exceptions(db, "prod", now=after), key, "u-maker", now=after)
    assert any("dlp.mixed_groups" in p for p in err.value.problems)


def test_inline_api_key_in_a_topic_fails_with_path_and_line(
    agent_copy: Path, gov: GovernanceConfig, key: KeyPair
) -> None:
    topic = agent_copy / "topics" / "billing_dispute.yaml"
    line = insert_line(topic, "requires_verification: true", f"api_key: {STRIPE_KEY}")
    with pytest.raises(BundleBuildError) as err:
        build_bundle(agent_copy, gov.get("dev"), [], key, "u-maker", now=NOW)
    secret = [p for p in err.value.problems if "inline secret" in p]
    assert len(secret) == 1 and secret[0].startswith(f"{topic}:{line}: inline secret (")
    assert "Stripe Access Key" in secret[0] and "credential field 'api_key'" in secret[0]
    assert STRIPE_KEY not in str(err.value)  # never echo the value


def test_secret_inside_valid_text_is_found_by_the_scanner(agent_copy: Path) -> None:
    topic = agent_copy / "topics" / "store_hours.yaml"
    text = topic.read_text(encoding="utf-8")
    topic.write_text(text + f"# staging key: {STRIPE_KEY}\n", encoding="utf-8")
    findings = scan_secrets(agent_copy)
    line = len(text.splitlines()) + 1
    assert [(f.path, f.line, f.kind) for f in findings] == [(str(topic), line, "Stripe Access Key")]
    assert STRIPE_KEY not in repr(findings)


def test_a_file_scanned_before_reports_its_findings_at_its_own_path_and_a_changed_one_is_scanned_again(
    agent_copy: Path, tmp_path: Path
) -> None:
    topic = agent_copy / "topics" / "store_hours.yaml"
    text = topic.read_text(encoding="utf-8")
    topic.write_text(text + f"# staging key: {STRIPE_KEY}\n", encoding="utf-8")
    first = scan_secrets(agent_copy)
    other = tmp_path / "other-copy"
    shutil.copytree(agent_copy, other)
    # the same content elsewhere: the stored result, named by where this copy lies
    assert [(f.path, f.line, f.kind) for f in scan_secrets(other)] == [
        (str(other / "topics" / "store_hours.yaml"), first[0].line, "Stripe Access Key")
    ]
    topic.write_text(text, encoding="utf-8")  # the key removed: scanned again, nothing found
    assert scan_secrets(agent_copy) == []
    topic.write_text(f"# {STRIPE_KEY}\n" + text, encoding="utf-8")  # moved to another line
    assert [(f.line, f.kind) for f in scan_secrets(agent_copy)] == [(1, "Stripe Access Key")]


def test_credentials_in_headers_and_urls_are_findings(agent_copy: Path) -> None:
    agent = agent_copy / "agent.yaml"
    header_line = insert_line(agent, "    classification: personal", "    headers: {X-Api-Key: abc123plainvalue}")
    findings = scan_secrets(agent_copy)
    assert any(f.line == header_line and "header 'X-Api-Key'" in f.kind for f in findings), findings
    knowledge = agent_copy / "knowledge" / "admin.md"
    knowledge.write_text(
        "# Admin\n\nBackups: https://backup:hunter2hunter2@files.harbor.internal/db\n", encoding="utf-8"
    )
    assert any(f.path == str(knowledge) and f.line == 3 for f in scan_secrets(agent_copy))


def test_harbor_has_no_findings_and_references_are_fine() -> None:
    # `token: env:HARBOR_API_KEY` is a reference; `secret_prompt: "...PIN?"` is not a credential
    assert scan_secrets(HARBOR_AGENT) == []


def test_spec_errors_and_symlinks_are_build_problems(agent_copy: Path, gov: GovernanceConfig, key: KeyPair) -> None:
    (agent_copy / "knowledge" / "passwd.md").symlink_to("/etc/passwd")
    topic = agent_copy / "topics" / "order_status.yaml"
    topic.write_text(
        topic.read_text(encoding="utf-8").replace("name: order_status", "name: order_status\ncolour: red"),
        encoding="utf-8",
    )
    with pytest.raises(BundleBuildError) as err:
        build_bundle(agent_copy, gov.get("dev"), [], key, "u-maker", now=NOW)
    problems = err.value.problems
    assert f"{agent_copy / 'knowledge' / 'passwd.md'}:1: symbolic links are not allowed in a bundle" in problems
    assert any(p.startswith(f"{topic}:") and "unknown field 'colour'" in p for p in problems)


# ---- verify ------------------------------------------------------------------------------------


def test_verify_accepts_the_signed_bundle(built, key: KeyPair) -> None:
    result = verify_bundle(built.archive, built.signature, key.public, built.digest)
    assert result.ok and result.signature_valid and result.problems == []
    assert (result.digest, result.agent, result.version, result.files) == (built.digest, "harbor-support", "1.0.0", 15)


def _repack(archive: bytes, path: str, data: bytes) -> bytes:
    files, claimed = read_archive(archive)
    files[path] = data
    return make_archive(files, claimed)  # the manifest still claims the old content


def test_verify_detects_a_flipped_byte_in_any_file(built, key: KeyPair) -> None:
    files, _ = read_archive(built.archive)
    for path, data in files.items():
        for pos in {0, len(data) // 2, len(data) - 1}:
            flipped = bytearray(data)
            flipped[pos] ^= 0x01
            result = verify_bundle(_repack(built.archive, path, bytes(flipped)), built.signature, key.public)
            assert not result.ok and not result.signature_valid, (path, pos)
            assert result.digest is not None and result.digest != built.digest
            assert f"{MANIFEST_NAME} does not describe the archive's files" in result.problems


def test_verify_detects_a_flipped_byte_in_the_compressed_archive(built, key: KeyPair) -> None:
    raw = bytearray(built.archive)
    raw[len(raw) // 2] ^= 0x40
    result = verify_bundle(bytes(raw), built.signature, key.public, built.digest)
    assert not result.ok


def test_verify_detects_a_wrong_key_and_a_wrong_digest(built) -> None:
    other = KeyPair.generate()
    result = verify_bundle(built.archive, built.signature, other.public, built.digest)
    assert not result.ok and not result.signature_valid
    assert any("signature is not valid" in p for p in result.problems)
    expected = "sha256:" + "0" * 64
    wrong = verify_bundle(built.archive, built.signature, KeyPair.generate().public, expected)
    assert any(f"is not the expected {expected}" in p for p in wrong.problems)


def test_verify_recomputes_instead_of_trusting_the_manifest(built, key: KeyPair) -> None:
    files, claimed = read_archive(built.archive)
    files["topics/store_hours.yaml"] += b"# added after signing\n"
    lying = make_archive(files, claimed)
    result = verify_bundle(lying, built.signature, key.public, built.digest)
    assert not result.ok and result.digest != built.digest


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil.yaml", "/etc/cron.d/evil", "topics/../../evil.yaml"])
def test_unsafe_paths_are_refused(built, tmp_path: Path, name: str) -> None:
    files, claimed = read_archive(built.archive)
    entries = [(tarfile.TarInfo(MANIFEST_NAME), json.dumps(claimed).encode())]
    entries += [(tarfile.TarInfo(p), d) for p, d in files.items()] + [(tarfile.TarInfo(name), b"x: 1\n")]
    with pytest.raises(BundleFormatError, match="unsafe path"):
        open_bundle(_tar(entries), into=tmp_path / "out")
    assert not (tmp_path / "evil.yaml").exists()


def test_links_in_archives_are_refused(built) -> None:
    link = tarfile.TarInfo("knowledge/passwd.md")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    files, claimed = read_archive(built.archive)
    entries = [(tarfile.TarInfo(MANIFEST_NAME), json.dumps(claimed).encode()), (link, b"")]
    with pytest.raises(BundleFormatError, match="not a regular file"):
        read_archive(_tar(entries))
    with pytest.raises(BundleFormatError, match="not a bundle archive"):
        read_archive(b"definitely not gzip")


def test_open_bundle_loads_with_the_spec_loader(built, harbor_bundle, tmp_path: Path) -> None:
    source = open_bundle(built.archive)
    assert source.agent == harbor_bundle.agent
    assert sorted(source.topics) == sorted(harbor_bundle.topics)
    kept = open_bundle(built.archive, into=tmp_path / "harbor")
    assert (tmp_path / "harbor" / "agent.yaml").is_file() and kept.agent.name == "harbor-support"


def test_diff_shows_changed_added_and_removed_files(
    agent_copy: Path, gov: GovernanceConfig, key: KeyPair, built
) -> None:
    assert diff_bundles(built.archive, built.archive) == ""
    topic = agent_copy / "topics" / "store_hours.yaml"
    topic.write_text(
        topic.read_text(encoding="utf-8").replace("description:", "description: (updated)", 1), encoding="utf-8"
    )
    (agent_copy / "knowledge" / "roaming.md").write_text("# Roaming\n\nRoaming is free in the EU.\n", encoding="utf-8")
    (agent_copy / "knowledge" / "payments.md").unlink()
    new = build_bundle(agent_copy, gov.get("dev"), [], key, "u-maker", now=NOW)
    text = diff_bundles(built.archive, new.archive)
    assert "--- a/topics/store_hours.yaml\n+++ b/topics/store_hours.yaml\n" in text
    assert "+description: (updated)" in text
    assert "added: knowledge/roaming.md\n" in text and "+Roaming is free in the EU.\n" in text
    assert "removed: knowledge/payments.md\n" in text
    assert "agent.yaml" not in text


# ---- store -------------------------------------------------------------------------------------


def test_store_and_load_round_trip(db: Database, built, key: KeyPair) -> None:
    register_signing_key(db, key.public, "u-maker")
    stored = store_bundle(db, built)
    assert (stored.digest, stored.agent, stored.version, stored.author_id, stored.built_for) == (
        built.digest,
        "harbor-support",
        "1.0.0",
        "u-maker",
        "prod",
    )
    again = load_stored(db, built.digest)
    assert again.archive == built.archive and again.manifest == built.manifest
    assert again.source.agent.name == "harbor-support"
    assert store_bundle(db, built).digest == built.digest  # idempotent
    with pytest.raises(BundleNotFoundError, match="no bundle sha256:0"):
        load_stored(db, "sha256:" + "0" * 64)


def test_store_refuses_unregistered_foreign_and_revoked_keys(db: Database, built, key: KeyPair) -> None:
    with pytest.raises(BundleRejected, match=f"signing key {key.key_id} is not registered"):
        store_bundle(db, built)
    register_signing_key(db, key.public, "u-someone-else")
    with pytest.raises(BundleRejected, match="says author u-maker but key .* belongs to u-someone-else"):
        store_bundle(db, built)
    with pytest.raises(BundleRejected, match="not by the uploader u-x"):
        store_bundle(db, built, uploaded_by="u-x")


def _tamper(db: Database, digest: str, **values: object) -> None:
    with db.engine.begin() as conn:
        conn.execute(update(BundleRow.__table__).where(BundleRow.__table__.c.digest == digest).values(**values))


def _stored(db: Database, built, key: KeyPair) -> None:
    register_signing_key(db, key.public, "u-maker")
    store_bundle(db, built)


def test_archive_altered_in_the_database_fails_to_load(db: Database, built, key: KeyPair) -> None:
    _stored(db, built, key)
    files, claimed = read_archive(built.archive)
    files["agent.yaml"] = files["agent.yaml"].replace(
        b'hosts: ["127.0.0.1", "localhost"]', b'hosts: ["127.0.0.1", "localhost", "exfil.example.net"]'
    )
    _tamper(db, built.digest, archive=make_archive(files, claimed))
    with pytest.raises(BundleIntegrityError) as err:
        load_stored(db, built.digest)
    assert isinstance(err.value, BundleLoadError)
    assert any("is not the expected" in p for p in err.value.problems)


@pytest.mark.parametrize("what", ["built_for", "author", "content", "dlp"])
def test_manifest_altered_in_the_database_fails_to_load(db: Database, built, key: KeyPair, what: str) -> None:
    _stored(db, built, key)
    manifest = json.loads(json.dumps(built.manifest))
    if what == "built_for":
        manifest["build"]["built_for"] = "dev"
    elif what == "author":
        manifest["build"]["author_id"] = "u-approver"
    elif what == "content":
        manifest["content"]["files"]["agent.yaml"]["size"] += 1
    else:
        manifest["build"]["dlp"]["warnings"] = ["nothing to see"]
    _tamper(db, built.digest, manifest=manifest)
    with pytest.raises(BundleIntegrityError, match=f"bundle {built.digest} failed verification"):
        load_stored(db, built.digest)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("built_for", "dev"),
        ("author_id", "u-approver"),
        ("agent", "other-agent"),
        ("signature", "AAAA"),
        ("version", "9.9.9"),
    ],
)
def test_columns_altered_in_the_database_fail_to_load(
    db: Database, built, key: KeyPair, column: str, value: str
) -> None:
    _stored(db, built, key)
    _tamper(db, built.digest, **{column: value})
    with pytest.raises(BundleIntegrityError):
        load_stored(db, built.digest)


def test_revoked_key_stops_serving(db: Database, built, key: KeyPair) -> None:
    _stored(db, built, key)
    with db.engine.begin() as conn:
        conn.execute(
            update(SigningKeyRow.__table__).where(SigningKeyRow.__table__.c.key_id == key.key_id).values(revoked_at=NOW)
        )
    with pytest.raises(BundleIntegrityError, match="was revoked"):
        load_stored(db, built.digest)


@pytest.mark.sqlite_only  # the server's checks refuse before anything is stored
def test_upload_is_rechecked_on_the_server(
    db: Database, gov: GovernanceConfig, key: KeyPair, built, agent_copy: Path
) -> None:
    register_signing_key(db, key.public, "u-maker")
    # with the builder's signed manifest: kept as signed
    out = accept_upload(
        db,
        built.archive,
        built.signature,
        key.public,
        author_id="u-maker",
        environment=gov.get("prod"),
        now=NOW,
        manifest=built.manifest,
    )
    assert out["digest"] == built.digest and out["signed_build_record"] is True
    assert load_stored(db, built.digest).manifest == built.manifest

    # an archive that carries a secret and a non-business connector is refused, naming places in the bundle
    topic = agent_copy / "topics" / "store_hours.yaml"
    line = len(topic.read_text(encoding="utf-8").splitlines()) + 1
    topic.write_text(topic.read_text(encoding="utf-8") + f"# {STRIPE_KEY}\n", encoding="utf-8")
    add_connector(agent_copy)
    files, _ = read_archive(built.archive)
    sneaky_files = {p.relative_to(agent_copy).as_posix(): p.read_bytes() for p in agent_copy.rglob("*") if p.is_file()}
    from voxgate.governance.bundle_store import content_manifest, digest_of

    content = content_manifest(sneaky_files, "harbor-support", "1.0.0")
    sneaky = make_archive(sneaky_files, content)
    signature = key.sign(digest_of(content).encode("ascii"))
    with pytest.raises(BundleRejected) as err:
        accept_upload(db, sneaky, signature, key.public, author_id="u-maker", environment=gov.get("prod"), now=NOW)
    problems = err.value.problems
    assert (
        f"harbor-support/topics/store_hours.yaml:{line}: inline secret (Stripe Access Key): use a secret "
        "reference (env:NAME, file:PATH or vault:PATH#KEY)" in problems
    )
    assert any("dlp.mixed_groups" in p and p.startswith("harbor-support/agent.yaml:") for p in problems)


def test_upload_without_builder_manifest_gets_a_server_record(
    db: Database, gov: GovernanceConfig, key: KeyPair, built
) -> None:
    register_signing_key(db, key.public, "u-maker")
    with pytest.raises(BundleRejected, match="does not belong to u-other"):
        accept_upload(db, built.archive, built.signature, key.public, author_id="u-other", environment=gov.get("test"))
    with pytest.raises(BundleRejected, match="signature is not valid"):
        accept_upload(
            db,
            built.archive,
            KeyPair.generate().sign(built.digest.encode()),
            key.public,
            author_id="u-maker",
            environment=gov.get("test"),
        )
    out = accept_upload(
        db, built.archive, built.signature, key.public, author_id="u-maker", environment=gov.get("test"), now=NOW
    )
    assert out["signed_build_record"] is False and out["built_for"] == "test"
    stored = load_stored(db, built.digest)
    assert stored.manifest["build"]["recorded_by"] == "server"
    _tamper(db, built.digest, built_for="prod")
    with pytest.raises(BundleIntegrityError, match="column built_for is 'prod'"):
        load_stored(db, built.digest)


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_build_verify_inspect_diff(tmp_path: Path, agent_copy: Path) -> None:
    runner = CliRunner()
    key_path = tmp_path / "keys" / "signing-key.pem"
    out = tmp_path / "out" / "harbor.vxb"
    r = runner.invoke(
        bundle_cli,
        [
            "build",
            str(HARBOR_AGENT),
            "--env",
            "prod",
            "--key",
            str(key_path),
            "--out",
            str(out),
            "--author",
            "u-maker",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["ok"] and info["built_for"] == "prod" and info["key_created"]
    assert key_path.stat().st_mode & 0o777 == 0o600
    sig = json.loads(out.with_name("harbor.vxb.sig").read_text())
    assert sig["digest"] == info["digest"] and sig["key_id"] == info["key_id"]

    r = runner.invoke(bundle_cli, ["verify", str(out), "--public-key", info["public_key"], "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] and json.loads(r.stdout)["key_pinned"]
    r = runner.invoke(bundle_cli, ["verify", str(out), "--public-key", KeyPair.generate().public.b64])
    assert r.exit_code == 1 and "signature is not valid" in r.stderr

    tampered = tmp_path / "out" / "tampered.vxb"
    tampered.write_bytes(_repack(out.read_bytes(), "topics/store_hours.yaml", b"name: store_hours\n"))
    shutil.copy(out.with_name("harbor.vxb.sig"), tmp_path / "out" / "tampered.vxb.sig")
    r = runner.invoke(bundle_cli, ["verify", str(tampered)])
    assert r.exit_code == 1 and "is not the expected" in r.stderr

    r = runner.invoke(bundle_cli, ["inspect", str(out), "--json"])
    assert r.exit_code == 0
    inspected = json.loads(r.stdout)
    assert inspected["digest"] == info["digest"] and inspected["build"]["author_id"] == "u-maker"
    assert inspected["signature"]["matches_content"] is True

    (agent_copy / "knowledge" / "roaming.md").write_text("# Roaming\n", encoding="utf-8")
    r = runner.invoke(bundle_cli, ["diff", str(out), str(agent_copy)])
    assert r.exit_code == 0 and "added: knowledge/roaming.md" in r.stdout


def test_cli_build_failure_prints_each_problem_and_exits_2(tmp_path: Path, agent_copy: Path) -> None:
    topic = agent_copy / "topics" / "billing_dispute.yaml"
    # a comment keeps the topic valid, so the DLP check runs as well and both are reported
    line = insert_line(topic, "requires_verification: true", f"# api_key: {STRIPE_KEY}")
    add_connector(agent_copy)
    r = CliRunner().invoke(
        bundle_cli,
        ["build", str(agent_copy), "--env", "prod", "--key", str(tmp_path / "k.pem"), "--out", str(tmp_path / "x.vxb")],
    )
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert any(ln.startswith(f"{topic}:{line}: inline secret") for ln in lines)
    assert any(": dlp.mixed_groups: " in ln for ln in lines)
    assert STRIPE_KEY not in r.output
    assert not (tmp_path / "x.vxb").exists()
    r = CliRunner().invoke(bundle_cli, ["build", str(agent_copy), "--env", "staging", "--key", str(tmp_path / "k.pem")])
    assert r.exit_code == 2 and "unknown environment 'staging' (known: dev, test, prod)" in r.stderr
    r = CliRunner().invoke(bundle_cli, ["verify", str(tmp_path / "missing.vxb")])
    assert r.exit_code == 2 and "cannot read" in r.stderr


def test_cli_build_reads_exceptions_from_the_database(
    db: Database, db_url: str, tmp_path: Path, agent_copy: Path
) -> None:
    add_connector(agent_copy)
    args = [
        "build",
        str(agent_copy),
        "--env",
        "dev",
        "--key",
        str(tmp_path / "k.pem"),
        "--out",
        str(tmp_path / "x.vxb"),
        "--json",
    ]
    r = CliRunner().invoke(bundle_cli, args)
    assert r.exit_code == 2 and any("dlp.mixed_groups" in p for p in json.loads(r.stdout)["problems"])
    now = dt.datetime.now(dt.UTC)
    granted = grant_exception(
        db,
        environment="dev",
        connector="social_api",
        rule="mixing",
        reason="pilot",
        approver_id="u-approver",
        created_by="u-maker",
        expires_at=now + dt.timedelta(days=1),
        now=now,
    )
    r = CliRunner().invoke(bundle_cli, args + ["--db", db_url])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["exceptions_considered"] and [v["exception_id"] for v in out["dlp_exempted"]] == [granted.id]
    r = CliRunner().invoke(bundle_cli, args + ["--db", "nonsense://"])
    assert r.exit_code == 2 and "--db:" in r.stderr
