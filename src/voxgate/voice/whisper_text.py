"""Fitting Whisper to a phone turn and judging what it decoded: the mel window and token budget for
an utterance's length, decoder loops, stock hallucinations, prompt echoes, and cutting long audio."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from voxgate.voice.speech_text import normalize_transcript
from voxgate.voice.types import SAMPLE_RATE

#: Whisper's native window: 30 s of 10 ms mel frames.
FULL_WINDOW = 3000
#: Windows the adaptive path may use, shortest first (CTranslate2 accepts any length ≤ 3000).
CONTEXT_WINDOWS = (1000, 1500, 2000, FULL_WINDOW)
#: Token budget: a fixed allowance plus a generous speaking rate (fast speech is ~4 tokens/s).
TOKENS_BASE = 8
TOKENS_PER_SECOND = 6
#: Whisper's decoder context.
MAX_TEXT_TOKENS = 448

FRAMES_PER_SECOND = 100
SAMPLES_PER_WINDOW = FULL_WINDOW * SAMPLE_RATE // FRAMES_PER_SECOND

#: What Whisper says on silence or noise (from its subtitle training data), normalised. Short
#: answers a caller really gives ("okay", "yeah") are deliberately not listed.
HALLUCINATIONS = frozenset(
    {
        "you",
        "thank you",
        "thanks",
        "thank you very much",
        "thanks for watching",
        "thank you for watching",
        "bye",
        "bye bye",
        "so",
        "the end",
        "please subscribe",
        "subtitles by the amara org community",
    }
)
#: No-speech probability above which a result is dropped whatever the text (silence/noise
#: measured 0.94-0.97 here; real speech ≤ 0.70, short digit strings being the highest).
NO_SPEECH_DROP = 0.85
#: For a stock hallucination phrase, a much lower no-speech probability is already suspicious.
NO_SPEECH_SUSPECT = 0.4
#: Audio quieter than this peak (about -60 dBFS) is not decoded at all.
SILENCE_PEAK = 1e-3


def context_frames(audio_seconds: float) -> int:
    """The mel window (frames of 10 ms) for an utterance: the first of 1000/1500/2000/3000 ≥ 1.5 x audio + 2 s."""
    needed = math.ceil((1.5 * audio_seconds + 2.0) * FRAMES_PER_SECOND)
    for frames in CONTEXT_WINDOWS:
        if frames >= needed:
            return frames
    return FULL_WINDOW


def token_budget(audio_seconds: float) -> int:
    """Most text tokens an utterance of this length can plausibly need."""
    return TOKENS_BASE + math.ceil(TOKENS_PER_SECOND * audio_seconds)


#: Faster than anyone speaks (fast conversational English is ~4 words a second); digits count as words.
MAX_WORDS_PER_SECOND = 5.0


def settle_loop(text: str, audio_seconds: float) -> str | None:
    """One round of looped text when the whole of it could not have been said in the audio, else None.

    A legitimate repeat ("five five", "I want a refund now. I want a refund now.") fits in its
    audio and is left for a second decode to confirm; a loop that overruns the speaking rate
    does not need one.
    """
    words = len(normalize_transcript(text).split())
    if audio_seconds <= 0 or words / audio_seconds <= MAX_WORDS_PER_SECOND or not looks_looped(text):
        return None
    once = unloop(text)
    if once == text or len(normalize_transcript(once).split()) / audio_seconds > MAX_WORDS_PER_SECOND:
        return None
    return once


def looks_looped(text: str) -> bool:
    """Whether decoded text reads like a decoder loop rather than speech.

    True when the whole text is one phrase said at least twice ("okay okay",
    "where is my order where is my order", "ten of clubs ten of clubs ten of"), or
    ends in a phrase of three or more words repeated back to back. Legitimate
    repeats ("no no", "five five") also match; they only cost a second decode.
    """
    words = normalize_transcript(text).split()
    n = len(words)
    for period in range(1, n // 2 + 1):
        if all(words[i] == words[i + period] for i in range(n - period)):
            return True
    for period in range(3, n // 2 + 1):
        if words[n - 2 * period : n - period] == words[n - period :]:
            return True
    return False


@dataclass(frozen=True)
class Decoded:
    """One decode of one window: the text and the evidence for judging it."""

    text: str
    tokens: int
    hit_budget: bool
    no_speech_prob: float
    avg_logprob: float
    frames: int


def tidy(text: str) -> str:
    """Collapse runs of stray punctuation (" . . . .", which Whisper emits on long pauses) and trim."""
    return re.sub(r"\s+([.,!?])(?:\s+[.,!?])+", r"\1", text).strip()


def is_hallucination(result: Decoded) -> bool:
    """Whether Whisper output is most likely not speech: no words, no-speech, or a stock phrase on weak evidence."""
    words = normalize_transcript(result.text)
    if not words:
        return True
    if result.no_speech_prob >= NO_SPEECH_DROP:
        return True
    if words in HALLUCINATIONS and (result.no_speech_prob >= NO_SPEECH_SUSPECT or result.avg_logprob < -1.0):
        return True
    return False


def unloop(text: str) -> str:
    """The first round of text that is one phrase repeated ("ten of clubs ten of clubs ten" → "ten of clubs")."""
    raw = text.split()
    words = [normalize_transcript(w) for w in raw]
    for period in range(1, len(raw) // 2 + 1):
        if all(words[i] == words[i + period] for i in range(len(raw) - period)):
            return " ".join(raw[:period])
    return text


#: With a prompt, an output made only of prompt words needs this much confidence that speech is present.
PROMPT_ECHO_NO_SPEECH = 0.5


def echoes_prompt(result: Decoded, prompt: str | None) -> bool:
    """Whether the output just repeats the prompt: all of it (3+ words), or prompt words on doubtful audio.

    Measured on noise with the prompt "Okay. Yeah. Uh-huh. Mm-hmm. Right. Sure." tiny.en
    said "Right." at no-speech 0.83, while real prompted words came out at ≤ 0.25.
    """
    if not prompt:
        return False
    said = normalize_transcript(result.text).split()
    given = normalize_transcript(prompt).split()
    if len(said) >= 3 and said == given[: len(said)]:
        return True
    return bool(said) and set(said) <= set(given) and result.no_speech_prob >= PROMPT_ECHO_NO_SPEECH


def split_long(samples: np.ndarray) -> list[np.ndarray]:
    """Cut audio longer than Whisper's 30 s window at the quietest 100 ms between 20 s and 30 s."""
    pieces: list[np.ndarray] = []
    block = SAMPLE_RATE // 10
    while samples.size > SAMPLES_PER_WINDOW:
        lo, hi = 20 * SAMPLE_RATE, SAMPLES_PER_WINDOW
        region = samples[lo:hi]
        energy = np.square(region[: region.size - region.size % block].reshape(-1, block)).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * block + block // 2
        pieces.append(samples[:cut])
        samples = samples[cut:]
    if samples.size >= SAMPLE_RATE // 10 or not pieces:
        pieces.append(samples)
    return pieces
