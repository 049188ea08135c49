"""The speaker: reply text to the caller's ear, chunk by chunk, synthesised just ahead of playback."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from voxgate.clock import MonotonicClock
from voxgate.voice.call.playback import Playback, reply_chunks
from voxgate.voice.call.ports import CallOutput, SpeechEngines
from voxgate.voice.call.timing import CallStats, TurnTiming
from voxgate.voice.pool import BACKGROUND, FIRST_AUDIO
from voxgate.voice.types import FRAME_BYTES, FRAME_MS, SpeechSynthesizer

FRAME_S = FRAME_MS / 1000  # how often a wait for playback looks again

#: what a reply stream carries: texts, then None once the reply is complete
Replies = asyncio.Queue[str | None]


class Speaker:
    """Speaks replies on one call; at most one reply is being spoken at a time (a new one replaces it)."""

    def __init__(
        self,
        engines: SpeechEngines,
        synth: SpeechSynthesizer,
        output: CallOutput,
        clock: MonotonicClock,
        stats: CallStats,
        on_first_audio: Callable[[TurnTiming], None],
    ) -> None:
        self.engines = engines
        self.synth = synth
        self.output = output
        self.clock = clock
        self.stats = stats
        self.playback = Playback()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self._on_first_audio = on_first_audio

    @property
    def sending(self) -> bool:
        """A reply is still being synthesised or sent."""
        return self.task is not None and not self.task.done()

    @property
    def speaking(self) -> bool:
        """A reply is being sent, or (by the estimate) still playing."""
        return self.sending or self.playback.playing(self.clock.now())

    def say(self, text: str, timing: TurnTiming | None) -> None:
        """Start speaking `text` (nothing when it is blank or the call is over)."""
        if not text.strip() or self.closed:
            return
        replies: Replies = asyncio.Queue()
        replies.put_nowait(text)
        replies.put_nowait(None)
        self.task = asyncio.create_task(self._speak(replies, timing))

    def stream(self, timing: TurnTiming) -> Replies:
        """Start a reply whose texts come one by one on the returned queue (None ends it); what is
        being said is cut."""
        replies: Replies = asyncio.Queue()
        self.cancel()
        self.task = asyncio.create_task(self._speak(replies, timing))
        return replies

    async def until_played(self) -> None:
        """Until what is being said has been sent and (by the estimate) played."""
        while self.speaking and not self.closed:
            await self.clock.sleep(FRAME_S)

    async def until_sent(self) -> None:
        """Until what is being said has been synthesised and sent (it may still be playing)."""
        task = self.task
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def announce(self, text: str, *, follow_on: bool) -> None:
        """Say `text` once what is playing has played (`follow_on`: right behind it), and wait
        until the caller has heard it."""
        await (self.until_sent() if follow_on else self.until_played())
        if self.closed:
            return
        await self.output.send_event({"type": "transcript", "role": "agent", "text": text, "final": True})
        self.say(text, None)
        task = self.task
        if task is not None:
            await asyncio.wait({task})
        await self.until_played()

    async def stop(self) -> None:
        """Cut what is being said; the caller's queued audio is cleared too."""
        self.cancel()
        self.playback.cut(self.clock.now())
        await self.output.send_clear()

    def cancel(self) -> None:
        """Stop synthesising and sending the reply being spoken."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _speak(self, replies: Replies, timing: TurnTiming | None) -> None:
        """Speak the texts put on `replies` one after another, until None; a text may still be
        on its way while the ones before it play."""
        chunks: deque[str] = deque()
        index = 0

        def cached(text: str) -> bool:
            return self.engines.cached_speech(self.synth, text) is not None

        async def more() -> None:
            # wait for the next text (or the end), split into what is synthesised at a time
            while not chunks:
                text = await replies.get()
                if text is None:
                    replies.put_nowait(None)  # stays closed
                    return
                chunks.extend(reply_chunks(text, first=index == 0, chunk=self.engines.chunk_text, cached=cached))

        await more()
        while chunks:
            chunk = chunks.popleft()
            wait = self.playback.ahead_wait(index, self.clock.now())
            if wait > 0:
                await self.clock.sleep(wait)
            pcm = self.engines.cached_speech(self.synth, chunk)
            if pcm is None:
                pcm = await self.engines.synthesize(self.synth, chunk, FIRST_AUDIO if index == 0 else BACKGROUND)
            if timing is not None and index == 0:
                timing.first_tts_at = self.clock.now()
            if not pcm:
                index += 1
                await more()
                continue
            for start in range(0, len(pcm), FRAME_BYTES):
                await self.output.send_audio(pcm[start : start + FRAME_BYTES])
            if timing is not None and not timing.first_audio_at:
                timing.first_audio_at = self.clock.now()
                self._on_first_audio(timing)
            self.stats.bytes_out += len(pcm)
            self.playback.sent(len(pcm), self.clock.now())
            self.playback.next_mark()
            label, index = index, index + 1
            await more()  # is this the last of the reply? the session may still be working it out
            await self.output.send_mark(self.playback.mark_name(label, not chunks))
