"""Every command's --help ends with examples, and every example parses: its flags exist and take
the values shown (checked with the real click parser, nothing is run)."""

from __future__ import annotations

import shlex

import pytest
import typer
from typer.testing import CliRunner

from stenod.cli.compat import rewrite_transcribe_args
from stenod.cli.examples import EXAMPLES
from stenod.cli.main import app
from stenod.cli.transcribe import EXAMPLES as TRANSCRIBE_EXAMPLES

COMMANDS = sorted({*EXAMPLES, "transcribe"})


def _example_lines(name: str) -> list[str]:
    if name == "transcribe":
        return [line.strip() for line in TRANSCRIBE_EXAMPLES.splitlines() if "stenod transcribe" in line]
    return EXAMPLES[name]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_examples(name: str) -> None:
    result = CliRunner().invoke(app, [*name.split(), "-h"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_examples_parse(name: str) -> None:
    root = typer.main.get_command(app)
    for line in _example_lines(name):
        command = line.split("#", 1)[0]
        if "|" in command:  # a shell pipe: keep the stenod part
            command = next(part for part in command.split("|") if "stenod " in part)
        if ">" in command:
            command = command.split(">", 1)[0]
        words = shlex.split(command)
        words = words[words.index("stenod") + 1:]
        words = rewrite_transcribe_args(words, lambda _: None)
        command_obj = root
        while words and words[0] in getattr(command_obj, "commands", {}):
            command_obj = command_obj.commands[words.pop(0)]  # type: ignore[attr-defined]
        assert not hasattr(command_obj, "commands"), line  # ended on a command, not a group
        command_obj.make_context(command_obj.name or "stenod", list(words), resilient_parsing=False)
