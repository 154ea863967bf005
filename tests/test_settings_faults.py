"""Nonsense settings, hostile recipes, damaged models and metrics, unwritable outputs: each refused in one line
before any work, with the value echoed at a readable length.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_settings_faults.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from fault_cli import one_line, run

from rookworld_trl import assets


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--temperature", "0"], "temperature must be > 0"),
        (["--temperature", "-1"], "temperature must be > 0"),
        (["--learning_rate", "inf"], "learning_rate must be a finite number"),
        (["--beta", "nan"], "beta must be a finite number"),
        (["--trust_remote_code", "true"], "trust_remote_code is refused"),
        (["--output_dir", ""], "output_dir is empty"),
    ],
)
def test_nonsense_settings_are_refused_before_launch(tmp_path, argv, says):
    argv = argv if "--output_dir" in argv else [*argv, "--output_dir", str(tmp_path / "run")]
    done = run("train", *argv, cwd=tmp_path)
    one_line(done, "rookworld train: error:", says)
    assert "accelerate.commands.launch" not in done.stdout and not (tmp_path / "run").exists()


def bomb(levels: int) -> str:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text + f"learning_rate: *a{levels - 1}\n"


BINARY = (
    bytes(range(256)) * 2
)  # not UTF-8; fixed, not random: every pytest-xdist worker must collect the same tests


@pytest.mark.parametrize(
    ("content", "command", "says"),
    [
        (BINARY, ["train"], "is not UTF-8 text"),
        ("learning_rate: 1e-5\nmodel_name_or_path: caf\xe9\n".encode("latin-1"), ["sft"], "not UTF-8 text"),
        (
            "learning_rate: 1e-5\nmodel_name_or_path: caf\xe9\n".encode("latin-1"),
            ["train", "--help"],
            "not UTF-8",
        ),
        (bomb(9).encode(), ["train"], "aliases (*name) expand to more than"),
        (b"a" * (2 << 20), ["train"], "is 2.1 MB; a recipe is a few kB"),
    ],
    ids=["binary", "latin-1-sft", "latin-1-help", "alias-bomb", "huge"],
)
def test_hostile_recipes_are_one_line(tmp_path, content, command, says):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content)
    started = time.monotonic()
    done = run(*command[:1], "--config", str(recipe), *command[1:], cwd=tmp_path)
    one_line(done, f"rookworld {command[0]}: error:", says)
    assert time.monotonic() - started < 60


def test_an_echoed_value_is_cut_to_a_readable_length(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: [" + ", ".join(["1"] * 5000) + "]\n")
    line = one_line(
        run("train", "--config", str(recipe), cwd=tmp_path), "rookworld train: error:", "more characters"
    )
    assert len(line) < 400


def damaged_model(tmp_path: Path, how: str) -> str:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / how
    shutil.copytree(assets.MODEL, model)
    if how == "nan":
        weights = {
            k: torch.full_like(v, float("nan")) for k, v in load_file(model / "model.safetensors").items()
        }
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    elif how == "pickle_only":
        (model / "model.safetensors").unlink()
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04not unpickled")
    elif how == "list_config":
        (model / "config.json").write_text("[1, 2]")
    elif how == "huge_config":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "n_layer": 100_000}))
    return str(model)


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("nan", "hold NaN or Inf values"),
        ("pickle_only", "only as pytorch_model.bin, a pickle, which is not loaded"),
        ("list_config", "holds a JSON list, not an object"),
        ("huge_config", "describes a model of ~"),
    ],
)
def test_damaged_or_hostile_models_are_one_line(tmp_path, how, says):
    from rookworld_trl.model.loading import load_model_and_tokenizer
    from rookworld_trl.model.source import ModelLoadError

    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=says.replace("(", r"\(").replace("~", "~")):
        load_model_and_tokenizer(damaged_model(tmp_path, how))
    assert time.monotonic() - started < 30


def test_report_on_hostile_metrics_says_what_it_dropped(tmp_path, capsys):
    from rookworld_trl.stages.eval.charts import report

    (tmp_path / "metrics.jsonl").write_text(
        '[1, 2]\n"x"\n{"step": "one", "loss": 0.5}\n{"step": 1, "loss": NaN, "reward": 1e308}\n'
        '{"step": 2, "loss": 0.4, "reward": -1e308}\n{"step": 3, "loss": 0.3, "reward": 0.5}\n'
    )
    written = report(str(tmp_path))
    assert os.path.isfile(written["summary"])
    assert "dropped 3 unreadable line(s) (line 1, 2, 3" in capsys.readouterr().err


def test_eval_out_in_a_place_that_cannot_be_written_is_refused_first(tmp_path):
    from rookworld_trl.stages.eval.evaluate import check_out_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_out_dir(str(blocker))
    with pytest.raises(ValueError, match="cannot write in"):
        check_out_dir(str(blocker / "below"))
