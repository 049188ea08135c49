"""The line: when caller media arrives, the sender's cadence, and gaps in the media that are silence.

No media for a while in the middle of speech (or in the pause after it) means the line carries
silence; a shorter hold-up is jitter and delays the audio, it is not a pause. A gateway with
silence suppression sends no packets between words, and a client whose recording ended simply
stops. Without filling such a gap the caller's last words would wait forever for the pause that
ends them. Clients that send audio in bigger chunks get twice their chunk length before it counts.
"""

from __future__ import annotations

from collections import deque

from voxgate.voice.types import FRAME_MS

LINE_GAP_MS = 240
MAX_CADENCE_MS = 1000
#: frames fed within this long of each other came in one message: their sum is the sender's chunk
BURST_WINDOW_S = 0.002
#: frame arrivals remembered, to tell when a point of the caller's audio arrived
ARRIVALS_KEPT = 200
MS_PER_S = 1000


class Line:
    """Arrival times and cadence of one call's media, and the gap filling decision."""

    def __init__(self, now: float) -> None:
        self.arrivals: deque[tuple[float, float]] = deque(maxlen=ARRIVALS_KEPT)  # (audio ms at frame end, time)
        self.media_at = now  # when the last frame came in (or silence was filled up to)
        self.burst_ms = 0.0  # audio that arrived at once, i.e. the sender's chunk length
        self.cadence_ms = float(FRAME_MS)
        self.silent = False  # no media is coming: silence is being filled in
        self.last_tick = now

    def media(self, frame_ms: float, now: float) -> None:
        """A frame of media came in from the sender."""
        # frames of one message are fed back to back; the sum is how much the sender sends at once
        self.burst_ms = self.burst_ms + frame_ms if now - self.media_at < BURST_WINDOW_S else frame_ms
        self.cadence_ms = min(max(self.cadence_ms, self.burst_ms), MAX_CADENCE_MS)
        self.media_at = now
        self.silent = False

    def took(self, audio_ms: float, now: float) -> None:
        """The pipeline took audio up to `audio_ms` of the caller's timeline at `now`."""
        self.arrivals.append((audio_ms, now))

    def time_at(self, audio_ms: float, now: float) -> float:
        """When the frame holding this point of the caller's audio arrived (`now` if none did)."""
        for frame_end, at in self.arrivals:
            if frame_end >= audio_ms:
                return at
        return self.arrivals[-1][1] if self.arrivals else now

    def gap_frames(self, now: float, *, utterance_open: bool, barge_open: bool) -> int:
        """How many frames of silence to fill in on this tick (0: none), in step with the clock.

        `utterance_open`: the caller is speaking or in the pause that may end the turn. Only a gap
        seen by a tick that ran on time counts: after the event loop itself stalled, frames that
        arrived meanwhile are still waiting to be read, and are not missing.
        """
        lag_ms = (now - self.last_tick) * MS_PER_S - FRAME_MS
        self.last_tick = now
        if not self.silent:
            gap_ms = (now - self.media_at) * MS_PER_S
            if not (utterance_open and lag_ms < FRAME_MS and gap_ms >= max(LINE_GAP_MS, 2 * self.cadence_ms)):
                return 0
            self.silent = True
        if not (utterance_open or barge_open):
            self.silent = False  # the utterance is dealt with; idle time runs on the clock
            return 0
        return int((now - self.media_at) * MS_PER_S // FRAME_MS)

    def filled(self, frames: int) -> None:
        """`frames` of silence were taken in place of missing media."""
        self.media_at += frames * FRAME_MS / MS_PER_S
