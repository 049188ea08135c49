"""Signed, content-addressed agent bundles: secret scan, canonical digest, deterministic archive, verify, store.

A bundle's id is `sha256:` + the sha256 of its canonical content manifest: every file of the
agent directory (sorted relative POSIX paths, text LF-normalised) with its sha256 and size, plus
the agent's name and version. The id depends on content only, so the same directory gives the
same digest whatever environment it is built for, and a digest promoted from dev to prod is the
very content that was tested.

The archive is a deterministic tar.gz (sorted entries, mtime 0, uid/gid 0, fixed modes, gzip
mtime 0) of those files plus `voxgate-manifest.json` (the content manifest). The builder signs
the digest (its ASCII text) with Ed25519, and separately signs the build record (environment it
was checked against, author, time, DLP report, scan summary) so that neither can be edited
afterwards unnoticed. Verification always recomputes the digest from the archive's files, never
from what a manifest claims.

What a bundle may hold. Hidden files and folders (a part of the path starting with '.') and
`__pycache__/` or `node_modules/` folders are left out when a directory is built, and an archive
holding any of them is refused at upload (422, naming the member): a bundle holds exactly what a
build could have packed, so the secret scan, which reads every member of an uploaded archive,
and the content manifest both cover exactly the archive. A refused upload stores nothing.

Limits (module constants; an agent is YAML and documents, not media). Checked while an archive
is read, before anything is written to disk: the gzip stream is decompressed in chunks and
abandoned at the first byte past the cap, so a small archive that inflates to gigabytes costs
no more than the cap. Past a limit an upload is refused with 413.

- MAX_ARCHIVE_BYTES (8 MiB): the compressed archive as uploaded.
- MAX_BUNDLE_BYTES (5 MiB): the files, uncompressed, all together.
- MAX_BUNDLE_FILES (500): files in a bundle.
- MAX_FILE_BYTES (1 MiB): one file (the manifest included).
- MAX_BUNDLE_LINES (25,000): lines of all files together. The secret scan's cost grows with the
  number of lines (about 0.1 ms each), so this bounds the scan to seconds.
"""

from __future__ import annotations

import datetime as dt
import difflib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from sqlalchemy import select

from voxgate import __version__
from voxgate.bundle.loader import BundleError, load_bundle, load_yaml
from voxgate.bundle.models import NAME_RE, NAME_RULE, SECRET_REF_RE, Agent, BundleSource, is_name
from voxgate.errors import ConflictError, InvalidError, NotFoundError, TooLargeError, VoxgateError
from voxgate.governance.dlp import DlpException, DlpReport, check_bundle
from voxgate.signing import KeyPair, PublicKey, SigningError
from voxgate.store.models import BundleRow, SigningKeyRow

if TYPE_CHECKING:
    from voxgate.governance.environments import EnvironmentConfig
    from voxgate.store.db import Database

BUNDLE_FORMAT = "voxgate-bundle/1"
MANIFEST_NAME = "voxgate-manifest.json"
MAX_ARCHIVE_BYTES = 8 * 1024 * 1024
MAX_BUNDLE_BYTES = 5 * 1024 * 1024
MAX_BUNDLE_FILES = 500
MAX_FILE_BYTES = 1024 * 1024
MAX_BUNDLE_LINES = 25_000
# the tar stream around the files: headers (a pax header and a ustar header per member), padding,
# end blocks, the manifest
_TAR_SLACK = MAX_FILE_BYTES + (MAX_BUNDLE_FILES + 1) * 4 * 512 + 64 * 1024
_SKIPPED_DIRS = {"__pycache__", "node_modules"}


def _left_out(rel: str) -> bool:
    """A path a bundle never holds: hidden (any part starts with '.') or inside a cache folder."""
    parts = PurePosixPath(rel).parts
    return any(p.startswith(".") for p in parts) or any(p in _SKIPPED_DIRS for p in parts[:-1])


#: what an upload answers a refused bundle with, as the client reads it: `{"error": ..., "problems": [...]}`
REJECTED = "bundle rejected"


def rejected_detail(problems: list[str]) -> dict[str, Any]:
    """The detail a client gets for a refused bundle: every problem, `path:line: message` where there is a place."""
    return {"error": REJECTED, "problems": problems}


class BundleRejected(InvalidError):
    """A bundle refused at build or upload; `problems` are `path:line: message` where there is a place."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems), detail=rejected_detail(problems))
        self.problems = problems


class BundleRejectedTooLarge(BundleRejected, TooLargeError):
    """A bundle refused at upload because it is past one of the size limits."""


class BundleBuildError(BundleRejected):
    """Raised by `build_bundle` with every problem that stops the build."""


class BundleFormatError(InvalidError):
    """An archive that is not a well-formed voxgate bundle (unsafe path, missing manifest, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, detail=rejected_detail([message]))


class BundleTooLargeError(BundleFormatError, TooLargeError):
    """An archive past one of the module's limits (size, files, lines)."""


def _rejected(exc: BundleFormatError) -> BundleRejected:
    return BundleRejectedTooLarge([str(exc)]) if isinstance(exc, TooLargeError) else BundleRejected([str(exc)])


class BundleLoadError(VoxgateError):
    """A bundle that cannot be served from the store."""


class BundleNotFoundError(BundleLoadError, NotFoundError):
    """No stored bundle has that digest."""


class BundleIntegrityError(BundleLoadError, ConflictError):
    """A stored bundle whose content, digest, signatures or columns do not check out."""

    def __init__(self, digest: str, problems: list[str]) -> None:
        super().__init__(f"bundle {digest} failed verification: " + "; ".join(problems))
        self.digest = digest
        self.problems = problems


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- secret scanning ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretFinding:
    """An inline secret: where it is and what kind; never the value."""

    path: str
    line: int
    kind: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: inline secret ({self.kind}): use a secret reference "
            "(env:NAME, file:PATH or vault:PATH#KEY)"
        )


# detect-secrets plugins that look for credentials by shape. IPPublicDetector is left out: an IP
# address in a connector's hosts is configuration, not a secret.
_DETECT_SECRETS_PLUGINS = [
    {"name": n}
    for n in (
        "AWSKeyDetector",
        "ArtifactoryDetector",
        "AzureStorageKeyDetector",
        "BasicAuthDetector",
        "CloudantDetector",
        "DiscordBotTokenDetector",
        "GitHubTokenDetector",
        "GitLabTokenDetector",
        "IbmCloudIamDetector",
        "IbmCosHmacDetector",
        "JwtTokenDetector",
        "KeywordDetector",
        "MailchimpDetector",
        "NpmDetector",
        "OpenAIDetector",
        "PrivateKeyDetector",
        "PypiTokenDetector",
        "SendGridDetector",
        "SlackDetector",
        "SoftlayerDetector",
        "SquareOAuthDetector",
        "StripeDetector",
        "TelegramBotTokenDetector",
        "TwilioKeyDetector",
    )
] + [{"name": "Base64HighEntropyString", "limit": 4.5}, {"name": "HexHighEntropyString", "limit": 3.0}]
# its heuristic false-positive filters, minus the inline allowlist comment: a bundle's author
# cannot silence the scanner from inside the bundle. No filter here talks to the network.
_DETECT_SECRETS_FILTERS = [
    {"path": f"detect_secrets.filters.{p}"}
    for p in (
        "heuristic.is_indirect_reference",
        "heuristic.is_likely_id_string",
        "heuristic.is_lock_file",
        "heuristic.is_not_alphanumeric_string",
        "heuristic.is_potential_uuid",
        "heuristic.is_prefixed_with_dollar_sign",
        "heuristic.is_sequential_string",
        "heuristic.is_swagger_file",
        "heuristic.is_templated_secret",
    )
]
_detect_secrets_lock = threading.Lock()  # detect-secrets keeps its settings in module globals
# what detect-secrets found in a file, by the file's name and the SHA-256 of its content (its plugins and
# filters are fixed above): a bundle's unchanged files are not scanned again on the next build or upload
_SCANNED_FILES = 1024
_scanned: OrderedDict[tuple[str, bytes], tuple[tuple[int, str], ...]] = OrderedDict()

_CREDENTIAL_KEY_RE = re.compile(
    r"(^|_)(api_?key|apikey|secret|secret_key|client_secret|password|passwd|passphrase|pwd|token|"
    r"access_token|auth_token|refresh_token|bearer|credentials?|private_key|access_key|signing_key)$"
)
_CREDENTIAL_HEADER_RE = re.compile(r"(authorization|api[-_]?key|token|secret|cookie|password|credential)", re.I)
_URL_USERINFO_RE = re.compile(r"[a-z][a-z0-9+.\-]*://[^/\s:@]+:[^/\s@]+@", re.I)


def _is_credential_key(key: str) -> bool:
    return bool(_CREDENTIAL_KEY_RE.search(key.lower().replace("-", "_")))


def _yaml_findings(display: str, text: str) -> list[SecretFinding]:
    """voxgate's own rule: a credential field holds a secret reference, never a literal."""
    try:
        # aliases are read (a member the loader never reads must not escape the scan by using one)
        data = load_yaml(text)
    except YAMLError:
        return []  # the spec loader reports the syntax error with its place
    out: list[SecretFinding] = []
    walked: set[tuple[int, str]] = set()  # an aliased node is looked at once per key it sits under

    def walk(node: Any, parent_key: str) -> None:
        if isinstance(node, (CommentedMap, CommentedSeq)):
            if (id(node), parent_key) in walked:
                return
            walked.add((id(node), parent_key))
        if isinstance(node, CommentedMap):
            is_auth = parent_key == "auth" or str(node.get("type", "")) in ("bearer", "header")
            for k, v in node.items():
                key = str(k)
                line = node.lc.key(k)[0] + 1
                if isinstance(v, str) and v.strip():
                    literal = not SECRET_REF_RE.match(v.strip())
                    if literal and parent_key == "headers" and _CREDENTIAL_HEADER_RE.search(key):
                        out.append(
                            SecretFinding(
                                display, line, f"header '{key}' carries a credential; use auth with a secret reference"
                            )
                        )
                    elif literal and (_is_credential_key(key) or (is_auth and key in ("value", "token", "password"))):
                        out.append(SecretFinding(display, line, f"credential field '{key}' holds a literal value"))
                    if _URL_USERINFO_RE.search(v):
                        out.append(SecretFinding(display, line, "URL with an embedded user name and password"))
                walk(v, key)
        elif isinstance(node, CommentedSeq):
            for item in node:
                walk(item, parent_key)

    walk(data, "")
    return out


def _plain_yaml(path: Path) -> bool:
    """Whether `path` is YAML without aliases and within the loader's nesting limit."""
    try:
        load_yaml(path.read_text(encoding="utf-8"), aliases=False)
    except (YAMLError, UnicodeDecodeError, OSError):
        return False
    return True


def _detect_secrets_findings(files: Sequence[tuple[Path, str]]) -> list[SecretFinding]:
    from detect_secrets.core.scan import scan_file
    from detect_secrets.settings import transient_settings

    out: list[SecretFinding] = []
    with (
        _detect_secrets_lock,
        tempfile.TemporaryDirectory(prefix="voxgate-scan-") as tmp,
        transient_settings({"plugins_used": _DETECT_SECRETS_PLUGINS, "filters_used": _DETECT_SECRETS_FILTERS}),
    ):
        for i, (path, display) in enumerate(files):
            key = (path.name, hashlib.sha256(path.read_bytes()).digest())
            if key in _scanned:
                _scanned.move_to_end(key)
                out += [SecretFinding(display, line, kind) for line, kind in _scanned[key]]
                continue
            found: list[tuple[int, str]] = []
            is_yaml = path.suffix.lower() in (".yaml", ".yml")
            targets = [str(path)]
            if is_yaml:
                # detect-secrets reads YAML through a parser that drops comments; a plain-text copy
                # (same line numbers) makes it read every line as well
                raw = Path(tmp) / f"{i}.txt"
                shutil.copyfile(path, raw)
                # its parser expands aliases and recurses without a limit: such a file is read as text only
                targets = [str(path), str(raw)] if _plain_yaml(path) else [str(raw)]
            for target in targets:
                for secret in scan_file(target):
                    # in YAML the credential-field rule is exact; the keyword plugin would also flag
                    # harmless fields such as `secret_prompt: "And your PIN?"`
                    if is_yaml and secret.type == "Secret Keyword":
                        continue
                    found.append((secret.line_number, secret.type))
            out += [SecretFinding(display, line, kind) for line, kind in found]
            _scanned[key] = tuple(found)
            while len(_scanned) > _SCANNED_FILES:
                _scanned.popitem(last=False)
    return out


def scan_secrets(agent_dir: str | Path) -> list[SecretFinding]:
    """Every inline secret in the bundle's files: detect-secrets plus voxgate's credential-field rule."""
    root = Path(agent_dir)
    return _scan(root, _collect_files(root)[0])


def _scan(root: Path, files: dict[str, bytes]) -> list[SecretFinding]:
    """Scan exactly `files` (relative path -> content, as they lie under `root`): every one of them."""
    on_disk = [(root / rel, str(root / rel)) for rel in files]
    findings = _detect_secrets_findings(on_disk)
    for rel, data in files.items():
        if rel.endswith((".yaml", ".yml")):
            findings += _yaml_findings(str(root / rel), data.decode("utf-8", errors="replace"))
    unique = {(f.path, f.line, f.kind): f for f in findings}
    return sorted(unique.values(), key=lambda f: (f.path, f.line, f.kind))


# ---- canonical content, digest and archive ------------------------------------------------------


def _normalise(data: bytes) -> bytes:
    """LF line endings for text (valid UTF-8 without NUL bytes); other files as they are."""
    if b"\x00" in data:
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _collect_files(root: Path) -> tuple[dict[str, bytes], list[str]]:
    """The bundle's files (relative POSIX path -> normalised bytes) and the problems found.

    Hidden files and folders (.git, .env, editor files) and caches are not part of a bundle.
    """
    files: dict[str, bytes] = {}
    problems: list[str] = []
    if not root.is_dir():
        return files, [f"{root}:1: not a directory"]
    total = lines = count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if d.startswith(".") or d in _SKIPPED_DIRS:
                dirnames.remove(d)
            elif (here / d).is_symlink():
                dirnames.remove(d)
                problems.append(f"{here / d}:1: symbolic links are not allowed in a bundle")
        for name in filenames:
            if name.startswith("."):
                continue
            path = here / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{path}:1: symbolic links are not allowed in a bundle")
                continue
            if not stat.S_ISREG(mode):
                problems.append(f"{path}:1: not a regular file")
                continue
            if rel == MANIFEST_NAME:
                problems.append(f"{path}:1: {MANIFEST_NAME} is reserved for the bundle manifest")
                continue
            size = path.lstat().st_size
            count += 1
            if size > MAX_FILE_BYTES:
                problems.append(f"{path}:1: {size} bytes; a file in a bundle is at most {MAX_FILE_BYTES}")
                continue
            if count > MAX_BUNDLE_FILES or total > MAX_BUNDLE_BYTES or lines > MAX_BUNDLE_LINES:
                total += size  # counted, not read: the bundle is refused anyway
                continue
            data = _normalise(path.read_bytes())
            total += len(data)
            lines += data.count(b"\n")
            if total > MAX_BUNDLE_BYTES or lines > MAX_BUNDLE_LINES:
                continue  # refused below; never scanned
            files[rel] = data
    if count > MAX_BUNDLE_FILES:
        problems.append(f"{root}:1: {count} files; a bundle holds at most {MAX_BUNDLE_FILES}")
    if total > MAX_BUNDLE_BYTES:
        problems.append(f"{root}:1: {total} bytes; a bundle holds at most {MAX_BUNDLE_BYTES}")
    if lines > MAX_BUNDLE_LINES:
        problems.append(f"{root}:1: {lines} lines; a bundle holds at most {MAX_BUNDLE_LINES}")
    return dict(sorted(files.items())), problems


def content_manifest(files: dict[str, bytes], agent: str, version: str) -> dict[str, Any]:
    """The canonical description of a bundle's content; its hash is the bundle's digest."""
    return {
        "format": BUNDLE_FORMAT,
        "agent": agent,
        "version": version,
        "files": {p: {"sha256": _sha256(files[p]), "size": len(files[p])} for p in sorted(files)},
    }


def digest_of(manifest: dict[str, Any]) -> str:
    """The digest of a manifest: sha256 of its canonical JSON, prefixed `sha256:`."""
    return "sha256:" + _sha256(_canonical(manifest))


def _tar_entry(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    tar.addfile(info, io.BytesIO(data))


def make_archive(files: dict[str, bytes], manifest: dict[str, Any]) -> bytes:
    """A byte-for-byte reproducible tar.gz: manifest first, then the files in sorted order."""
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of the local path and the clock
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _tar_entry(
                tar,
                MANIFEST_NAME,
                json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False).encode("utf-8") + b"\n",
            )
            for path in sorted(files):
                _tar_entry(tar, path, files[path])
    return buf.getvalue()


def _safe_member_name(name: str) -> str:
    p = PurePosixPath(name)
    if not name or name.startswith("/") or p.is_absolute() or ".." in p.parts or "\\" in name or p.as_posix() != name:
        raise BundleFormatError(f"unsafe path in bundle archive: '{name}'")
    return name


def _refuse_file_folder_clash(names: Sequence[str]) -> None:
    """A name that is a file and also a folder above another member could never be written out."""
    present = set(names)
    for name in sorted(present):
        parts = name.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in present:
                raise BundleFormatError(f"bundle archive has '{folder}' both as a file and as a folder (of '{name}')")


def _gunzip(archive: bytes) -> bytes:
    """The tar stream inside a gzip archive, decompressed in chunks and abandoned past the limit."""
    if len(archive) > MAX_ARCHIVE_BYTES:
        raise BundleTooLargeError(f"bundle archive is {len(archive)} bytes; at most {MAX_ARCHIVE_BYTES}")
    limit = MAX_BUNDLE_BYTES + _TAR_SLACK
    out = bytearray()
    with gzip.GzipFile(fileobj=io.BytesIO(archive), mode="rb") as gz:
        while chunk := gz.read(256 * 1024):
            out += chunk
            if len(out) > limit:
                raise BundleTooLargeError(f"bundle archive unpacks to more than {MAX_BUNDLE_BYTES} bytes")
    return bytes(out)


def read_archive(archive: bytes) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The files of an archive and the manifest it claims; refuses unsafe or odd entries, members a
    bundle never holds (hidden, caches) and anything past the module's limits."""
    files: dict[str, bytes] = {}
    claimed: dict[str, Any] | None = None
    total = lines = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(_gunzip(archive)), mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_BUNDLE_FILES + 1:
                    raise BundleTooLargeError(f"bundle archive has more than {MAX_BUNDLE_FILES} files")
                name = _safe_member_name(member.name)
                if not member.isreg():
                    raise BundleFormatError(f"bundle archive entry '{name}' is not a regular file")
                if _left_out(name):
                    raise BundleFormatError(
                        f"{name}:1: not part of a bundle: hidden files and {', '.join(sorted(_SKIPPED_DIRS))} "
                        "folders are left out when a bundle is built"
                    )
                if member.size > MAX_FILE_BYTES:
                    raise BundleTooLargeError(
                        f"{name}:1: {member.size} bytes; a file in a bundle is at most {MAX_FILE_BYTES}"
                    )
                if name != MANIFEST_NAME:
                    total += member.size
                if total > MAX_BUNDLE_BYTES:
                    raise BundleTooLargeError(f"bundle archive unpacks to more than {MAX_BUNDLE_BYTES} bytes")
                fh = tar.extractfile(member)
                data = fh.read() if fh else b""
                if name != MANIFEST_NAME:
                    lines += data.count(b"\n")
                if lines > MAX_BUNDLE_LINES:
                    raise BundleTooLargeError(f"{name}: bundle archive has more than {MAX_BUNDLE_LINES} lines")
                if name in files or (name == MANIFEST_NAME and claimed is not None):
                    raise BundleFormatError(f"bundle archive has '{name}' twice")
                if name == MANIFEST_NAME:
                    try:
                        claimed = json.loads(data)
                    except ValueError:
                        raise BundleFormatError(f"{MANIFEST_NAME} in the archive is not JSON") from None
                else:
                    files[name] = data
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BundleFormatError(f"not a bundle archive (tar.gz): {exc.__class__.__name__}") from None
    _refuse_file_folder_clash([*files, MANIFEST_NAME])
    if not isinstance(claimed, dict):
        raise BundleFormatError(f"bundle archive has no {MANIFEST_NAME}")
    return files, claimed


def agent_identity(files: dict[str, bytes]) -> tuple[str, str]:
    """Name and version as agent.yaml in the archive states them (never as a manifest claims)."""
    raw = files.get("agent.yaml")
    if raw is None:
        raise BundleFormatError("bundle archive has no agent.yaml")
    try:
        data = load_yaml(raw.decode("utf-8"))
    except (YAMLError, UnicodeDecodeError):
        raise BundleFormatError("agent.yaml in the archive is not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise BundleFormatError("agent.yaml in the archive has no name")
    name = str(data["name"])
    if not is_name(name):
        raise BundleFormatError(
            f"agent.yaml:1: agent name {name[:80]!r} is not allowed: use {NAME_RULE} (pattern {NAME_RE})"
        )
    version = data.get("version", Agent.model_fields["version"].default)
    return name, str(version)


# ---- build --------------------------------------------------------------------------------------


@dataclass
class BuiltBundle:
    """A built, signed bundle: what `bundle build` writes and what the store keeps."""

    digest: str
    archive: bytes
    manifest: dict[str, Any]
    signature: str
    key_id: str
    public_key: str = ""
    dlp: DlpReport | None = None

    @property
    def agent(self) -> str:
        """The agent's name, from the manifest."""
        return str(self.manifest["content"]["agent"])

    @property
    def version(self) -> str:
        """The agent's version, from the manifest."""
        return str(self.manifest["content"]["version"])

    @property
    def built_for(self) -> str:
        """The environment the bundle was built for."""
        return str(self.manifest["build"]["built_for"])

    @property
    def author_id(self) -> str:
        """Who built the bundle."""
        return str(self.manifest["build"]["author_id"])

    def sidecar(self) -> dict[str, Any]:
        """What travels next to the archive (`FILE.sig`): signature, key and build record."""
        return {
            "digest": self.digest,
            "signature": self.signature,
            "key_id": self.key_id,
            "public_key": self.public_key,
            "manifest": self.manifest,
        }

    @classmethod
    def from_sidecar(cls, archive: bytes, sidecar: dict[str, Any]) -> BuiltBundle:
        """The bundle from its archive and the sidecar written next to it (`FILE.sig`)."""
        try:
            return cls(
                digest=str(sidecar["digest"]),
                archive=archive,
                manifest=dict(sidecar["manifest"]),
                signature=str(sidecar["signature"]),
                key_id=str(sidecar["key_id"]),
                public_key=str(sidecar.get("public_key", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleFormatError(f"signature file is missing '{exc}'") from None


def _build_record_bytes(digest: str, build: dict[str, Any]) -> bytes:
    return _canonical({"digest": digest, "build": build})


def pack_directory(agent_dir: str | Path) -> tuple[dict[str, Any], bytes]:
    """Content manifest and archive of an agent directory, without checks or signature (for diffs)."""
    root = Path(agent_dir)
    files, problems = _collect_files(root)
    if problems:
        raise BundleBuildError(problems)
    try:
        name, version = agent_identity(files)
    except BundleFormatError as exc:
        raise BundleBuildError([f"{root / 'agent.yaml'}:1: {exc}"]) from None
    manifest = content_manifest(files, name, version)
    return manifest, make_archive(files, manifest)


def _group_findings(findings: list[SecretFinding]) -> list[str]:
    """One problem per line, naming every kind of secret found there."""
    by_line: dict[tuple[str, int], list[str]] = {}
    for f in findings:
        by_line.setdefault((f.path, f.line), []).append(f.kind)
    return [
        f"{path}:{line}: inline secret ({'; '.join(kinds)}): use a secret reference "
        "(env:NAME, file:PATH or vault:PATH#KEY)"
        for (path, line), kinds in sorted(by_line.items())
    ]


@dataclass
class _Checked:
    files: dict[str, bytes]
    source: BundleSource
    report: DlpReport


def _check_directory(
    root: Path,
    env: EnvironmentConfig,
    exceptions: Sequence[DlpException],
    now: dt.datetime,
    files: dict[str, bytes] | None = None,
) -> tuple[_Checked | None, list[str]]:
    """Everything a bundle must pass for `env`: files, spec, inline secrets, DLP.

    `files`: the bundle's files as they lie under `root` (an extracted archive: every member);
    without it, the directory's files as a build collects them.
    """
    problems: list[str] = []
    if files is None:
        files, file_problems = _collect_files(root)
        problems += file_problems
    source: BundleSource | None = None
    try:
        source = load_bundle(root)
    except BundleError as exc:
        problems += [str(p) for p in exc.problems]
    if root.is_dir():
        problems += _group_findings(_scan(root, files))
    report: DlpReport | None = None
    if source is not None:
        report = check_bundle(source, env, exceptions, now)
        for v in report.violations:
            where = v.location or f"{root / 'agent.yaml'}:1"
            problems.append(f"{where}: {v.rule}: {v.message}")
    if problems or source is None or report is None:
        return None, problems
    return _Checked(files, source, report), []


def _aware_now(now: dt.datetime | None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)


def _build_record(
    checked: _Checked, env: EnvironmentConfig, author_id: str, key_id: str, now: dt.datetime, recorded_by: str
) -> dict[str, Any]:
    return {
        "built_for": env.name,
        "tier": env.tier,
        "author_id": author_id,
        "built_at": now.isoformat(),
        "key_id": key_id,
        "recorded_by": recorded_by,
        "voxgate_version": __version__,
        "dlp": checked.report.model_dump(mode="json"),
        "secret_scan": {
            "scanner": "detect-secrets (offline plugins) + voxgate credential fields",
            "files": len(checked.files),
            "findings": 0,
        },
    }


def build_bundle(
    agent_dir: str | Path,
    env: EnvironmentConfig,
    exceptions: Sequence[DlpException],
    key: KeyPair,
    author_id: str,
    now: dt.datetime | None = None,
) -> BuiltBundle:
    """Validate, scan, check DLP for `env`, then pack and sign; BundleBuildError lists every problem."""
    now = _aware_now(now)
    checked, problems = _check_directory(Path(agent_dir), env, exceptions, now)
    if checked is None:
        raise BundleBuildError(problems)
    agent = checked.source.agent
    content = content_manifest(checked.files, agent.name, agent.version)
    digest = digest_of(content)
    build = _build_record(checked, env, author_id, key.key_id, now, "builder")
    manifest = {
        "format": BUNDLE_FORMAT,
        "digest": digest,
        "content": content,
        "build": build,
        "build_signature": key.sign(_build_record_bytes(digest, build)),
    }
    return BuiltBundle(
        digest=digest,
        archive=make_archive(checked.files, content),
        manifest=manifest,
        signature=key.sign(digest.encode("ascii")),
        key_id=key.key_id,
        public_key=key.public.b64,
        dlp=checked.report,
    )


# ---- verify, open, diff -------------------------------------------------------------------------


@dataclass
class BundleVerification:
    """What checking a bundle archive found: digest, signature, contents and every problem."""

    ok: bool
    digest: str | None
    expected_digest: str | None
    signature_valid: bool
    key_id: str
    agent: str | None = None
    version: str | None = None
    files: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The verification as a JSON-ready dict."""
        return {
            "ok": self.ok,
            "digest": self.digest,
            "expected_digest": self.expected_digest,
            "signature_valid": self.signature_valid,
            "key_id": self.key_id,
            "agent": self.agent,
            "version": self.version,
            "files": self.files,
            "problems": self.problems,
        }


def verify_bundle(
    archive: bytes,
    signature: str,
    public_key: PublicKey,
    expected_digest: str | None = None,
) -> BundleVerification:
    """Recompute the digest from the archive's files and check the signature over it."""
    problems: list[str] = []
    try:
        files, claimed = read_archive(archive)
    except BundleFormatError as exc:
        return BundleVerification(False, None, expected_digest, False, public_key.key_id, problems=[str(exc)])
    try:
        agent, version = agent_identity(files)
    except BundleFormatError as exc:
        # a damaged agent.yaml still has a digest (which will not match): take the claimed identity
        problems.append(str(exc))
        agent, version = str(claimed.get("agent", "")), str(claimed.get("version", ""))
    content = content_manifest(files, agent, version)
    digest = digest_of(content)
    if claimed != content:
        problems.append(f"{MANIFEST_NAME} does not describe the archive's files")
    if expected_digest is not None and digest != expected_digest:
        problems.append(f"content digest {digest} is not the expected {expected_digest}")
    signature_valid = public_key.verify(signature, digest.encode("ascii"))
    if not signature_valid:
        problems.append(f"signature is not valid for digest {digest} with key {public_key.key_id}")
    return BundleVerification(
        ok=not problems,
        digest=digest,
        expected_digest=expected_digest,
        signature_valid=signature_valid,
        key_id=public_key.key_id,
        agent=agent,
        version=version,
        files=len(files),
        problems=problems,
    )


def _write_files(files: dict[str, bytes], into: str | Path) -> Path:
    """Write checked files under `into` (absent or empty; its parent must exist): nothing above it
    is created, and every target is checked to resolve inside it."""
    root = Path(into)
    root.mkdir(exist_ok=True)
    if any(root.iterdir()):
        raise BundleFormatError(f"{root} is not empty")
    base = root.resolve()
    for name, data in files.items():
        target = (base / name).resolve()
        if not target.is_relative_to(base) or target == base:  # belt and braces: names were checked already
            raise BundleFormatError(f"unsafe path in bundle archive: '{name}'")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def _fresh_root(tmp: str | Path, agent_name: str) -> Path:
    """`tmp`/NAME for a fresh temporary folder `tmp`: the name is checked first, and the result must
    resolve to a direct child of `tmp`."""
    if not is_name(agent_name):
        raise BundleFormatError(f"agent name {agent_name[:80]!r} is not allowed: use {NAME_RULE}")
    base = Path(tmp).resolve()
    root = base / agent_name
    if root.resolve().parent != base:
        raise BundleFormatError(f"agent name {agent_name[:80]!r} is not allowed: use {NAME_RULE}")
    return root


def extract_bundle(archive: bytes, into: str | Path) -> Path:
    """Write an archive's files under `into` (which must be empty or absent); returns that folder.

    The whole archive is read and checked before anything is written."""
    files, _ = read_archive(archive)
    return _write_files(files, into)


def open_bundle(archive: bytes, into: str | Path | None = None) -> BundleSource:
    """Load an archive with the spec loader (extracted into `into`, or a temporary folder removed after)."""
    if into is not None:
        return load_bundle(extract_bundle(archive, into))
    files, _ = read_archive(archive)
    name = agent_identity(files)[0]
    with tempfile.TemporaryDirectory(prefix="voxgate-bundle-") as tmp:
        return load_bundle(_write_files(files, _fresh_root(tmp, name)))


def _text(data: bytes) -> list[str] | None:
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def diff_bundles(a: bytes, b: bytes) -> str:
    """A unified diff per changed file, plus lines for added and removed files ('' when equal)."""
    files_a, _ = read_archive(a)
    files_b, _ = read_archive(b)
    out: list[str] = []
    for path in sorted(set(files_a) | set(files_b)):
        old, new = files_a.get(path), files_b.get(path)
        if old == new:
            continue
        if old is None:
            out.append(f"added: {path}\n")
        elif new is None:
            out.append(f"removed: {path}\n")
        old_lines, new_lines = _text(old or b""), _text(new or b"")
        if old_lines is None or new_lines is None:
            out.append(f"binary file changed: {path}\n")
            continue
        lines = list(
            difflib.unified_diff(
                old_lines,
                new_lines,
                fromfile="/dev/null" if old is None else f"a/{path}",
                tofile="/dev/null" if new is None else f"b/{path}",
            )
        )
        out.extend(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines)
    return "".join(out)


# ---- store --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredBundle:
    """A bundle read back from the store after every check passed."""

    digest: str
    agent: str
    version: str
    author_id: str
    built_for: str
    key_id: str
    signature: str
    manifest: dict[str, Any]
    archive: bytes
    created_at: dt.datetime

    @cached_property
    def source(self) -> BundleSource:
        """The bundle loaded with the spec loader (once per object)."""
        return open_bundle(self.archive)

    def summary(self) -> dict[str, Any]:
        """The stored bundle as a JSON-ready dict for listings: identity, signing key, file count and DLP warnings."""
        build = self.manifest.get("build", {})
        return {
            "digest": self.digest,
            "agent": self.agent,
            "version": self.version,
            "author_id": self.author_id,
            "built_for": self.built_for,
            "key_id": self.key_id,
            "created_at": self.created_at.isoformat(),
            "files": len(self.manifest.get("content", {}).get("files", {})),
            "signed_build_record": bool(self.manifest.get("build_signature")),
            "dlp_warnings": list(build.get("dlp", {}).get("warnings", [])),
        }


def register_signing_key(db: Database, public_key: PublicKey, user_id: str, *, purpose: str = "bundle") -> None:
    """Record a public key as `user_id`'s (idempotent); a key already held by another owner is refused."""
    with db.orm() as s, s.begin():
        row = s.get(SigningKeyRow, public_key.key_id)
        if row is not None:
            if row.user_id != user_id or row.public_key != public_key.b64 or row.purpose != purpose:
                raise SigningError(f"signing key {public_key.key_id} is already registered to another owner or purpose")
            return
        s.add(SigningKeyRow(key_id=public_key.key_id, user_id=user_id, purpose=purpose, public_key=public_key.b64))


def _key_problems(key_row: SigningKeyRow | None, key_id: str) -> tuple[PublicKey | None, list[str]]:
    if key_row is None:
        return None, [f"signing key {key_id} is not registered"]
    if key_row.purpose != "bundle":
        return None, [f"key {key_id} is not a bundle signing key"]
    if key_row.revoked_at is not None:
        return None, [f"signing key {key_id} was revoked at {key_row.revoked_at.isoformat()}"]
    try:
        public = PublicKey.from_b64(key_row.public_key)
    except Exception:  # a corrupted row: report it, never crash the caller
        return None, [f"signing key {key_id} in the store is not a valid Ed25519 public key"]
    if public.key_id != key_id:
        return None, [f"signing key {key_id} in the store does not match its id"]
    return public, []


def _check(
    *,
    digest: str,
    archive: bytes,
    signature: str,
    key_id: str,
    manifest: dict[str, Any],
    key_row: SigningKeyRow | None,
    columns: dict[str, str] | None = None,
) -> list[str]:
    """Every check a bundle must pass before it is stored or served."""
    public, problems = _key_problems(key_row, key_id)
    if public is None or key_row is None:
        return problems
    result = verify_bundle(archive, signature, public, expected_digest=digest)
    problems = list(result.problems)
    if result.digest is None:
        return problems
    content, build = manifest.get("content"), manifest.get("build")
    if manifest.get("digest") != digest:
        problems.append("manifest names a different digest")
    files, _ = read_archive(archive)
    if content != content_manifest(files, result.agent or "", result.version or ""):
        problems.append("manifest content does not describe the archive")
    if not isinstance(build, dict):
        return problems + ["manifest has no build record"]
    build_sig = manifest.get("build_signature")
    if build_sig is not None and not public.verify(str(build_sig), _build_record_bytes(digest, build)):
        problems.append("build record signature is not valid (built_for, author or report was changed)")
    if build_sig is None and build.get("recorded_by") != "server":
        problems.append("build record is not signed")
    if build.get("key_id") != key_id:
        problems.append("build record names a different signing key")
    if key_row.user_id != build.get("author_id"):
        problems.append(
            f"build record says author {build.get('author_id')} but key {key_id} belongs to {key_row.user_id}"
        )
    if columns:
        expect = {
            "agent": result.agent,
            "version": result.version,
            "built_for": build.get("built_for"),
            "author_id": build.get("author_id"),
            "key_id": key_id,
        }
        for col, value in columns.items():
            if expect.get(col) != value:
                problems.append(f"column {col} is '{value}' but the bundle says '{expect.get(col)}'")
    return problems


def _insert(
    s: Any, digest: str, agent: str, version: str, manifest: dict[str, Any], signature: str, key_id: str, archive: bytes
) -> None:
    build = manifest["build"]
    if s.get(BundleRow, digest) is not None:
        return  # content-addressed: the same content is stored once, under its first build record
    s.add(
        BundleRow(
            digest=digest,
            agent=agent,
            version=version,
            author_id=build["author_id"],
            built_for=build["built_for"],
            key_id=key_id,
            signature=signature,
            manifest=manifest,
            archive=archive,
        )
    )


def store_bundle(db: Database, built: BuiltBundle, *, uploaded_by: str | None = None) -> StoredBundle:
    """Verify a built bundle against its registered key and keep it; idempotent per digest.

    The author is the owner of the signing key, so nobody can file a bundle under another's
    name (which would defeat the approver-is-not-the-author rule).
    """
    if uploaded_by is not None and uploaded_by != built.author_id:
        raise BundleRejected(
            [f"bundle {built.digest} was built by {built.author_id}, not by the uploader {uploaded_by}"]
        )
    with db.orm() as s, s.begin():
        problems = _check(
            digest=built.digest,
            archive=built.archive,
            signature=built.signature,
            key_id=built.key_id,
            manifest=built.manifest,
            key_row=s.get(SigningKeyRow, built.key_id),
        )
        if problems:
            raise BundleRejected(problems)
        _insert(
            s, built.digest, built.agent, built.version, built.manifest, built.signature, built.key_id, built.archive
        )
    return load_stored(db, built.digest)


def accept_upload(
    db: Database,
    archive: bytes,
    signature: str,
    public_key: PublicKey,
    *,
    author_id: str,
    environment: EnvironmentConfig,
    exceptions: Sequence[DlpException] = (),
    now: dt.datetime | None = None,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Re-check an uploaded archive on the server (signature, key owner, spec, secrets, DLP) and store it.

    `manifest` is the builder's signed manifest from the `.sig` file; when it is valid for this
    environment and author it is kept (its build record stays signed by the builder), otherwise
    the server writes the build record from its own checks. Raises BundleRejected with every problem.
    """
    now = _aware_now(now)
    try:
        # every limit, path rule and the agent's name are checked here, before anything is written
        files, _ = read_archive(archive)
        agent_name = agent_identity(files)[0]
    except BundleFormatError as exc:
        raise _rejected(exc) from None
    result = verify_bundle(archive, signature, public_key)
    if not result.ok or result.digest is None:
        raise BundleRejected(result.problems)
    digest = result.digest
    with db.orm() as s:
        public, problems = _key_problems(s.get(SigningKeyRow, public_key.key_id), public_key.key_id)
        key_row = s.get(SigningKeyRow, public_key.key_id)
    if public is not None and public != public_key:
        problems.append(f"the registered key {public_key.key_id} differs from the one given")
    if key_row is not None and key_row.user_id != author_id:
        problems.append(f"signing key {public_key.key_id} does not belong to {author_id}")
    if problems:
        raise BundleRejected(problems)

    with tempfile.TemporaryDirectory(prefix="voxgate-upload-") as tmp:
        try:
            root = _write_files(files, _fresh_root(tmp, agent_name))
        except BundleFormatError as exc:
            raise _rejected(exc) from None
        # the scan and the manifest cover exactly the archive's members, not a walk of the folder
        checked, problems = _check_directory(root, environment, exceptions, now, files=files)
        # name places inside the bundle, not inside the server's temporary folder
        problems = [p.replace(str(root), agent_name) for p in problems]
    if checked is None:
        raise BundleRejected(problems)

    content = content_manifest(files, checked.source.agent.name, checked.source.agent.version)
    if digest_of(content) != digest:
        raise BundleRejected([f"the archive's agent.yaml and its validated agent disagree (digest {digest})"])
    stored_manifest: dict[str, Any] | None = None
    if manifest is not None:
        build = manifest.get("build") if isinstance(manifest, dict) else None
        sig = manifest.get("build_signature") if isinstance(manifest, dict) else None
        if (
            isinstance(build, dict)
            and sig
            and manifest.get("digest") == digest
            and manifest.get("content") == content
            and build.get("built_for") == environment.name
            and build.get("author_id") == author_id
            and build.get("key_id") == public_key.key_id
            and public_key.verify(str(sig), _build_record_bytes(digest, build))
        ):
            stored_manifest = manifest
    if stored_manifest is None:
        stored_manifest = {
            "format": BUNDLE_FORMAT,
            "digest": digest,
            "content": content,
            "build": _build_record(checked, environment, author_id, public_key.key_id, now, "server"),
            "build_signature": None,
        }
    # one transaction: what is inserted has passed every check a stored bundle is read back with,
    # so a refused upload leaves no row behind
    with db.orm() as s, s.begin():
        problems = _check(
            digest=digest,
            archive=archive,
            signature=signature,
            key_id=public_key.key_id,
            manifest=stored_manifest,
            key_row=s.get(SigningKeyRow, public_key.key_id),
        )
        if problems:
            raise BundleRejected(problems)
        _insert(s, digest, content["agent"], content["version"], stored_manifest, signature, public_key.key_id, archive)
    try:
        stored = load_stored(db, digest)
    except BundleLoadError as exc:  # the same content stored earlier and altered since
        raise BundleRejected([str(exc)]) from None
    out = stored.summary()
    out["dlp_warnings"] = list(checked.report.warnings)
    return out


def load_stored(db: Database, digest: str) -> StoredBundle:
    """Read a bundle back, re-verifying digest, signatures and columns; BundleIntegrityError if altered."""
    with db.orm() as s:
        row = s.get(BundleRow, digest)
        if row is None:
            raise BundleNotFoundError(f"no bundle {digest}")
        key_row = s.get(SigningKeyRow, row.key_id)
        manifest = row.manifest if isinstance(row.manifest, dict) else {}
        try:
            problems = _check(
                digest=row.digest,
                archive=bytes(row.archive),
                signature=row.signature,
                key_id=row.key_id,
                manifest=manifest,
                key_row=key_row,
                columns={
                    "agent": row.agent,
                    "version": row.version,
                    "built_for": row.built_for,
                    "author_id": row.author_id,
                    "key_id": row.key_id,
                },
            )
        except BundleFormatError as exc:
            problems = [str(exc)]
        if problems:
            raise BundleIntegrityError(digest, problems)
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
        return StoredBundle(
            digest=row.digest,
            agent=row.agent,
            version=row.version,
            author_id=row.author_id,
            built_for=row.built_for,
            key_id=row.key_id,
            signature=row.signature,
            manifest=manifest,
            archive=bytes(row.archive),
            created_at=created,
        )


def list_stored(db: Database, agent: str | None = None) -> list[dict[str, Any]]:
    """Bundles in the store, newest first (metadata only; load_stored verifies one)."""
    with db.orm() as s:
        q = select(
            BundleRow.digest,
            BundleRow.agent,
            BundleRow.version,
            BundleRow.author_id,
            BundleRow.built_for,
            BundleRow.key_id,
            BundleRow.created_at,
        ).order_by(BundleRow.created_at.desc())
        if agent is not None:
            q = q.where(BundleRow.agent == agent)
        return [dict(r._mapping) for r in s.execute(q)]
