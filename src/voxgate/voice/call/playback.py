"""The speaker's bookkeeping: how far ahead of the caller's ear reply audio is queued, how much may
be synthesised ahead, which chunks a reply is spoken in, and the marks that tell what was heard."""

from __future__ import annotations

from collections.abc import Callable

from voxgate.voice.speech_text import first_clause
from voxgate.voice.types import BYTES_PER_MS

SYNTH_AHEAD_S = 2.0  # how much reply audio may be queued at the caller ahead of playback
MS_PER_S = 1000
LAST_MARK = "last"


class Playback:
    """When the audio sent so far will have played, by the pipeline's estimate, and the marks."""

    def __init__(self) -> None:
        self.end = 0.0  # when the audio sent so far has played
        self.mark_seq = 0

    def playing(self, now: float) -> bool:
        """Audio sent is (by the estimate) still playing."""
        return now < self.end

    def ahead_wait(self, index: int, now: float) -> float:
        """Seconds to wait before synthesising chunk `index` of a reply, so that work for a reply
        that is interrupted is never done, and bursts of synthesis do not crowd out other calls."""
        ahead = self.end - now
        return ahead - SYNTH_AHEAD_S if index and ahead > SYNTH_AHEAD_S else 0.0

    def sent(self, n_bytes: int, now: float) -> None:
        """`n_bytes` of reply audio went to the caller."""
        self.end = max(self.end, now) + n_bytes / BYTES_PER_MS / MS_PER_S

    def next_mark(self) -> None:
        """A chunk was sent: the mark after it takes the next sequence number."""
        self.mark_seq += 1

    def mark_name(self, label: int, last: bool) -> str:
        """The name of the mark sent after a chunk: sequence number and chunk index (or 'last')."""
        return f"{self.mark_seq}:{LAST_MARK if last else label}"

    def heard(self, mark: str, now: float) -> bool:
        """The caller heard up to `mark`; whether it ends a reply (the estimate is cut to now)."""
        if mark.endswith(":" + LAST_MARK):
            self.end = min(self.end, now)
            return True
        return False

    def cut(self, now: float) -> None:
        """Playback was stopped."""
        self.end = now


def reply_chunks(
    text: str, *, first: bool, chunk: Callable[[str], list[str]], cached: Callable[[str], bool]
) -> list[str]:
    """The chunks one reply text is synthesised in. The first chunk of a reply that is not cached is
    split at its first clause: it is spoken alone while the rest renders."""
    parts = chunk(text)
    if first and parts and not cached(parts[0]):
        parts = first_clause(parts[0]) + parts[1:]
    return parts
