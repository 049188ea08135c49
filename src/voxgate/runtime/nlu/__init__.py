"""Offline language understanding for the conversation engine: embeddings, intents, numbers and slots."""

from voxgate.runtime.nlu.embeddings import (
    DIMS,
    Embedder,
    ModelInfo,
    ModelIntegrityError,
    ModelNotAvailableError,
    default_embedder,
)
from voxgate.runtime.nlu.intents import Calibration, IntentClassifier, IntentPrediction, load_out_of_domain
from voxgate.runtime.nlu.numbers import Normalized, NumberSpan, extract_digit_string, normalize_numbers
from voxgate.runtime.nlu.slots import SLOT_TYPES, SlotParse, parse_slot

__all__ = [
    "DIMS",
    "SLOT_TYPES",
    "Calibration",
    "Embedder",
    "IntentClassifier",
    "IntentPrediction",
    "ModelInfo",
    "ModelIntegrityError",
    "ModelNotAvailableError",
    "Normalized",
    "NumberSpan",
    "SlotParse",
    "default_embedder",
    "extract_digit_string",
    "load_out_of_domain",
    "normalize_numbers",
    "parse_slot",
]
