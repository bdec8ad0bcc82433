"""Every `paris` command the README and docs/ show exists, with every option it is shown with: the documentation
cannot drift from the command line (a renamed option fails here, not in a reader's terminal)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from paris.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:\.venv/bin/)?paris\s")


def shown_commands(text: str) -> list[str]:
    """The `paris ...` lines of the page's bash blocks (continuations joined) and its inline `paris ...` spans."""
    found, prose, fence, pending = [], [], None, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line.strip().removeprefix("```")
        elif fence == "bash":
            line = pending + line.strip()
            pending = line[:-1] + " " if line.endswith("\\") else ""
            if not pending and COMMAND.match(line):
                found.append(line)
        elif fence is None:
            prose.append(line)
    spans = re.findall(r"`([^`]+)`", "\n".join(prose))  # a span may wrap onto the next line
    return found + [" ".join(span.split()) for span in spans if COMMAND.match(span)]


def options_of(command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)} | {"--help"}


CASES = [(page.name, line) for page in PAGES for line in shown_commands(page.read_text())]


def test_the_pages_show_commands():
    assert len(CASES) >= 70  # the parser found the README's commands (81 when this was written)


@pytest.mark.parametrize("page, line", CASES)
def test_a_shown_command_and_its_options_exist(page, line):
    group = typer.main.get_command(app)
    words = shlex.split(line.split(" #")[0].replace("[", " ").replace("]", " "))[1:]
    name = words[0] if words and not words[0].startswith("-") else None
    command = group if name is None else group.commands.get(name)
    assert command is not None, f"{page}: `paris {name}` is no command ({line})"
    for word in words:
        option = word.split("=")[0]
        if option.startswith("-") and option != "-":
            assert option in options_of(command), f"{page}: `paris {name or ''}` has no option {option} ({line})"
