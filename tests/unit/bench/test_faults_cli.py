"""``snapshoe bench drop --faults``: a schedule that cannot run is refused before anything
starts (no platform, no store), saying why; ``--faults`` with ``--compare`` too. The run itself
is tests/e2e/test_bench_faults.py."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from snapshoe.cli import app


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--faults", "1:explode"], "unknown action"),
        (["--faults", "1:kill:gateway"], "gateway is not a target"),
        (["--faults", ""], "empty schedule"),
        (["--faults", "small", "--compare"], "no --compare"),
        (["--faults", "small", "--pairs", "2", "--sizes", "3"], "pairs must be at least sizes"),
    ],
)
def test_a_fault_run_that_cannot_run_is_refused_up_front(args: list[str], why: str) -> None:
    result = CliRunner().invoke(app, ["bench", "drop", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    # The message as words, without the box rich draws around it.
    assert why in " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def test_the_drop_command_documents_the_option() -> None:
    result = CliRunner().invoke(app, ["bench", "drop", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--faults" in result.output
    assert "--trickle" in result.output
