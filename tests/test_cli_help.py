"""`--help` reads as prose at any terminal width: paragraphs rewrapped, nothing eaten by markup."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from leadscore.cli import app

COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback is not None]


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_the_terminal_and_keeps_its_words(command: str, width: int) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": str(width), "TERM": "dumb"})

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= width
    assert any("Options" in line for line in lines)


def test_a_paragraph_is_rewrapped_not_cut_at_the_docstring_s_line_ends() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "120", "TERM": "dumb"})

    # In the docstring "unless --allow-column keeps" ends a line; at 120 columns the sentence runs on.
    assert "left out unless --allow-column keeps them." in result.output


def test_placeholders_in_angle_brackets_are_not_taken_for_markup() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})

    assert "BENTOML_HOME=STATE_FOLDER/bentoml/HOST-PORT" in result.output
