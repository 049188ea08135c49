"""`voxgate test DIR`: run an agent's conversation tests, print progress and a summary, write reports."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from voxgate.cli._common import fail, load_agent

# what `--demo-backend` provides as fixtures when none are given: the demo company's own data
DEMO_FIXTURES = {"customer": "harbor_backend:demo_credentials", "outage": "harbor_backend.data:draw_outages"}


def test_command(
    agent_dir: Annotated[Path, typer.Argument(help="Agent directory (holds agent.yaml, topics/ and tests/).")],
    voice: Annotated[
        bool, typer.Option("--voice", help="Speak every caller turn: synthesise, recognise, then handle.")
    ] = False,
    env: Annotated[str, typer.Option("--env", help="Environment name the runtime reports (dev, test, prod).")] = "dev",
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON result here ('-' for stdout).")
    ] = None,
    min_pass_rate: Annotated[
        float, typer.Option("--min-pass-rate", min=0.0, max=1.0, help="Exit 1 below this pass rate.")
    ] = 1.0,
    fixtures: Annotated[
        list[str] | None,
        typer.Option("--fixtures", help="NAME=module:attribute providing {NAME.N.field} placeholders (repeatable)."),
    ] = None,
    demo_backend: Annotated[
        bool,
        typer.Option(
            "--demo-backend", help="Start the Harbor demo backend for the run; its demo data become the fixtures."
        ),
    ] = False,
    select: Annotated[
        list[str] | None, typer.Option("--select", "-k", help="Run only the tests with this name (repeatable).")
    ] = None,
    caller_voice: Annotated[str | None, typer.Option("--caller-voice", help="Caller voice for spoken turns.")] = None,
    asr_model: Annotated[str, typer.Option("--asr-model", help="Whisper model that hears spoken turns.")] = "tiny.en",
) -> None:
    """Run the conversation tests in DIR/tests/*.yaml. Exit 0 at or above --min-pass-rate, 1 below it,
    2 when the agent or a test file is invalid (each problem printed as path:line:col)."""
    from voxgate.testing.conversations import ConversationTestError

    bundle = load_agent(agent_dir)
    if not bundle.tests:
        fail(f"{agent_dir}: no conversation tests (tests/*.yaml)")
    specs: dict[str, str] = dict(DEMO_FIXTURES) if demo_backend and not fixtures else {}
    for item in fixtures or []:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            fail(f"--fixtures {item!r}: expected NAME=module:attribute")
        specs[name] = spec
    quiet = json_out == Path("-")
    try:
        with _backend(demo_backend):
            suite = asyncio.run(
                _run(
                    bundle,
                    specs,
                    voice=voice,
                    env=env,
                    names=select,
                    caller_voice=caller_voice,
                    asr_model=asr_model,
                    quiet=quiet,
                )
            )
    except ConversationTestError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(2) from None
    _write_reports(suite, junit, json_out)
    if not quiet:
        _summary(suite, min_pass_rate)
    if suite.pass_rate < min_pass_rate:
        raise typer.Exit(1)


async def _run(
    bundle: Any,
    specs: dict[str, str],
    *,
    voice: bool,
    env: str,
    names: list[str] | None,
    caller_voice: str | None,
    asr_model: str,
    quiet: bool,
) -> Any:
    from voxgate.testing.conversations import load_fixtures, run_conversation_tests, shared_recognizer

    mode = "voice" if voice else "text"
    if not quiet:
        typer.echo(
            f"{bundle.agent.name}: {len(names) if names else len(bundle.tests)} conversation test(s), {mode}, env {env}"
        )
    needs_ear = voice or any(t.voice for test in bundle.tests for t in test.turns)
    return await run_conversation_tests(
        bundle,
        voice=voice,
        fixtures=load_fixtures(specs),
        env=env,
        names=names,
        caller_voice=caller_voice,
        recognizer=shared_recognizer(asr_model) if needs_ear else None,
        on_result=None if quiet else _progress,
    )


def _progress(case: Any) -> None:
    mark = "PASS" if case.passed else "FAIL"
    typer.echo(f"  {mark}  {case.name}  [{case.category}]  {case.duration_ms:.0f} ms")
    for failure in case.failures:
        typer.echo(f"        - {failure}")


def _summary(suite: Any, threshold: float) -> None:
    rows = [(cat, c["passed"], c["failed"]) for cat, c in sorted(suite.by_category().items())]
    width = max([len("category")] + [len(r[0]) for r in rows])
    typer.echo("")
    typer.echo(f"{'category':<{width}}  passed  failed")
    for cat, ok, bad in rows:
        typer.echo(f"{cat:<{width}}  {ok:>6}  {bad:>6}")
    typer.echo(f"{'total':<{width}}  {suite.passed_count:>6}  {suite.total - suite.passed_count:>6}")
    seconds = suite.metrics.get("duration_ms", 0) / 1000
    verdict = "OK" if suite.pass_rate >= threshold else f"FAILED (below {threshold:.0%})"
    typer.echo(f"pass rate {suite.pass_rate:.0%} in {seconds:.1f} s: {verdict}")


def _write_reports(suite: Any, junit: Path | None, json_out: Path | None) -> None:
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(suite.to_junit_xml(), encoding="utf-8")
    if json_out is not None:
        text = json.dumps(suite.to_dict(), indent=2, default=str)
        if json_out == Path("-"):
            typer.echo(text)
        else:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(text + "\n", encoding="utf-8")


@contextlib.contextmanager
def _backend(start: bool) -> Any:
    if not start:
        yield None
        return
    from voxgate.channels.text import demo_backend_running

    with demo_backend_running() as server:
        yield server
