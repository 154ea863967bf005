"""The checks `rookworld train` / `sft` run before accelerate starts (rookworld_trl/stages/preflight.py): each bad input is
one line and exit 2 from the `rookworld` process itself (accelerate never starts: no launch line), and every
shipped recipe passes them. The fields it checks are the stages' dataclasses'."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rookworld_trl.stages import preflight
from rookworld_trl.stages import recipe as stage_recipe

ROOT = Path(__file__).resolve().parent.parent
GOOD = (
    "P: " + "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1".ljust(90) + "M: e7e5 E: 0.1 B: e7e5"
)


def rookworld(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rookworld_trl.stages.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its one line must say)."""
    txt, jsonl, notjson, yaml_bad = (
        tmp / "bad.txt",
        tmp / "bad.jsonl",
        tmp / "notjson.jsonl",
        tmp / "bad.yaml",
    )
    txt.write_text(f"{GOOD}\n\nP: garbage\n")
    jsonl.write_text(
        json.dumps({"text": GOOD}) + "\n" + json.dumps({"prompt": "P: x", "completion": " y"}) + "\n"
    )
    notjson.write_text(json.dumps({"text": GOOD}) + "\n{oops\n")
    yaml_bad.write_text("max_steps: 5\nlearning_rate: [\n")
    (tmp / "empty.jsonl").write_text("\n")
    (tmp / "broken.parquet").write_bytes(b"PAR1 but cut short")
    (tmp / "rows.csv").write_text("fen,move\nx,e2e4\n")
    (tmp / "nothing").mkdir()
    return {
        "parquet": (tmp / "broken.parquet", f"{tmp / 'broken.parquet'}: not a Parquet file"),
        "csv": (tmp / "rows.csv", f"{tmp / 'rows.csv'}:1: "),
        "dir": (tmp / "nothing", f"{tmp / 'nothing'}: the directory holds no data files"),
        "missing": (tmp / "no.jsonl", f"no such file or directory: '{tmp / 'no.jsonl'}'"),
        "empty": (tmp / "empty.jsonl", f"{tmp / 'empty.jsonl'}: the file is empty"),
        "txt": (txt, f"{txt}:3: P: "),
        "jsonl": (jsonl, f"{jsonl}:2: P: "),
        "notjson": (notjson, f"{notjson}:2: not valid JSON"),
        "yaml": (yaml_bad, f"recipe {yaml_bad}: YAML syntax error at line 3"),
    }


@pytest.mark.integration  # a subprocess per case
@pytest.mark.parametrize(
    "argv, says",
    [
        (["--max_step", "5"], "unknown flag --max_step (did you mean --max_steps?)"),
        (["--max_steps", "0"], "max_steps must be a positive number"),
        (
            ["--learning_rate", "fast"],
            "--learning_rate must be a number, got 'fast'; e.g. --learning_rate 0.0001",
        ),
        (["--use_cpu", "maybe"], "use_cpu must be true or false"),
        (["--config", "no/such.yaml"], "recipe not found"),
        (["--dataset_name", "FILE:txt"], None),
        (["--dataset_name", "FILE:jsonl"], None),
        (["--dataset_name", "FILE:notjson"], None),
        (["--dataset_name", "FILE:empty"], None),
        (["--dataset_name", "FILE:parquet"], None),
        (["--dataset_name", "FILE:csv"], None),
        (["--dataset_name", "FILE:dir"], None),
        (["--dataset_name", "FILE:missing"], None),
        (["--config", "FILE:yaml"], None),
    ],
)
def test_bad_input_is_one_line_before_accelerate_starts(argv, says, tmp_path):
    files = bad_files(tmp_path)
    if argv[1].startswith("FILE:"):
        path, says = files[argv[1][5:]]
        argv = [argv[0], str(path)]
    result = rookworld("train", *argv, "--output_dir", str(tmp_path / "run"))  # not the checkout's runs/
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rookworld train: error: ") and says in lines[0], lines
    assert "accelerate" not in result.stdout  # the launcher never ran


def test_bad_lines_name_the_fix_and_can_be_skipped(tmp_path):
    path, _ = bad_files(tmp_path)["txt"]
    out = ["--output_dir", str(tmp_path / "run")]  # not the checkout's runs/, which a run may hold
    with pytest.raises(preflight.UserError, match="pass --skip_bad_rows"):
        preflight.preflight(
            "train", ["--config", str(ROOT / "recipes/grpo_tiny_cpu.yaml"), "--dataset_name", str(path), *out]
        )
    preflight.preflight("train", ["--dataset_name", str(path), "--skip_bad_rows", "true", *out])


def test_every_shipped_recipe_passes(tmp_path):
    """Their fields and numbers; the data and model are the embedded ones (some recipes read data a script makes
    first; the GPU recipes' model is on the hub)."""
    data = ["--dataset_name", str(ROOT / "rookworld_trl/assets/data")]  # and the model: no hub here
    data += ["--model_name_or_path", str(ROOT / "rookworld_trl/assets/model")]
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        command = "sft" if recipe.name.startswith("sft_") else "train"
        out = ["--output_dir", str(tmp_path / recipe.stem)]  # not the checkout's runs/, which a run may hold
        preflight.preflight(command, ["--config", str(recipe), *data, *out])


@pytest.mark.integration  # imports TRL
def test_the_preflight_reads_the_stages_dataclasses(tmp_path, monkeypatch):
    """fields_of reads the dataclasses in a child process once, then from the user's cache; an edited source is
    another key, so a new field is seen at once."""
    from rookworld_trl.stages.recipe import TRL_BOUNDS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    stages = stage_recipe.stage_fields()
    assert {command: stage_recipe.fields_of(command) for command in stages} == stages
    assert len(list(tmp_path.glob("rookworld_trl/fields-*.json"))) == 1  # read once, then cached
    every = {name for specs in stages.values() for name in specs}
    assert set(TRL_BOUNDS) <= every, "TRL_BOUNDS names a field no stage has"
    monkeypatch.setattr(stage_recipe, "PACKAGE", tmp_path)  # other sources: another key
    assert stage_recipe.cache_path() != next(tmp_path.glob("rookworld_trl/fields-*.json"))


def test_a_bound_declared_with_its_field_is_checked_by_the_preflight_and_the_stage(tmp_path):
    """engine_workers' bound is in GRPOScriptArguments.BOUNDS (grpo/config.py): the preflight and the stage's
    check_numbers read it from the dataclass; a misspelt bound or field name is refused when it is read."""
    import dataclasses
    from typing import ClassVar

    from rookworld_trl.stages.recipe import check_numbers

    with pytest.raises(
        preflight.UserError, match=r"^engine_workers must be >= 1, got 0: fix --engine_workers"
    ):
        preflight.preflight("train", ["--engine_workers", "0", "--output_dir", str(tmp_path / "run")])

    @dataclasses.dataclass
    class Section:
        BOUNDS: ClassVar[dict[str, str]] = {"workers": ">= 1", "ratio": "finite > 0 (a share)"}
        workers: int = 1
        ratio: float = 0.5

    check_numbers(Section())
    with pytest.raises(preflight.UserError, match=r"ratio must be > 0 \(a share\), got 0.0"):
        check_numbers(Section(ratio=0.0))
    with pytest.raises(preflight.UserError, match=r"workers must be >= 1, got 0"):
        check_numbers(Section(workers=0))
    for bounds in ({"workers": "=> 1"}, {"worker": ">= 1"}):
        misspelt = type("Misspelt", (Section,), {"BOUNDS": bounds})
        with pytest.raises(ValueError, match="Misspelt.BOUNDS"):
            stage_recipe.field_specs([dataclasses.dataclass(misspelt)])
