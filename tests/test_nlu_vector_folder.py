"""Intent-example vectors kept on disk: a worker that starts again reads them, exact, instead of running
the model; a damaged file is computed again; a caller's words are never written."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from voxgate.runtime.nlu.embeddings import Embedder

EXAMPLES = ["where is my order", "I want to pay my bill", "is there an outage in my area"]


class CountingEmbedder(Embedder):
    """The real embedder, counting the texts that went through the model."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[str] = []

    def _run(self, texts: list[str]) -> np.ndarray:
        self.ran.extend(texts)
        return super()._run(texts)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.f32"))


def _embedded(folder: Path, texts: Sequence[str], *, keep: bool = True) -> tuple[np.ndarray, list[str]]:
    """A new embedder (as in a worker that starts) kept in `folder`: the vectors and what the model ran on."""
    embedder = CountingEmbedder()
    embedder.keep_in(folder)
    return embedder.embed(list(texts), keep=keep), embedder.ran


def test_a_worker_that_starts_again_reads_the_kept_vectors_instead_of_running_the_model(tmp_path: Path) -> None:
    first, ran = _embedded(tmp_path, EXAMPLES)
    assert ran == sorted(EXAMPLES, key=len) and len(_files(tmp_path)) == len(EXAMPLES)
    again, ran_again = _embedded(tmp_path, [*EXAMPLES, "cancel my contract"])
    assert ran_again == ["cancel my contract"]  # only the new example goes through the model
    assert np.array_equal(again[: len(EXAMPLES)], first)  # bit for bit what was computed
    assert not np.array_equal(again[-1], first[0])


def test_a_damaged_vector_file_is_computed_and_written_again(tmp_path: Path) -> None:
    first, _ = _embedded(tmp_path, EXAMPLES)
    for path in _files(tmp_path):  # one byte of each vector changed, and one file cut short
        data = bytearray(path.read_bytes())
        data[7] ^= 0x40
        path.write_bytes(bytes(data))
    os.truncate(_files(tmp_path)[0], 100)
    again, ran = _embedded(tmp_path, EXAMPLES)
    assert sorted(ran) == sorted(EXAMPLES)  # none of them was read as a (wrong) vector
    assert np.allclose(again, first, atol=1e-6)
    third, ran_third = _embedded(tmp_path, EXAMPLES)  # and they were written again, whole
    assert ran_third == [] and np.allclose(third, first, atol=1e-6)


def test_texts_not_marked_as_the_agents_own_are_never_written(tmp_path: Path) -> None:
    """What a caller said is embedded without `keep`: nothing of it reaches the folder."""
    _embedded(tmp_path, ["my account number is 11815908", "and my pin is 6468"], keep=False)
    embedder = Embedder()
    embedder.keep_in(tmp_path)
    embedder.embed_one("my name is Elena Garcia")
    assert _files(tmp_path) == []


def test_a_folder_that_cannot_be_written_is_reported_once_and_embedding_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, logger="voxgate.embeddings"):
        vectors, ran = _embedded(blocked, EXAMPLES)
    assert vectors.shape == (len(EXAMPLES), 384) and len(ran) == len(EXAMPLES)
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "cannot be kept" in caplog.records[0].message
