"""Test tooling for voice agents: simulated phone callers, caller voices and the voice load benchmark.

from voxgate.testing import run_call
report = await run_call("ws://127.0.0.1:8600", says=["where is my order"])
"""

from voxgate.testing.caller import BargeInReport, CallReport, TurnReport, barge_in_probe, run_call
from voxgate.testing.loadgen import BenchReport, run_voice_bench
from voxgate.testing.voices import Degradation, available_voices, synthesize_caller

__all__ = [
    "BargeInReport",
    "BenchReport",
    "CallReport",
    "Degradation",
    "TurnReport",
    "available_voices",
    "barge_in_probe",
    "run_call",
    "run_voice_bench",
    "synthesize_caller",
]
