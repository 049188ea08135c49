"""Voice testing commands for the `voxgate` CLI: place a simulated call, transcribe audio, load-test.

`voxgate.cli` mounts these: `call_command` as `voxgate call`, `transcribe_command` as
`voxgate transcribe`, and `bench_app` as the `voxgate bench` group (its `voice` command).
Heavy imports happen inside the commands so `voxgate --help` stays fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from voxgate.cli._common import echo_json, fail


class VoiceProtocol(str, Enum):
    twilio = "twilio"
    native = "native"


class BenchScenario(str, Enum):
    order_status = "order_status"
    outage = "outage"
    mixed = "mixed"


class BenchCallers(str, Enum):
    synthetic = "synthetic"
    human = "human"


bench_app = typer.Typer(
    help="Benchmarks that drive a running (or self-started) voxgate server.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _run_async(coro: Any) -> Any:
    """Run a client coroutine; bad arguments exit 2 with the message, Ctrl-C exits 130."""
    try:
        return asyncio.run(coro)
    except ValueError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _parse_dtmf(items: list[str] | None) -> dict[int, str]:
    out: dict[int, str] = {}
    for item in items or []:
        turn, sep, digits = item.partition(":")
        if not sep or not turn.strip().isdigit() or not digits:
            fail(f"--dtmf expects TURN:DIGITS such as 2:4217#, got {item!r}")
        if any(d not in "0123456789*#" for d in digits):
            fail(f"--dtmf digits must be 0-9, * or #, got {digits!r}")
        out[int(turn)] = digits
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _print_call(report: Any) -> None:
    typer.echo(f"call to {report.url} ({report.protocol}, voice {report.voice})")
    if report.session_id:
        typer.echo(f"  session  {report.session_id}")
    t = report.timings
    typer.echo(
        f"  greeting first audio {_ms(t.greeting_first_audio_ms)} ms after start; "
        f"{t.greeting_audio_ms / 1000:.1f} s heard"
    )
    if report.greeting_text or report.greeting_server_text:
        typer.echo(f"  agent: {report.greeting_text or report.greeting_server_text}")
    typer.echo("")
    typer.echo(f"  {'#':>2}  {'caller':<34} {'v2v ms':>7} {'reply s':>7}  {'cut':<3}  agent reply (as heard)")
    for turn in report.turns:
        said = f"[DTMF {turn.dtmf}]" if turn.dtmf else (turn.said or "")
        said = said if len(said) <= 34 else said[:31] + "..."
        reply = turn.reply_text or turn.server_reply_text or ("(no reply)" if not turn.replied else "")
        typer.echo(
            f"  {turn.index:>2}  {said:<34} {_ms(turn.voice_to_voice_ms):>7} "
            f"{turn.reply_audio_ms / 1000:>7.1f}  {'yes' if turn.interrupted else '':<3}  {reply}"
        )
        if turn.server_heard:
            typer.echo(f"  {'':>2}  {'(server heard: ' + turn.server_heard + ')'}")
    typer.echo("")
    closed = f"closed by {report.closed_by or '-'}"
    if report.outcome:
        closed += f", outcome {report.outcome}"
    typer.echo(
        f"  {closed}; {t.duration_s:.1f} s; {t.frames_sent} frames sent, max send lag "
        f"{t.max_send_lag_ms:.0f} ms; marks {t.marks_echoed}/{t.marks_received} echoed; clears {t.clears}"
    )
    if report.refused:
        typer.echo("  REFUSED: the server played its busy message")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    if report.error:
        typer.echo(f"  ERROR: {report.error}")


def call_command(
    url: Annotated[
        str,
        typer.Argument(
            help="The server, e.g. ws://127.0.0.1:8600 (http:// also works); the protocol's path for --agent "
            "is added. A full socket URL (ws://…/twilio/NAME) is used as given."
        ),
    ],
    say: Annotated[
        list[str] | None,
        typer.Option("--say", "-s", help="A line the caller speaks (synthesised in --voice); repeat for each turn."),
    ] = None,
    wav: Annotated[
        list[Path] | None,
        typer.Option(
            "--wav",
            help="A WAV file the caller plays as a turn (after the --say lines); repeatable.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    protocol: Annotated[
        VoiceProtocol,
        typer.Option(help="twilio: Media Streams JSON with 8 kHz μ-law; native: voxgate's socket with 16 kHz PCM."),
    ] = VoiceProtocol.twilio,
    agent: Annotated[str, typer.Option(help="Agent name, used to build the socket path.")] = "harbor-support",
    voice: Annotated[
        str,
        typer.Option(
            help="Caller voice: pico-en-GB, pico-en-US, espeak-en-us-f3, espeak-en-gb-m3, flite-slt, flite-rms."
        ),
    ] = "pico-en-GB",
    dtmf: Annotated[
        list[str] | None,
        typer.Option(
            "--dtmf",
            help="TURN:DIGITS keys digits at turn TURN (0-based) instead of speaking, e.g. 2:4217#; "
            "the --say lines fill the other turns in order.",
        ),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="Write the agent audio as the caller heard it (16 kHz WAV).", dir_okay=False),
    ] = None,
    transcribe: Annotated[
        bool,
        typer.Option(
            "--transcribe/--no-transcribe", help="Transcribe each reply as heard (Whisper tiny.en, after the call)."
        ),
    ] = True,
    gap_ms: Annotated[
        int, typer.Option("--gap-ms", min=0, max=10000, help="Caller's pause after the agent finishes before speaking.")
    ] = 600,
    timeout: Annotated[float, typer.Option(help="Give up on the whole call after this many seconds.", min=1)] = 60.0,
    hangup: Annotated[
        bool,
        typer.Option("--hangup/--no-hangup", help="Hang up after the last reply, or wait for the agent to hang up."),
    ] = True,
    snr_db: Annotated[
        float | None,
        typer.Option(
            "--snr-db", help="Degrade the caller audio like a phone line (8 kHz μ-law band) with noise at this SNR."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full CallReport as JSON.")] = False,
) -> None:
    """Place one simulated phone call: real-time audio, scripted turns, caller-side latency.

    The caller streams 20 ms frames in real time, waits for the greeting and each reply to play
    out (plus --gap-ms), then speaks its next line. Voice-to-voice latency is measured from the
    last non-silent frame the caller sent to the first audible agent frame that arrived.
    Exit status 1 when the call failed, was refused, or a turn got no reply.
    """
    from voxgate.testing.caller import run_call
    from voxgate.testing.voices import VOICES, Degradation

    if not say and not wav and not dtmf:
        fail("nothing to say: give at least one --say, --wav or --dtmf")
    if voice not in VOICES:
        fail(f"unknown voice '{voice}' (known: {', '.join(VOICES)})")
    degradation = Degradation(telephone=True, snr_db=snr_db) if snr_db is not None else None
    report = _run_async(
        run_call(
            url,
            says=say,
            wavs=wav,
            protocol=protocol.value,
            agent=agent,
            voice=voice,
            dtmf=_parse_dtmf(dtmf),
            gap_ms=gap_ms,
            timeout_s=timeout,
            transcribe=transcribe,
            hangup_after=hangup,
            record_path=record,
            degradation=degradation,
        )
    )
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print_call(report)
        if record is not None:
            typer.echo(f"  recording: {record}")
    if not report.ok:
        raise typer.Exit(1)


def _as_dict(item: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    if hasattr(item, "model_dump"):
        return dict(item.model_dump())
    if isinstance(item, dict):
        return item
    return {"text": str(item)}


def transcribe_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Audio files: WAV of any rate and channel count, or raw 16 kHz int16 mono (.raw).",
            exists=True,
            dir_okay=False,
        ),
    ],
    model: Annotated[str, typer.Option(help="tiny.en, base.en or a CTranslate2 Whisper directory.")] = "tiny.en",
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print a JSON list: path, text, audio_ms, compute_ms, rtf, model, … per file."),
    ] = False,
) -> None:
    """Transcribe audio files offline with voxgate's speech recogniser (Whisper via CTranslate2).

    Exit status 1 when any file could not be read.
    """
    try:
        from voxgate.voice.transcribe import transcribe_files
    except ImportError as exc:
        fail(f"speech recognition is not available: {exc}")
    rows = []
    for path, item in zip(files, transcribe_files(list(files), model=model)):
        row = _as_dict(item)
        row.setdefault("path", str(path))
        rows.append(row)
    if as_json:
        echo_json(rows)
    else:
        for row in rows:
            if row.get("error"):
                typer.echo(f"{row['path']}: ERROR {row['error']}")
            else:
                timing = (
                    f"  ({row['compute_ms']:.0f} ms for {row['audio_ms'] / 1000:.1f} s)"
                    if isinstance(row.get("compute_ms"), (int, float)) and row.get("audio_ms")
                    else ""
                )
                typer.echo(f"{row['path']}: {row.get('text', '')}{timing}")
    if any(row.get("error") for row in rows):
        raise typer.Exit(1)


def _print_bench(report: Any) -> None:
    p = report.params
    where = p.url or "a self-started voxgate demo"
    noise = f", line noise {p.line_noise_dbfs:g} dBFS" if p.line_noise_dbfs is not None else ""
    what = "human callers (recorded people)" if p.callers == "human" else f"scenario {p.scenario}"
    typer.echo(f"voice bench: {p.calls} callers x {p.duration_s:g} s, {p.protocol}, {what}{noise}, against {where}")
    if report.error:
        typer.echo(f"  ERROR: {report.error}")
        return
    typer.echo(
        f"  calls: {report.calls_total} total, {report.calls_completed} completed, "
        f"{report.calls_refused} refused, {report.calls_failed} failed  ({report.duration_s:.1f} s)"
    )
    if report.calls_refused:
        typer.echo(
            "  refused calls got the busy message (or no connection): a worker takes at most its call_capacity "
            "(GET /health) at once, and the figures below are of the calls it took; to measure this many callers, "
            f"start it with VOXGATE_VOICE_CAPACITY of at least {p.calls}"
        )
    if report.outcomes:
        typer.echo("  call endings: " + ", ".join(f"{k} x{n}" for k, n in report.outcomes.items()))
    v = report.voice_to_voice_ms
    typer.echo(f"  voice-to-voice over {v.n} turns: p50 {_ms(v.p50)} ms, p95 {_ms(v.p95)} ms, max {_ms(v.max)} ms")
    typer.echo(
        f"  cut-ins (agent audio before the caller's last word): {report.cut_ins} ({report.cut_in_rate:.1%} of turns)"
    )
    if report.digits:
        typer.echo(
            "  account number + PIN heard exactly on the first try: "
            + ", ".join(
                f"{voice} {d.verified_first_try}/{d.calls}" + (f" ({d.first_try_rate:.0%})" if d.calls else "")
                for voice, d in sorted(report.digits.items())
            )
            + (f"; all {report.digits_first_try_rate:.0%}" if report.digits_first_try_rate is not None else "")
        )
    elif report.params.protocol != "native":
        typer.echo("  account numbers and PINs: not measured (--protocol native carries the server's transcripts)")
    if report.human is not None:
        h = report.human
        heard = f", word error rate of what the server heard {h.wer:.1%} ({h.words} words)" if h.wer is not None else ""
        typer.echo(
            f"  human callers: {h.turns} turns ({', '.join(f'{k} {n}' for k, n in sorted(h.by_kind.items()))}), "
            f"{h.replied} answered, {h.cut_ins} cut into{heard}"
        )
    g = report.greeting_ms
    typer.echo(f"  greeting first audio: p50 {_ms(g.p50)} ms, p95 {_ms(g.p95)} ms")
    if report.server is not None:
        s = report.server
        typer.echo(
            f"  server CPU: mean {s.cpu_mean_pct}% max {s.cpu_max_pct}% (100% = one of {s.cores} cores); "
            f"RSS max {s.rss_max_mib} MiB"
        )
    c = report.client
    typer.echo(
        f"  client: CPU {c.cpu_mean_pct}%, max send lag {c.max_send_lag_ms:.0f} ms, {c.pacer_rebases} pacer rebases"
    )
    stats = report.server_stats or {}
    stages = stats.get("stages") if isinstance(stats.get("stages"), dict) else None
    if stages:
        typer.echo("  server stages (ms after the server's end of speech):")
        for name, fig in stages.items():
            if isinstance(fig, dict):
                typer.echo(
                    f"    {name:<20} n {fig.get('n', '-'):>4}  p50 {_ms(fig.get('p50')):>6}  "
                    f"p95 {_ms(fig.get('p95')):>6}  max {_ms(fig.get('max')):>6}"
                )
    elif stats:
        typer.echo(f"  server stats: {json.dumps(stats)[:400]}")
    for reason, count in report.failure_reasons.items():
        typer.echo(f"  failed x{count}: {reason}")


@bench_app.command("voice")
def bench_voice(
    calls: Annotated[int, typer.Option(help="Concurrent simulated callers.", min=1, max=200)] = 4,
    duration: Annotated[
        float,
        typer.Option(
            help="Seconds during which callers place new calls; calls in progress then finish.", min=1, max=3600
        ),
    ] = 60.0,
    url: Annotated[
        str | None,
        typer.Option(
            help="A running loopback server (http://127.0.0.1:8600). Omitted: start `voxgate demo` on free ports "
            "and measure its CPU and memory."
        ),
    ] = None,
    protocol: Annotated[VoiceProtocol, typer.Option(help="Which voice socket the callers use.")] = VoiceProtocol.twilio,
    scenario: Annotated[
        BenchScenario,
        typer.Option(
            help="order_status: order → account number → PIN → goodbye; outage: outage → postcode → goodbye; "
            "mixed: either, drawn per call."
        ),
    ] = BenchScenario.order_status,
    ramp: Annotated[float, typer.Option(help="Seconds over which callers start, evenly spaced.", min=0)] = 2.0,
    seed: Annotated[int, typer.Option(help="Seed for customers, voices and scenario draws.")] = 7,
    capacity: Annotated[
        int | None,
        typer.Option(
            help="VOXGATE_VOICE_CAPACITY for the self-started server (calls beyond it hear a busy message).", min=1
        ),
    ] = None,
    call_timeout: Annotated[float, typer.Option(help="Longest a single call may take, in seconds.", min=5)] = 90.0,
    voice: Annotated[
        list[str] | None,
        typer.Option("--voice", help="Caller voices, drawn per caller (repeatable; default flite-slt and pico-en-US)."),
    ] = None,
    line_noise: Annotated[
        float | None,
        typer.Option(
            "--line-noise",
            max=-20.0,
            help="Put white noise at this level (dBFS, e.g. -50) on every caller's line, in their words and "
            "their pauses, as on a real phone line; default: digital silence between words.",
        ),
    ] = None,
    callers: Annotated[
        BenchCallers,
        typer.Option(
            help="synthetic: the scenario's lines in synthetic voices; human: recordings of people (Debian's "
            "pocketsphinx-testdata: phrases, a restart, long sentences with pauses, digits), off-script, instead "
            "of the scenario.",
        ),
    ] = BenchCallers.synthetic,
    as_json: Annotated[bool, typer.Option("--json", help="Print the BenchReport as JSON.")] = False,
) -> None:
    """Load-test voice calls: N concurrent real-time callers, voice-to-voice percentiles, server CPU/RSS.

    Callers play scripted Harbor demo conversations with real demo customers, back to back, for
    --duration seconds. Replies are checked for audio, not transcribed, so the client stays light.
    Exit status 1 only when the run itself failed (e.g. the server did not start).
    """
    from voxgate.testing.loadgen import run_voice_bench

    env = {"VOXGATE_VOICE_CAPACITY": str(capacity)} if capacity else None
    report = _run_async(
        run_voice_bench(
            url,
            calls,
            duration,
            protocol=protocol.value,
            scenario=scenario.value,
            ramp_s=ramp,
            seed=seed,
            call_timeout_s=call_timeout,
            server_env=env,
            voices=tuple(voice or ("flite-slt", "pico-en-US")),
            line_noise_dbfs=line_noise,
            callers=callers.value,
        )
    )
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print_bench(report)
    if report.error:
        raise typer.Exit(1)
