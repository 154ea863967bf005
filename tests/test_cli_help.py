"""`--help` of every command shows each option's default once, and one example.

.venv/bin/python -m pytest tests/test_cli_help.py
"""

from __future__ import annotations

import importlib
import re

import pytest

ARGPARSE = {  # command -> (module, argv before --help, options without a default: required ones)
    "data generate": ("rookworld_trl.data.commands", ["generate"], {"--out"}),
    "data load": ("rookworld_trl.data.commands", ["load"], set()),
    "data audit": ("rookworld_trl.data.commands", ["audit"], set()),
    "tokenizer train": ("rookworld_trl.data.tokenizer", ["train"], {"--data", "--out"}),
    "eval": ("rookworld_trl.stages.eval.evaluate", [], set()),
    "report": ("rookworld_trl.stages.eval.charts", [], set()),
    "parity": ("rookworld_trl.stages.eval.parity", [], set()),
}


def help_text(module: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def option_blocks(text: str) -> dict[str, str]:
    """--option -> its help (the option's line and the indented lines under it)."""
    body = text.split("options:\n", 1)[1].split("\n\n", 1)[0]
    blocks = re.split(r"\n(?=  -)", body)
    return {block.split()[0].rstrip(","): " ".join(block.split()) for block in blocks}


@pytest.mark.parametrize("command", ARGPARSE)
def test_every_option_shows_its_default_once_and_there_is_an_example(command, capsys):
    module, argv, required = ARGPARSE[command]
    text = help_text(module, argv, capsys)
    assert "example: rookworld " + command.split()[0] in " ".join(text.split())
    for option, block in option_blocks(text).items():
        if option == "-h":
            continue
        expected = 0 if option in required else 1
        assert block.count("(default:") == expected and block.count("default") == expected, block


@pytest.mark.parametrize(
    "command, module", [("train", "rookworld_trl.stages.grpo"), ("sft", "rookworld_trl.stages.sft")]
)
def test_training_commands_show_defaults_and_an_example(command, module, capsys):
    text = " ".join(help_text(module, [], capsys).split())
    assert f"example: rookworld {command} --config recipes/" in text
    assert re.search(r"--fen_width FEN_WIDTH, --fen-width FEN_WIDTH [^-]*\(default: None\)", text)
