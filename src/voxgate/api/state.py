"""What the API routers share: settings, database, runtimes per agent, live sessions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request

from voxgate.channels.calls import Admission
from voxgate.observe.voice_stats import VoiceStats

from voxgate.config import Settings
from voxgate.runtime.engine import AgentRuntime
from voxgate.runtime.registry import LocalSessions
from voxgate.store.db import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    runtimes: dict[str, AgentRuntime] = field(default_factory=dict)
    sessions: LocalSessions = field(default_factory=LocalSessions)
    admission: Admission = field(default_factory=lambda: Admission(capacity=20))
    engines: Any = None
    voice_stats: VoiceStats = field(default_factory=VoiceStats)
    warming: "asyncio.Task[None] | None" = None
    _engines_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def voice_engines(self) -> Any:
        """Speech models load once per worker, on the first call (or at start-up if preloaded)."""
        if self.engines is None:
            async with self._engines_lock:
                if self.engines is None:
                    from voxgate.voice.engines import load_engines

                    voices = tuple(dict.fromkeys(rt.agent.voice.voice for rt in self.runtimes.values())) or ("default",)
                    engines = await asyncio.to_thread(
                        load_engines,
                        asr_model=self.settings.asr_model,
                        voices=voices,
                        workers=self.settings.speech_workers,
                    )
                    self.engines = engines
                    # fixed prompts render in the background at low priority; calls need not wait
                    self.warming = asyncio.create_task(self._warm(engines))
        return self.engines

    async def _warm(self, engines: Any) -> None:
        """Render each agent's fixed prompts (and the busy message) before the first caller hears them."""
        from voxgate.voice.pool import BACKGROUND
        from voxgate.voice.prompts import static_prompts

        for rt in self.runtimes.values():
            synth = engines.synthesizer(rt.agent.voice.voice)
            await engines.pool.run(BACKGROUND, engines.warm, synth, static_prompts(rt))
        await self.admission.busy_audio(engines)
        for _ in range(min(self.admission.capacity, 8)):  # detectors for the first calls
            engines.release_vad(await asyncio.to_thread(engines.vad_factory))

    def runtime(self, agent: str) -> AgentRuntime:
        rt = self.runtimes.get(agent)
        if rt is None:
            raise HTTPException(404, f"no agent named '{agent}' is served here")
        return rt


def get_state(request: Request) -> AppState:
    return request.app.state.voxgate  # type: ignore[no-any-return]
