"""Every command's --help as a new user reads it in an 80-column terminal (issue #28): examples, whole option names,
flags without a value placeholder, text in brackets kept, descriptions re-flowed to the width."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from sliq_cli.cli.app import app


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer may bring its own click)
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


COMMANDS = dict(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_has_examples_and_fits_80_columns(path):
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.output
    examples = text[text.index("Examples:"):text.index("Options:")]
    assert f"sliq {' '.join(path)} " in examples
    assert max(map(len, text.splitlines())) <= 80
    assert "<bool>" not in text and "…" not in text
    for param in COMMANDS[path].params:
        if getattr(param, "hidden", False):  # a former spelling kept working, deliberately not listed
            continue
        for opt in (*param.opts, *param.secondary_opts):
            if opt.startswith("--"):
                assert opt in text, f"{opt} is not shown whole"
        if getattr(param, "is_flag", False):
            line = next(line for line in text.splitlines() if param.opts[-1] in line)
            assert "<" not in line.split(param.opts[-1])[1][:3], f"{param.opts[-1]} shows a value placeholder"


def test_brackets_in_help_are_kept():
    text = CliRunner().invoke(app, ["pretrain", "--help"], terminal_width=80).output
    assert "[imagenet] extra" in " ".join(text.split())


def test_a_value_after_a_flag_is_explained(tmp_path, example_photos):
    """`--sort true` reads `true` as a PATH (flags take no value); the error says so instead of only 'no such file'."""
    result = CliRunner().invoke(app, ["score", str(example_photos[0]), "--sort", "true"])
    assert result.exit_code == 2
    assert "no such file or folder: true" in result.output and "takes no value" in result.output


def test_the_top_level_help_has_examples():
    text = CliRunner().invoke(app, ["--help"], terminal_width=80).output
    assert "Examples:" in text and "  sliq score examples/" in text and max(map(len, text.splitlines())) <= 80
