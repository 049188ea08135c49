"""Fixed prompts rendered once are kept on disk (voice/prompt_audio.py): a worker that starts again, or
another sharing the folder, reads them instead of synthesising them; another voice, setting or model
is another key; a damaged file is a miss, never wrong audio; the folder is private and bounded."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from voxgate.testing.fakes import FakeSynthesizer, fake_vad
from voxgate.voice import tts
from voxgate.voice.engines import PIPELINE_AUDIO, VoiceEngines
from voxgate.voice.pool import SpeechPool
from voxgate.voice.prompt_audio import LOCK_STRIPES, LOCK_SUFFIX, PromptAudioStore
from voxgate.voice.vad import SpeechDetector

PROMPTS = ["Welcome to Harbor. How can I help you today?", "Which five digit postcode is affected?"]


class FingerprintedSynth(FakeSynthesizer):
    """The fake voice with a fingerprint, as the real synthesisers have: its audio may be stored."""

    def __init__(self, fingerprint: str = "fake|v1", ms_per_char: float = 20.0) -> None:
        super().__init__(ms_per_char=ms_per_char)
        self.fingerprint = fingerprint


@pytest.fixture()
def pool() -> Iterator[SpeechPool]:
    speech_pool = SpeechPool(workers=1, urgent_workers=0)
    yield speech_pool
    speech_pool.close()


def engines_with(pool: SpeechPool, synth: FakeSynthesizer) -> VoiceEngines:
    """A worker's engines with an empty memory cache (a process that has just started)."""
    return VoiceEngines(
        pool=pool,
        recognizer=None,  # type: ignore[arg-type]
        synthesizers={"fake": synth},  # type: ignore[dict-item]
        default_voice="fake",
        vad_factory=lambda: None,  # type: ignore[arg-type,return-value]
    )


def test_a_worker_that_starts_again_reads_its_prompts_instead_of_synthesising_them(
    tmp_path: Path, pool: SpeechPool
) -> None:
    store = PromptAudioStore(tmp_path / "speech-cache")
    first_synth = FingerprintedSynth()
    first = engines_with(pool, first_synth)
    rendered = first.warm(first_synth, PROMPTS, store)
    assert rendered == len(first_synth.spoken) >= len(PROMPTS)  # every chunk synthesised once
    again_synth = FingerprintedSynth()
    again = engines_with(pool, again_synth)
    assert again.warm(again_synth, PROMPTS, PromptAudioStore(tmp_path / "speech-cache")) == 0
    assert again_synth.spoken == []
    for text in PROMPTS:
        for chunk in again.chunk_text(text):
            assert again.cached_speech(again_synth, chunk) == first.cached_speech(first_synth, chunk)
            assert again.cached_speech(again_synth, chunk)  # audio, not an empty placeholder


def test_another_voice_or_setting_is_another_key(tmp_path: Path, pool: SpeechPool) -> None:
    store = PromptAudioStore(tmp_path / "speech-cache")
    a = FingerprintedSynth("fake|v1")
    engines_with(pool, a).warm(a, PROMPTS, store)
    b = FingerprintedSynth("fake|v2", ms_per_char=30.0)
    b_engines = engines_with(pool, b)
    assert b_engines.warm(b, PROMPTS, store) == len(b.spoken) > 0  # rendered with its own settings
    chunk = b_engines.chunk_text(PROMPTS[0])[0]
    assert b_engines.cached_speech(b, chunk) == b.audio(chunk)  # the v2 audio, not v1's


def test_real_voices_fingerprint_their_model_files_and_settings() -> None:
    loud, quiet = tts.PicoSynthesizer(volume=0.7), tts.PicoSynthesizer(volume=0.5)
    assert loud.fingerprint != quiet.fingerprint
    assert loud.fingerprint == tts.PicoSynthesizer(volume=0.7).fingerprint
    digests = loud.record.files.values()
    assert digests and all(digest in loud.fingerprint for digest in digests)


def test_a_synthesiser_without_a_fingerprint_is_never_stored(tmp_path: Path, pool: SpeechPool) -> None:
    synth = FakeSynthesizer(ms_per_char=20.0)
    store = PromptAudioStore(tmp_path / "speech-cache")
    assert engines_with(pool, synth).warm(synth, PROMPTS, store) > 0
    assert not (tmp_path / "speech-cache").exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "foreign"])
def test_a_damaged_file_is_a_miss_and_is_rendered_again(
    tmp_path: Path, pool: SpeechPool, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PromptAudioStore(tmp_path / "speech-cache")
    synth = FingerprintedSynth()
    text = "Thanks for calling."
    engines_with(pool, synth).warm(synth, [text], store)
    path = store.path(f"fake|v1|{PIPELINE_AUDIO}", text)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-3])
    elif damage == "flipped":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        path.write_bytes(b"RIFF" + data[4:])
    again = FingerprintedSynth()
    with caplog.at_level(logging.WARNING, logger="voxgate.voice"):
        assert engines_with(pool, again).warm(again, [text], store) == 1
    assert again.spoken == [text]
    assert "damaged" in caplog.text
    assert store.get(f"fake|v1|{PIPELINE_AUDIO}", text) is not None  # written again, whole


def test_the_folder_is_private_under_a_permissive_umask(tmp_path: Path, pool: SpeechPool) -> None:
    old = os.umask(0o022)
    try:
        store = PromptAudioStore(tmp_path / "data" / "speech-cache")
        synth = FingerprintedSynth()
        engines_with(pool, synth).warm(synth, PROMPTS, store)
    finally:
        os.umask(old)
    for folder in (tmp_path / "data", tmp_path / "data" / "speech-cache"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = list((tmp_path / "data" / "speech-cache").iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    # no temporary file left behind: the audio, and the lock files its claims used (a bounded set)
    assert all(f.suffix in (".pcm", LOCK_SUFFIX) for f in files) and any(f.suffix == ".pcm" for f in files)
    assert len([f for f in files if f.suffix == LOCK_SUFFIX]) <= LOCK_STRIPES


def test_a_prompt_another_worker_is_rendering_is_read_when_it_is_done_not_rendered_twice(
    tmp_path: Path, pool: SpeechPool
) -> None:
    store = PromptAudioStore(tmp_path / "speech-cache")
    key = f"fake|v1|{PIPELINE_AUDIO}"
    synth = FingerprintedSynth()
    engines = engines_with(pool, synth)
    chunks = list(dict.fromkeys(c for text in PROMPTS for c in engines.chunk_text(text)))
    busy = chunks[0]
    other = PromptAudioStore(tmp_path / "speech-cache")  # the other worker, with its own lock files open
    with ThreadPoolExecutor(1) as run:
        with other.claim(key, busy, wait=False) as claimed:
            assert claimed
            with store.claim(key, busy, wait=False) as second:
                assert not second  # held: a second claim is refused, not queued
            warming = run.submit(engines.warm, synth, PROMPTS, store)
            # this worker renders everything else meanwhile, then waits for the chunk held
            deadline = time.monotonic() + 30
            while len(synth.spoken) < len(chunks) - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            held = busy not in synth.spoken and not warming.done()
            other.put(key, busy, FakeSynthesizer().audio(busy))  # the other worker writes it and lets go
        assert held
    assert warming.result(timeout=30) == len(chunks) - 1
    assert busy not in synth.spoken and sorted(synth.spoken) == sorted(chunks[1:])
    assert engines.speech(synth, busy) == FakeSynthesizer().audio(busy)  # read from the folder, kept
    assert busy not in synth.spoken


def test_the_folder_keeps_the_most_recently_used_files(tmp_path: Path) -> None:
    store = PromptAudioStore(tmp_path / "speech-cache", max_files=3)
    pcm = np.arange(800, dtype=np.int16).tobytes()
    for i in range(5):
        store.put("fp", f"prompt {i}", pcm)
        os.utime(store.path("fp", f"prompt {i}"), (1_000_000 + i, 1_000_000 + i))
    assert store.get("fp", "prompt 0") == pcm  # read now: the most recent
    assert store.prune() == 2
    assert [store.get("fp", f"prompt {i}") is not None for i in range(5)] == [True, False, False, True, True]


def test_a_folder_that_cannot_be_written_is_logged_and_the_prompts_still_play(
    tmp_path: Path, pool: SpeechPool, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "speech-cache"
    blocker.write_text("a file where the folder should be")
    synth = FingerprintedSynth()
    engines = engines_with(pool, synth)
    with caplog.at_level(logging.WARNING, logger="voxgate.voice"):
        assert engines.warm(synth, PROMPTS, PromptAudioStore(blocker)) > 0
    assert "could not keep prompt audio" in caplog.text
    chunk = engines.chunk_text(PROMPTS[0])[0]
    assert engines.cached_speech(synth, chunk) == synth.audio(chunk)  # in memory all the same


def test_speech_detectors_are_stocked_up_to_the_count_once_for_engines_shared_by_several_apps(pool: SpeechPool) -> None:
    """Each app that starts on engines its process shares stocks detectors for its first calls: the second
    finds them free and makes none (a Silero detector costs ~60 ms of CPU to make)."""
    made: list[SpeechDetector] = []

    def factory() -> object:
        made.append(fake_vad())
        return made[-1]

    engines = VoiceEngines(
        pool=pool,
        recognizer=None,  # type: ignore[arg-type]
        synthesizers={},
        default_voice="fake",
        vad_factory=factory,  # type: ignore[arg-type]
    )
    assert engines.stock_vads(3) == 3
    assert engines.stock_vads(3) == 0  # a second app on the same engines
    taken = asyncio.run(engines.acquire_vad())  # type: ignore[arg-type]
    assert taken in made and len(made) == 3  # a call takes a stocked one
    assert engines.stock_vads(3) == 1  # and the next start makes only what is missing
    assert len(made) == 4
