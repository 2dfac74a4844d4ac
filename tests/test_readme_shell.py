"""Every shell command the README and the docs pages (docs/**/*.md) print runs as printed in bash.

A command is each line of a ``bash``/``sh``/``shell`` block (comments and continuation
lines joined), and each ``$ `` line of a ``console`` or untagged block. Each must split
cleanly (balanced quotes), must not hold an unquoted redirection (``chat.>`` makes bash
write a file named after the next word) or an unquoted glob (``sensors.*``), and each
``rxstreams`` command must be accepted by the real argument parser. A fence may be indented
(a block inside an admonition); its lines are read without that indentation.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from adapters.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
SHELL = {"bash", "sh", "shell"}
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
REDIRECTION = re.compile(r"^[0-9]*[<>]+&?[0-9]*$|^&>>?$")
GLOB = re.compile(r"[*?\[]")


def commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for each shell command in the markdown ``text``."""
    found: list[tuple[int, str]] = []
    lang: str | None = None
    indent = ""
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            lang = None if lang is not None else fence.group(2)
            indent = fence.group(1)
            continue
        if lang is None:
            continue
        line = line.removeprefix(indent)
        if lang in SHELL:
            command = line
        elif lang in ("console", "") and line.startswith("$ "):
            command = line[2:]
        else:
            continue
        if not pending:
            start = number
        if command.rstrip().endswith("\\"):
            pending += command.rstrip()[:-1] + " "
            continue
        command, pending = pending + command, ""
        if command.strip() and not command.lstrip().startswith("#"):
            found.append((start, command))
    return found


def problems(command: str) -> list[str]:
    """What would make ``command`` do something else in bash than it seems to say.

    >>> problems("rxstreams tail http://h/events/chat.>  # SSE")
    ["unquoted redirection '>'"]
    >>> problems("rxstreams tail 'http://h/events/chat.>' | jq -c .data")
    []
    >>> problems("rxstreams tail http://h/events/sensors.*")
    ["unquoted glob in 'http://h/events/sensors.*'"]
    >>> problems("echo 'unbalanced")
    ['does not parse: No closing quotation']
    """
    lexer = shlex.shlex(command, posix=False, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        return [f"does not parse: {exc}"]
    out = []
    for i, token in enumerate(tokens):
        if token.startswith(("'", '"')):
            continue
        if REDIRECTION.match(token):
            out.append(f"unquoted redirection {token!r}")
        elif token == "&" and i < len(tokens) - 1:
            out.append("unquoted '&' splits the command")
        elif GLOB.search(token):
            out.append(f"unquoted glob in {token!r}")
    return out


def argv(command: str) -> list[str]:
    """The words bash passes to the program (comments dropped, up to a pipe)."""
    words = shlex.split(command, comments=True)
    return words[: words.index("|")] if "|" in words else words


COMMANDS = [
    (f"{page.relative_to(ROOT)}:{n}", c) for page in PAGES for n, c in commands(page.read_text())
]


def test_the_docs_print_shell_commands() -> None:
    # The README alone printed 29 before the guide moved into docs/ (issue 14).
    assert len(COMMANDS) >= 29
    assert any(c.startswith("rxstreams tail") for _, c in COMMANDS)
    assert any(w.startswith("README.md") and c.startswith("make demo") for w, c in COMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_command_runs_as_printed_in_bash(where: str, command: str) -> None:
    assert problems(command) == [], f"{where}: {command}"


RXSTREAMS = [(w, c) for w, c in COMMANDS if c.startswith("rxstreams ")]


@pytest.mark.parametrize(("where", "command"), RXSTREAMS, ids=[w for w, _ in RXSTREAMS])
def test_each_rxstreams_command_is_accepted_by_the_cli(where: str, command: str) -> None:
    try:
        build_parser().parse_args(argv(command)[1:])
    except SystemExit as exc:
        pytest.fail(f"{where}: rxstreams refuses {command!r} (exit {exc.code})")


def test_the_check_catches_the_redirection_the_issue_found() -> None:
    text = "```console\n$ rxstreams tail http://127.0.0.1:8080/events/chat.> --format ndjson\n```\n"
    [(_, command)] = commands(text)
    assert problems(command) == ["unquoted redirection '>'"]


def test_a_fence_inside_an_admonition_is_read_without_its_indentation() -> None:
    text = "!!! note\n\n    ```console\n    $ rxstreams doctor\n    ```\n"
    assert commands(text) == [(4, "rxstreams doctor")]
