"""One flag style: help and docs show `--max_lines` (TRL's underscores) and every `rookworld` command takes
`--max-lines` as well (rookworld_trl/common/flags.py).

    .venv/bin/pytest tests/test_flags.py
"""

from __future__ import annotations

import re

import pytest

from rookworld_trl.data.commands import parser as data_parser
from rookworld_trl.stages.eval.evaluate import parse_args as eval_args
from rookworld_trl.stages.launch import launch

AUDIT = ["audit", "f.txt", "--max_lines", "5", "--eval_tolerance", "0.5", "--no-progress"]
GENERATE = [
    "generate",
    "--out",
    "o",
    "--pgn_games",
    "3",
    "--random_move_prob",
    "0.1",
    "--test_fraction",
    "0.2",
]


@pytest.mark.parametrize("argv", [AUDIT, GENERATE], ids=["audit", "generate"])
def test_data_flags_read_alike_in_both_spellings(argv):
    hyphens = [a.replace("_", "-") if a.startswith("--") else a for a in argv]
    assert hyphens != argv and vars(data_parser().parse_args(hyphens)) == vars(data_parser().parse_args(argv))


def test_eval_flags_read_alike_in_both_spellings():
    argv = ["model", "--policy_samples", "7", "--fen_width", "90"]
    assert eval_args([a.replace("_", "-") for a in argv]) == eval_args(argv)


@pytest.mark.parametrize("command", ["generate", "load", "audit"])
def test_help_shows_one_style(command, capsys):
    with pytest.raises(SystemExit):
        data_parser().parse_args([command, "--help"])
    flags = set(re.findall(r"--[a-z][a-z0-9_-]*", capsys.readouterr().out))
    assert flags and not {f for f in flags if "-" in f[2:] and f != "--no-progress"}, (
        flags
    )  # argparse's own --no-x


def test_the_launcher_reads_its_own_flags_in_both_spellings(capsys):
    with pytest.raises(SystemExit) as stop:
        launch("rookworld_trl.stages.grpo", ["--accelerate-config"], None)
    assert stop.value.code == 2 and "--accelerate_config needs a path" in capsys.readouterr().err
