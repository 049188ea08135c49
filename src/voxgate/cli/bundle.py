"""`voxgate bundle …`: build, verify, diff and inspect signed, content-addressed agent bundles."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from voxgate.cli._common import echo_json, fail

app = typer.Typer(
    help="Build, verify, inspect and diff signed agent bundles.\n\n"
    "A bundle is a deterministic .vxb archive (tar.gz) of an agent directory whose id is the sha256 "
    "of its content; `build` writes it with a FILE.sig signature file next to it.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

DEFAULT_KEY = Path("~/.config/voxgate/signing-key.pem")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _emit(data: dict[str, Any]) -> None:
    """A bundle command's --json output: keys sorted, so two runs diff cleanly."""
    echo_json(data, sort_keys=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror})")


def _sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{path}: cannot read the signature file ({exc.strerror})")
    except ValueError as exc:
        fail(f"{path}:{getattr(exc, 'lineno', 1)}: not JSON ({exc})")
    if not isinstance(data, dict) or not isinstance(data.get("signature"), str):
        fail(f"{path}:1: not a voxgate signature file (no 'signature')")
    return data


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._+-]")


def default_archive_name(agent: str, version: str) -> str:
    """AGENT-VERSION.vxb as one file name in the current folder: the agent's name is an identifier,
    the version is free text, so anything but letters, digits and `._+-` in it becomes `_`."""
    return f"{agent}-{_UNSAFE_IN_NAME.sub('_', version)[:64] or '0'}.vxb"


@app.command("build")
def build(
    path: Annotated[Path, typer.Argument(help="Agent directory (agent.yaml, topics/, knowledge/, tests/).")],
    env: Annotated[str, typer.Option("--env", help="Environment whose DLP policy the bundle is checked against.")],
    policy_dir: Annotated[
        Path | None,
        typer.Option("--policy-dir", envvar="VOXGATE_POLICY_DIR", help="Policy directory (default: packaged)."),
    ] = None,
    key: Annotated[
        Path,
        typer.Option("--key", envvar="VOXGATE_SIGNING_KEY", help="Ed25519 signing key (PEM); created 0600 if missing."),
    ] = DEFAULT_KEY,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Archive to write (default: AGENT-VERSION.vxb); FILE.sig next to it."),
    ] = None,
    author: Annotated[
        str,
        typer.Option("--author", envvar="VOXGATE_AUTHOR", help="Your user id, recorded in the signed build record."),
    ] = "local",
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar="VOXGATE_DATABASE_URL", help="Database to read DLP exceptions from (default: none)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate, scan for inline secrets, check DLP for --env, then write a signed archive.

    On failure prints every problem as path:line: message and exits 2.
    """
    from voxgate.governance.bundle_store import BundleBuildError, build_bundle
    from voxgate.governance.environments import GovernanceConfigError, UnknownEnvironmentError, load_governance
    from voxgate.signing import KeyPair, SigningError

    try:
        environment = load_governance(policy_dir).get(env)
    except GovernanceConfigError as exc:
        fail(str(exc))
    except UnknownEnvironmentError as exc:
        fail(str(exc))
    exceptions: list[Any] = []
    if db:
        from voxgate.governance.dlp import active_exceptions
        from voxgate.store.db import Database

        url = "postgresql+psycopg://" + db[len("postgresql://") :] if db.startswith("postgresql://") else db
        try:
            database = Database(url)
        except Exception as exc:  # a URL the user typed: say so, never a traceback
            fail(f"--db: not a database URL ({exc.__class__.__name__}); use sqlite:///PATH or postgresql://…")
        try:
            exceptions = active_exceptions(database, environment.name)
        except Exception as exc:
            fail(f"--db: cannot read DLP exceptions ({exc.__class__.__name__})")
        finally:
            database.dispose()
    key_path = key.expanduser()
    created = not key_path.exists()
    try:
        pair = KeyPair.load_or_create(key_path)
    except (SigningError, OSError) as exc:
        fail(str(exc) if isinstance(exc, SigningError) else f"{key_path}: cannot create signing key ({exc.strerror})")
    try:
        built = build_bundle(path, environment, exceptions, pair, author)
    except BundleBuildError as exc:
        if as_json:
            _emit({"ok": False, "problems": exc.problems})
        else:
            for problem in exc.problems:
                typer.echo(problem, err=True)
            typer.echo(f"{len(exc.problems)} problem(s): bundle not built", err=True)
        raise typer.Exit(2) from None
    target = out or Path(default_archive_name(built.agent, built.version))
    sig_path = target.with_name(target.name + ".sig")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(built.archive)
        sig_path.write_text(json.dumps(built.sidecar(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"{target}: cannot write ({exc.strerror})")
    report = built.dlp
    warnings = report.warnings if report is not None else []
    result = {
        "ok": True,
        "digest": built.digest,
        "agent": built.agent,
        "version": built.version,
        "built_for": built.built_for,
        "author_id": built.author_id,
        "key_id": built.key_id,
        "public_key": built.public_key,
        "key_created": created,
        "archive": str(target),
        "signature_file": str(sig_path),
        "dlp_warnings": warnings,
        "dlp_exempted": [v.model_dump() for v in report.exempted] if report else [],
        "exceptions_considered": bool(db),
    }
    if as_json:
        _emit(result)
        return
    if created:
        typer.echo(f"created signing key {key_path} (key id {built.key_id})", err=True)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    for v in report.exempted if report is not None else ():
        typer.echo(f"note: {v.rule} for connector '{v.connector}' lifted by exception {v.exception_id}", err=True)
    typer.echo(f"{built.digest}  {built.agent} {built.version}  built for {built.built_for}")
    typer.echo(f"wrote {target} and {sig_path} (signed by key {built.key_id})")


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="A .vxb archive.")],
    signature: Annotated[Path | None, typer.Option("--signature", help="Signature file (default: FILE.sig).")] = None,
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="Base64 Ed25519 public key to require (pins the signer).")
    ] = None,
    digest: Annotated[str | None, typer.Option("--digest", help="Digest the content must have.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute the digest from the archive's files and check the signature (exit 1 if it fails).

    Without --public-key the key in the signature file is used: that proves the archive is intact,
    not who signed it.
    """
    from voxgate.governance.bundle_store import verify_bundle
    from voxgate.signing import PublicKey, SigningError

    archive = _read(file)
    sidecar = _sidecar(signature or file.with_name(file.name + ".sig"))
    try:
        key = PublicKey.from_b64(public_key or str(sidecar.get("public_key", "")))
    except (SigningError, ValueError):
        fail(
            "--public-key: not a base64 Ed25519 public key"
            if public_key
            else "signature file has no valid public_key; give --public-key"
        )
    expected = digest or sidecar.get("digest")
    result = verify_bundle(archive, str(sidecar["signature"]), key, expected_digest=expected)
    out = result.as_dict() | {"key_pinned": public_key is not None}
    if as_json:
        _emit(out)
    elif result.ok:
        typer.echo(f"ok: {result.digest}  {result.agent} {result.version}  signed by key {result.key_id}")
        if public_key is None:
            typer.echo("note: the key came from the signature file; pass --public-key to check who signed it", err=True)
    else:
        for problem in result.problems:
            typer.echo(f"{file}: {problem}", err=True)
    if not result.ok:
        raise typer.Exit(1)


def _archive_of(path: Path) -> bytes:
    """An archive file as is, or a directory packed the way `build` packs it (unsigned)."""
    from voxgate.governance.bundle_store import BundleRejected, pack_directory

    if path.is_dir():
        try:
            return pack_directory(path)[1]
        except BundleRejected as exc:
            fail("\n".join(exc.problems))
    return _read(path)


@app.command("diff")
def diff(
    a: Annotated[Path, typer.Argument(help="Old bundle: a .vxb archive or an agent directory.")],
    b: Annotated[Path, typer.Argument(help="New bundle: a .vxb archive or an agent directory.")],
) -> None:
    """Show what changed between two bundles: a unified diff per file, plus added and removed files."""
    from voxgate.governance.bundle_store import BundleFormatError, diff_bundles

    try:
        text = diff_bundles(_archive_of(a), _archive_of(b))
    except BundleFormatError as exc:
        fail(str(exc))
    if text:
        sys.stdout.write(text)
    else:
        typer.echo("no differences", err=True)


@app.command("inspect")
def inspect(
    file: Annotated[Path, typer.Argument(help="A .vxb archive (its FILE.sig is read when present).")],
    as_json: JsonOpt = False,
) -> None:
    """Show a bundle's digest (recomputed from its files), agent, files and build record."""
    from voxgate.governance.bundle_store import (
        BundleFormatError,
        agent_identity,
        content_manifest,
        digest_of,
        read_archive,
    )

    archive = _read(file)
    try:
        files, _ = read_archive(archive)
        agent, version = agent_identity(files)
    except BundleFormatError as exc:
        fail(f"{file}: {exc}")
    content = content_manifest(files, agent, version)
    info: dict[str, Any] = {
        "digest": digest_of(content),
        "agent": agent,
        "version": version,
        "files": content["files"],
        "archive_bytes": len(archive),
    }
    sig_path = file.with_name(file.name + ".sig")
    if sig_path.exists():
        sidecar = _sidecar(sig_path)
        build = sidecar.get("manifest", {}).get("build", {}) if isinstance(sidecar.get("manifest"), dict) else {}
        info["signature"] = {
            "file": str(sig_path),
            "key_id": sidecar.get("key_id"),
            "claims_digest": sidecar.get("digest"),
            "matches_content": sidecar.get("digest") == info["digest"],
        }
        info["build"] = {k: build.get(k) for k in ("built_for", "tier", "author_id", "built_at", "voxgate_version")}
        info["build"]["dlp_warnings"] = build.get("dlp", {}).get("warnings", [])
    if as_json:
        _emit(info)
        return
    typer.echo(f"digest:  {info['digest']}")
    typer.echo(f"agent:   {agent} {version}")
    if "build" in info:
        b = info["build"]
        typer.echo(
            f"built:   for {b['built_for']} by {b['author_id']} at {b['built_at']} (key {info['signature']['key_id']})"
        )
        if not info["signature"]["matches_content"]:
            typer.echo("warning: the signature file names another digest", err=True)
    typer.echo(f"files:   {len(files)} ({sum(len(v) for v in files.values())} bytes)")
    for name, meta in content["files"].items():
        typer.echo(f"  {meta['size']:>8}  {meta['sha256'][:12]}  {name}")
