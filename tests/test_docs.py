"""The README and docs/ keep their promises: links resolve, commands exist as printed, the README stays short.

A newcomer follows links and types commands. Every relative link in README.md and docs/*.md must
point at a file that exists (and, with `#anchor`, at a heading in it, slugged as GitHub does);
every `voxgate …` command shown must name real commands and options of the CLI; every
`make TARGET`, `python bench/FILE.py` and `python -m MODULE` must exist. The release walkthrough
itself is executed by tests/test_readme_release.py.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import typer

from voxgate.bundle.models import Messages
from voxgate.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_WORDS = 2600
# documents the README is expected to link (the reference material that left it)
REFERENCE_DOCS = ("agents.md", "voice.md", "governance.md", "operations.md", "api.md", "architecture.md")

FENCE_RE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
INLINE_CODE_RE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
LINK_RE = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
SHELL_LANGS = {"sh", "bash", "shell", "console"}
SEPARATORS_RE = re.compile(r"\s(?:&&|\|\||;|\|)\s")
ASSIGNMENT_RE = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def rel(path: Path) -> str:
    """A page's path as a reader sees it, for messages."""
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text with fenced code blocks blanked out (links and headings inside them are not real)."""
    return FENCE_RE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text, lowercased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page offers: its headings' slugs (repeats numbered, as GitHub does)."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING_RE.finditer(prose(path.read_text("utf-8"))):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> Iterator[str]:
    """Every link target in a page's prose."""
    for match in LINK_RE.finditer(prose(path.read_text("utf-8"))):
        yield match.group(1) or match.group(2)


def test_github_slug_matches_githubs_rules() -> None:
    assert github_slug("One call, stage by stage") == "one-call-stage-by-stage"
    assert github_slug("Signed, content-addressed bundles") == "signed-content-addressed-bundles"
    assert github_slug("Usage, capacity and quotas") == "usage-capacity-and-quotas"
    assert github_slug("The `voxgate` CLI: *reference*") == "the-voxgate-cli-reference"
    assert github_slug("A five-minute tour") == "a-five-minute-tour"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading '#{anchor}' in {rel(file)}")
    assert not broken, f"{rel(page)}:\n  " + "\n  ".join(broken)


def test_the_link_checker_catches_a_broken_anchor_and_file(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Real one\n\n[ok](#real-one) [bad](#missing) [gone](nothing.md)\n")
    assert "real-one" in anchors(page) and "missing" not in anchors(page)
    assert list(links(page)) == ["#real-one", "#missing", "nothing.md"]


def test_the_readme_stays_short_and_links_the_reference_docs() -> None:
    text = README.read_text("utf-8")
    words = len(text.split())
    assert words < README_MAX_WORDS, f"README.md has {words} words; move reference material to docs/"
    linked = {Path(t.partition("#")[0]).name for t in links(README) if t.startswith("docs/")}
    assert set(REFERENCE_DOCS) <= linked, f"README.md does not link {sorted(set(REFERENCE_DOCS) - linked)}"
    first_screen = text[: text.index("\n## ")]
    assert "make demo" in first_screen and "make test" in first_screen


# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """A command as a page shows it."""

    page: Path
    line: str


def shown_commands() -> list[Shown]:
    """Every command line in shell blocks, and every inline code span that is a command."""
    found = []
    for page in PAGES:
        text = page.read_text("utf-8")
        for match in FENCE_RE.finditer(text):
            if match.group(1) in SHELL_LANGS:
                joined = match.group(2).replace("\\\n", " ")
                found += [Shown(page, line) for line in joined.splitlines() if line.strip()]
        for match in INLINE_CODE_RE.finditer(prose(text)):
            span = match.group(1).replace("\n", " ").replace("\\|", "|")
            found.append(Shown(page, span))
    return found


def pieces(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line, as words (comments, brackets around options and
    redirections dropped); an inline span that is not a command yields nothing."""
    for part in SEPARATORS_RE.split(line):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            continue  # prose in backticks, not a command
        words = [w.strip("[]") for w in words]
        while words and ASSIGNMENT_RE.match(words[0]):
            words.pop(0)
        if words:
            yield words


class Command(Protocol):
    """What the checker reads of a click command (Typer ships its own copy of click)."""

    name: str | None
    params: list[Any]


def cli() -> Command:
    """The CLI's command tree, as Typer builds it."""
    command: Command = typer.main.get_command(app)
    assert is_group(command)
    return command


def is_group(command: Command) -> bool:
    """Whether a command has subcommands."""
    return isinstance(getattr(command, "commands", None), dict)


def options_of(command: Command) -> set[str]:
    """Every option name a command takes (both halves of a --flag/--no-flag pair, and --help)."""
    names = {"--help"}
    for param in command.params:
        if param.param_type_name == "option":
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def check_voxgate(words: list[str], root: Command) -> list[str]:
    """What is wrong with one `voxgate …` command: unknown commands or options."""
    commands = [root]
    rest = words[1:]
    while rest and all(is_group(c) for c in commands) and not rest[0].startswith("-"):
        names = rest.pop(0).split("|")
        if any(name.isupper() for name in names):
            return []  # a placeholder ("`voxgate COMMAND --help`")
        found = []
        for group in commands:
            for name in names:
                subcommands: dict[str, Command] = getattr(group, "commands", {})
                sub = subcommands.get(name)
                if sub is None:
                    return [f"no command '{name}' under '{group.name}'"]
                found.append(sub)
        commands = found
    if any(is_group(c) for c in commands) and not rest:
        return []  # a group named in prose ("`voxgate release`")
    problems = []
    known = set().union(*(options_of(c) for c in commands))
    for word in rest:
        if word.startswith("--") and word != "--":
            name = word.split("=", 1)[0]
            if name not in known:
                problems.append(f"unknown option {name} for '{' '.join(words[:2])}…'")
    return problems


MAKE_TARGET_RE = re.compile(r"^([a-zA-Z][\w-]*):", re.M)


def check_other(words: list[str]) -> list[str]:
    """What is wrong with a `make`, `python bench/…` or `python -m …` command."""
    if words[0] == "make":
        targets = set(MAKE_TARGET_RE.findall((ROOT / "Makefile").read_text("utf-8")))
        return [f"no make target '{w}'" for w in words[1:] if "=" not in w and w not in targets]
    if words[0] == "python" and len(words) > 1:
        if words[1].startswith("bench/") and not (ROOT / words[1]).is_file():
            return [f"no file {words[1]}"]
        if words[1] == "-m" and len(words) > 2 and importlib.util.find_spec(words[2]) is None:
            return [f"no module {words[2]}"]
    return []


def test_every_command_shown_exists_as_printed() -> None:
    root = cli()
    problems = []
    checked = 0
    for shown in shown_commands():
        for words in pieces(shown.line):
            program = Path(words[0]).name
            if program == "voxgate" and len(words) > 1:
                wrong = check_voxgate(words, root)
                checked += 1
            elif program in ("make", "python"):
                wrong = check_other(words)
                checked += 1
            else:
                continue
            problems += [f"{rel(shown.page)}: `{shown.line.strip()}`: {w}" for w in wrong]
    assert checked > 100, f"only {checked} commands found: the extraction is broken"
    assert not problems, "\n".join(problems)


def test_the_command_checker_catches_a_wrong_command_and_option() -> None:
    root = cli()
    assert check_voxgate(["voxgate", "release", "publish", "--env", "prod"], root) == []
    assert check_voxgate(["voxgate", "incidents", "list|ack|resolve"], root) == []
    assert check_voxgate(["voxgate", "release", "publsh"], root) == ["no command 'publsh' under 'release'"]
    assert check_voxgate(["voxgate", "chat", "--no-store", "--colour"], root) == [
        "unknown option --colour for 'voxgate chat…'"
    ]
    assert check_other(["make", "demo"]) == [] and check_other(["make", "deploy"]) == ["no make target 'deploy'"]
    assert check_other(["python", "bench/nothing.py"]) == ["no file bench/nothing.py"]
    assert list(pieces("VOXGATE_NEW_PASSWORD=x voxgate user create mia && voxgate user bind ID --role maker")) == [
        ["voxgate", "user", "create", "mia"],
        ["voxgate", "user", "bind", "ID", "--role", "maker"],
    ]


# --- the layer diagram --------------------------------------------------------------------------


def importlinter_contracts() -> list[dict[str, Any]]:
    """The import-linter contracts in pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert isinstance(contracts, list)
    return contracts


def test_the_layer_diagram_matches_the_import_linter_contracts() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    section = text[text.index("## Layers") :]
    diagram = FENCE_RE.search(section)
    assert diagram is not None, "docs/architecture.md has no layer diagram under ## Layers"
    rows = [line for line in diagram.group(2).splitlines() if line.strip()]
    contracts = importlinter_contracts()
    (layers,) = [c for c in contracts if c["type"] == "layers"]
    expected = layers["layers"]
    assert isinstance(expected, list)
    # a layer's row starts at the left edge with its name; the header, the rule and continuations do not
    drawn = [re.split(r"\s{2,}", row)[0] for row in rows[2:] if not row.startswith(" ")]
    assert drawn == expected, "the diagram's layers are not the import-linter layers, top to bottom"
    for contract in contracts:
        if contract["type"] == "forbidden":
            row = next((line for line in section.splitlines() if line.startswith(f"| `{contract['id']}` |")), None)
            assert row is not None, f"contract {contract['id']} is not in the table"
            for module in [*contract["source_modules"], *contract["forbidden_modules"]]:
                short = str(module).removeprefix("voxgate.").split(".")[-1]
                assert short in row, f"contract {contract['id']}: {module} is not in its row"


def test_the_messages_table_lists_every_message_with_its_default() -> None:
    text = (ROOT / "docs" / "agents.md").read_text("utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}
    for name, field in Messages.model_fields.items():
        assert name in rows, f"docs/agents.md: message '{name}' is not in the table"
        assert f'"{field.default}"' in rows[name], f"docs/agents.md: '{name}' does not show its default"


FILE_SPAN_RE = re.compile(r"^(?:[\w.-]+/)+[\w.*-]+\.(?:py|md|yaml|json|cedar|cedarschema|html|js|css|png|sh)$")
# where a path in backticks may be relative to: the checkout, the package, the console's static
# files, or an agent directory (the demo agent stands for any)
FILE_ROOTS = (
    ROOT,
    ROOT / "src" / "voxgate",
    ROOT / "src" / "voxgate" / "console" / "static",
    ROOT / "examples" / "harbor-telecom" / "agents" / "harbor-support",
)
RUNTIME_PREFIXES = ("var/",)  # made by the demo or a worker at run time


def test_every_file_named_in_backticks_exists() -> None:
    missing = []
    for page in PAGES:
        for match in INLINE_CODE_RE.finditer(prose(page.read_text("utf-8"))):
            span = match.group(1).strip()
            if not FILE_SPAN_RE.match(span) or span.startswith(RUNTIME_PREFIXES):
                continue
            if not any(any(base.glob(span)) for base in FILE_ROOTS):
                missing.append(f"{rel(page)}: `{span}`")
    assert not missing, "files named in the docs that do not exist:\n" + "\n".join(missing)
