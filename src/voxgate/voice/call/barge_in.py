"""Barge-in: caller speech while the agent talks stops playback within a fraction of a second, but
not for "uh-huh".

Within the first quarter second nobody can tell "okay…" from "oh wait…" by content, so the rule
is by duration with a veto: speech that lasts `barge_in_min_speech_ms` stops playback, unless a
quick recognition of its first syllables (a probe sent through the recogniser at urgent priority)
heard a backchannel. A vetoed backchannel that goes on past `barge_in_max_hold_ms`, or that a
later probe hears as words, stops playback after all.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from voxgate.voice.call.events import BARGE_OVER, Backchannel, BargeEvent, Interruption, ProbeWanted
from voxgate.voice.speech_text import is_backchannel
from voxgate.voice.types import Transcript

log = logging.getLogger("voxgate.voice")

# priming the first probe with acknowledgements makes a quick "okay" read as "Okay." rather than "Else."
BACKCHANNEL_PROMPT = "Okay. Yeah. Uh-huh. Mm-hmm. Right. Sure."
FILLERS = ("uh", "um", "mm", "hmm", "mhm", "oh", "ah", "huh", "er")
BARGE_PROBES_MS = (110, 320)  # when to listen to speech heard over the agent (ms after onset)
# how long past barge_in_min_speech_ms a still-running first probe is waited for, at least: under
# load a late answer is the usual case, and an "okay" should not cut the agent off for want of it.
# Once the recogniser's probe times are known (`ProbeLatency`), the wait follows them instead.
FIRST_PROBE_GRACE_MS = 100
_WORD = re.compile(r"[a-z']+")
_ONE_LETTER_WORDS = ("a", "i")


class ProbeLatency:
    """How long the recogniser has lately taken to answer a barge-in probe, in ms: a smoothed mean
    and mean deviation (as TCP estimates a round trip), shared by the calls of a worker, so that a
    busy machine's slower answers are waited for instead of being taken for words."""

    GAIN = 0.25

    def __init__(self) -> None:
        self.mean_ms: float | None = None
        self.deviation_ms = 0.0

    def observe(self, ms: float) -> None:
        """A probe answered after `ms`."""
        if self.mean_ms is None:
            self.mean_ms, self.deviation_ms = ms, ms / 2
            return
        error = ms - self.mean_ms
        self.mean_ms += self.GAIN * error
        self.deviation_ms += self.GAIN * (abs(error) - self.deviation_ms)

    def outlasted(self, ms: float) -> None:
        """A probe was given up after `ms` without an answer: answers take at least that long now.
        Counted as an answer when it is longer than the mean, so that a machine too busy to answer
        any probe in time learns to wait longer instead of never learning at all."""
        if self.mean_ms is None or ms > self.mean_ms:
            self.observe(ms)

    def bound_ms(self) -> float | None:
        """How long a probe may take and still be on time (None until one has answered)."""
        return None if self.mean_ms is None else self.mean_ms + 2 * self.deviation_ms


@dataclass
class Barge:
    """Caller speech heard while the agent talks, not yet judged interruption or backchannel."""

    started_audio_ms: float
    probes: list[asyncio.Future[Transcript]] = field(default_factory=list)
    verdict: str = "unknown"  # unknown | words | backchannel
    heard: str = ""
    judged: int = 0  # probes whose result has been taken into account
    first_probe_ms: float | None = None  # speech heard when the first probe was asked for


class BargeIn:
    """Judges speech heard over the agent, frame by frame."""

    def __init__(
        self,
        *,
        min_speech_ms: float,
        max_hold_ms: float,
        backchannels: Sequence[str],
        latency: ProbeLatency | None = None,
    ) -> None:
        self.min_speech_ms = min_speech_ms
        self.max_hold_ms = max_hold_ms
        self.latency = latency if latency is not None else ProbeLatency()
        self.acks = [*backchannels, *FILLERS]
        self.active: Barge | None = None

    def begin(self, onset_ms: float) -> None:
        """Speech started while the agent talks."""
        if self.active is None:
            self.active = Barge(started_audio_ms=onset_ms)

    def probe_launched(self, probe: asyncio.Future[Transcript]) -> None:
        """The probe asked for by `ProbeWanted` is running."""
        if self.active is not None:
            self.active.probes.append(probe)

    def judge(self, audio_ms: float, *, in_speech: bool, pending: bool, agent_speaking: bool) -> BargeEvent | None:
        """The barge-in's state after a frame: a probe wanted, a backchannel, an interruption,
        over (the agent finished first), or None (still undecided). After a `ProbeWanted`, call
        `probe_launched`, then `decide` (not `judge`: one probe a frame at most)."""
        barge = self.active
        if barge is None:
            return None
        if not agent_speaking:
            self._end()
            return BARGE_OVER
        heard_ms = audio_ms - barge.started_audio_ms
        for index, probe in enumerate(barge.probes):
            if probe.done() and not probe.cancelled() and probe.exception() is None and index >= barge.judged:
                barge.judged = index + 1
                text = probe.result().text
                verdict = self.classify(text)
                log.debug("barge probe %d heard %r (%s) at %.0f ms", index, text, verdict, heard_ms)
                if verdict != "unknown":
                    barge.heard, barge.verdict = text, verdict
        if in_speech and len(barge.probes) < len(BARGE_PROBES_MS) and heard_ms >= BARGE_PROBES_MS[len(barge.probes)]:
            # the first probe listens for acknowledgements; the later one listens without bias
            if not barge.probes:
                barge.first_probe_ms = heard_ms
            return ProbeWanted(BACKCHANNEL_PROMPT if not barge.probes else None)
        return self.decide(heard_ms, in_speech=in_speech, pending=pending)

    def decide(self, heard_ms: float, *, in_speech: bool, pending: bool) -> BargeEvent | None:
        """After the probes: a backchannel (speech over, utterance pending), an interruption, or None."""
        barge = self.active
        assert barge is not None  # nosec B101: type narrowing; only while a barge-in is being decided
        if not in_speech:
            if pending:
                # speech ended while the agent kept talking: a backchannel or a noise, not a turn
                self._end()
                return Backchannel(barge.heard)
            return None
        first_pending = bool(barge.probes) and not barge.probes[0].done()
        if (
            heard_ms >= self.min_speech_ms
            and barge.verdict != "backchannel"
            and not (first_pending and heard_ms < self.first_probe_deadline_ms(barge))
        ) or heard_ms >= self.max_hold_ms:
            self._end()
            return Interruption(heard_ms, barge.heard)
        return None

    def first_probe_deadline_ms(self, barge: Barge) -> float:
        """Until how much speech heard a still-running first probe is waited for: the grace past
        `min_speech_ms`, or longer when probes lately took longer to answer (`max_hold_ms` bounds it
        in `decide`)."""
        deadline = self.min_speech_ms + FIRST_PROBE_GRACE_MS
        bound = self.latency.bound_ms()
        if bound is not None and barge.first_probe_ms is not None:
            deadline = max(deadline, barge.first_probe_ms + bound)
        return deadline

    def heard_ms(self, audio_ms: float) -> float:
        """Speech heard over the agent so far."""
        return audio_ms - self.active.started_audio_ms if self.active is not None else 0.0

    def classify(self, text: str) -> str:
        """'words', 'backchannel', or 'unknown' when the probe heard nothing word-like.

        Cut-off syllables ("Mm-", "Uh-") and fillers count as acknowledgements: a caller
        starting a real interruption has, a tenth of a second in, usually said more."""
        words = [w for w in _WORD.findall(text.lower()) if len(w) > 1 or w in _ONE_LETTER_WORDS]
        if not words:
            return "unknown"
        return "backchannel" if is_backchannel(" ".join(words), self.acks) else "words"

    def cancel(self) -> None:
        """Drop the barge-in (the call ends, or the caller's speech became something else)."""
        self._end()

    def _end(self) -> None:
        if self.active is not None:
            for probe in self.active.probes:
                if not probe.done():
                    probe.cancel()
        self.active = None
