"""Streaming partial recognition with pocketsphinx, cheap enough to confirm a barge-in."""

from __future__ import annotations

import queue
import re
from typing import Any

from voxgate.voice import models
from voxgate.voice.types import SAMPLE_RATE


class PocketsphinxStreamer:
    """Incremental recognition with pocketsphinx 5 (CMU Sphinx en-us), a :class:`StreamingRecognizer`.

    Accuracy is modest (≈20 % WER on clean speech, worse on phone audio) but a
    partial hypothesis is ready after each 20 ms frame for ~0.2 x real time, which
    is what confirming a barge-in needs. Loading the language model and dictionary
    takes ~0.35 s, so decoders are pooled and reused across utterances and calls:
    :meth:`finish` or :meth:`close` (or dropping the streamer) returns its decoder to
    the pool, and :meth:`preload` fills the pool at start-up, off the audio path.
    """

    _pool: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def __init__(self) -> None:
        self.record = models.verify("pocketsphinx-en-us")
        self._decoder: Any = None
        self._in_utterance = False
        self.partial = ""

    @staticmethod
    def preload(count: int = 1) -> None:
        """Load `count` decoders into the pool ahead of the first barge-in."""
        for _ in range(count):
            PocketsphinxStreamer._pool.put(_new_decoder())

    def start(self) -> None:
        """Begin a new utterance (takes a decoder from the pool, or loads one)."""
        if self._decoder is None:
            try:
                self._decoder = self._pool.get_nowait()
            except queue.Empty:
                self._decoder = _new_decoder()
        if self._in_utterance:
            self._decoder.end_utt()
        self._decoder.start_utt()
        self._in_utterance = True
        self.partial = ""

    def feed(self, pcm16: bytes) -> str:
        """Add 16 kHz int16 audio; return the current partial hypothesis (may be empty)."""
        if not self._in_utterance:
            self.start()
        if pcm16:
            self._decoder.process_raw(pcm16, False, False)
            hyp = self._decoder.hyp()
            self.partial = _clean_sphinx(hyp.hypstr) if hyp is not None else ""
        return self.partial

    def finish(self) -> str:
        """End the utterance; return the final hypothesis and give the decoder back to the pool."""
        if self._decoder is None or not self._in_utterance:
            return self.partial
        self._decoder.end_utt()
        self._in_utterance = False
        hyp = self._decoder.hyp()
        self.partial = _clean_sphinx(hyp.hypstr) if hyp is not None else ""
        self.close()
        return self.partial

    def close(self) -> None:
        """Give the decoder back to the pool without a final hypothesis."""
        if self._decoder is None:
            return
        if self._in_utterance:
            self._decoder.end_utt()
            self._in_utterance = False
        self._pool.put(self._decoder)
        self._decoder = None

    def __del__(self) -> None:
        # A streamer dropped without finish() (e.g. a barge-in check abandoned mid-way) still
        # returns its decoder, so the next barge-in does not pay the 0.35 s load again.
        try:
            self.close()
        except Exception:  # nosec B110: never raise from a finaliser (e.g. at interpreter exit)
            pass


def _new_decoder() -> Any:
    from pocketsphinx import Decoder

    paths = models.file_paths("pocketsphinx-en-us")
    hmm = paths["pocketsphinx/model/en-us/en-us/mdef"].parent
    return Decoder(
        hmm=str(hmm),
        lm=str(paths["pocketsphinx/model/en-us/en-us.lm.bin"]),
        dict=str(paths["pocketsphinx/model/en-us/cmudict-en-us.dict"]),
        samprate=SAMPLE_RATE,
        loglevel="FATAL",
    )


def _clean_sphinx(text: str) -> str:
    # Drop filler/noise tokens ("<sil>", "[NOISE]") and alternate-pronunciation marks ("read(2)").
    text = re.sub(r"<[^>]*>|\[[^\]]*\]", " ", text)
    return " ".join(re.sub(r"\(\d+\)$", "", w) for w in text.split())
