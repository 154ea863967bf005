"""The trainer as a Python library (issue 63): the exported surface, the embedded assets and recipes as paths, and
each mistake a TRL user makes from Python as one exception naming the field and the fix, raised when the config
or the trainer is built (not at step 1). The README's quickstart runs as written in the slow tier.

    pytest -q tests/test_python_api.py            # ~1-2 min on 2 cores
    pytest -q -m slow tests/test_python_api.py    # + the README quickstart, ~2 min
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from reward_fixtures import needs_stockfish

import rookworld_trl
from rookworld_trl import assets
from rookworld_trl.common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"

# what `from rookworld_trl import ...` offers; docs/GUIDE.md ("From Python") lists the same names
SURFACE = {
    "__version__", "assets", "RookWorldGRPOTrainer", "RookWorldGRPOConfig", "RookWorldSFTTrainer",
    "RookWorldSFTConfig", "policy_reward", "env_reward", "make_policy_reward", "make_env_reward",
    "get_reward_funcs", "load_rookworld_dataset", "load_model_and_tokenizer", "generate_completions",
    "policy_prompt", "env_prompt", "EnginePool", "evaluate", "EvalSettings", "EvalResult", "UserError",
}  # fmt: skip


def one_line(e: pytest.ExceptionInfo) -> str:
    """The exception's message, checked to be one line with no chained traceback behind it."""
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__), (
        message
    )
    return message


# ---------------------------------------------------------------------------------------- the surface


def test_exported_surface_is_all_and_each_name_loads():
    assert set(rookworld_trl.__all__) == SURFACE
    for name in rookworld_trl.__all__:
        assert getattr(rookworld_trl, name) is not None, name
    assert set(SURFACE) <= set(dir(rookworld_trl))
    guide = (ROOT / "docs" / "GUIDE.md").read_text()
    assert not [n for n in SURFACE if f"`{n}`" not in guide]  # the docs list every exported name
    with pytest.raises(AttributeError, match="no attribute 'RookWorldTrainer'"):
        rookworld_trl.RookWorldTrainer  # noqa: B018


def test_ready_rewards_are_functions_trl_can_call():
    from rookworld_trl.grpo.rewards.functions import check_signature

    for func in (rookworld_trl.policy_reward, rookworld_trl.env_reward):
        check_signature(func.__name__, func)  # UserError if TRL could not call it
    prompt = rookworld_trl.env_prompt(START, "e2e4", ["e2e4"])
    truth = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0"
    assert rookworld_trl.env_reward(prompts=[prompt], completions=[truth]) == [1.0]


def test_import_is_light_and_typed():
    code = "import sys, rookworld_trl; print(sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert (ROOT / "rookworld_trl" / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"py.typed"' in pyproject  # package-data: it ships in the wheel


# ------------------------------------------------------------------------------- assets and recipes


def test_assets_are_paths_that_exist_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository
    for path in (assets.MODEL, assets.DATA, assets.TACTICS, assets.RECIPES):
        assert Path(path).is_absolute() and Path(path).is_dir(), path
    recipe = assets.recipe("grpo_tiny_cpu")
    assert Path(recipe).read_text() == (ROOT / "recipes" / "grpo_tiny_cpu.yaml").read_text()
    assert assets.recipe("recipes/grpo_tiny_cpu.yaml") == recipe  # the CLI's spelling, from any cwd


def test_from_recipe_gives_the_recipes_trainer_settings():
    from rookworld_trl import RookWorldGRPOConfig

    with open(ROOT / "recipes" / "grpo_tiny_cpu.yaml") as f:
        recipe = yaml.safe_load(f)
    args = RookWorldGRPOConfig.from_recipe("grpo_tiny_cpu", max_steps=3)
    own = {k: v for k, v in recipe.items() if hasattr(args, k) and k != "max_steps"}
    assert len(own) > 20  # most of the recipe is the trainer's
    assert {k: getattr(args, k) for k in own} == own
    assert args.max_steps == 3
    assert not hasattr(args, "dataset_name")  # the stage's fields stay the stage's


def test_sft_config_from_recipe():
    from rookworld_trl import RookWorldSFTConfig

    with open(ROOT / "recipes" / "sft_embedded_cpu.yaml") as f:
        recipe = yaml.safe_load(f)
    args = RookWorldSFTConfig.from_recipe("sft_embedded_cpu", max_steps=2)
    assert args.max_steps == 2 and args.learning_rate == float(recipe["learning_rate"])


def test_misspelt_config_field_says_did_you_mean():
    from rookworld_trl import RookWorldGRPOConfig, RookWorldSFTConfig

    with pytest.raises(TypeError) as e:
        RookWorldGRPOConfig(learnin_rate=1e-4)
    assert "unknown field 'learnin_rate' (did you mean learning_rate?)" in one_line(e)
    with pytest.raises(TypeError) as e:
        RookWorldGRPOConfig.from_recipe("grpo_tiny_cpu", max_step=5)
    assert "unknown field 'max_step' (did you mean max_steps?)" in one_line(e)
    with pytest.raises(TypeError, match="did you mean max_steps"):
        RookWorldSFTConfig(max_stesp=5)
    with pytest.raises(UserError) as e:
        RookWorldGRPOConfig.from_recipe("grpo_tiny")
    assert "recipe not found: 'grpo_tiny' (did you mean grpo_tiny_cpu?)" in one_line(e)


def test_stage_module_resolves_recipes_from_any_cwd(tmp_path):
    """`python -m rookworld_trl.stages.grpo --config recipes/...` outside the repository reads the bundled
    recipe (it then stops at the bad max_steps, before anything loads)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "rookworld_trl.stages.grpo", "--config", "recipes/grpo_tiny_cpu.yaml", "--max_steps", "0"]  # fmt: skip
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "max_steps must be a positive number" in run.stderr and "recipe" not in run.stderr.lower()


# ------------------------------------------------------------------------------- the trainer's checks


def config(tmp_path, **overrides):
    from rookworld_trl import RookWorldGRPOConfig

    kwargs = dict(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, num_generations=8,
        max_completion_length=80, use_cpu=True, bf16=False, report_to=[], save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    return RookWorldGRPOConfig(**(kwargs | overrides))


@pytest.fixture(scope="module")
def prompts():
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [rookworld_trl.policy_prompt(START)] * 8})


def build(tmp_path, dataset, rewards, args=None, model=None):
    from rookworld_trl import RookWorldGRPOTrainer

    return RookWorldGRPOTrainer(
        model=model or assets.MODEL,
        reward_funcs=rewards,
        args=args or config(tmp_path),
        train_dataset=dataset,
    )


def no_kwargs(prompts, completions):
    return [0.0] * len(prompts)


CASES = {  # name: (build args, what the one line must say)
    "field credit without the policy reward": (
        lambda t, ds: build(t, ds, [rookworld_trl.env_reward], config(t, field_credit=True)),
        "field_credit: true needs policy_reward among reward_funcs",
    ),
    "a reward without **kwargs": (
        lambda t, ds: build(t, ds, [no_kwargs]),
        "define it as `def no_kwargs(prompts, completions, **kwargs)`",
    ),
    "a misspelt reward name": (
        lambda t, ds: build(t, ds, ["policy_rewad", "env_reward"]),
        "unknown reward function 'policy_rewad' (did you mean policy_reward?)",
    ),
    "a built-in reward of another shaping": (
        lambda t, ds: build(
            t, ds, [rookworld_trl.make_env_reward(shaping="linear")], config(t, reward_shaping="dense")
        ),
        "build it with make_env_reward(shaping='dense')",
    ),
    "a model path typo": (
        lambda t, ds: build(t, ds, [rookworld_trl.env_reward], model=assets.MODEL + "l"),
        "does not exist",
    ),
    "a dataset without prompts": (
        lambda t, ds: build(t, ds.rename_column("prompt", "question"), [rookworld_trl.env_reward]),
        "train_dataset has the columns ['question'] but no `prompt`",
    ),
    "a weight per reward": (
        lambda t, ds: build(t, ds, [rookworld_trl.env_reward], config(t, reward_weights=[1.0, 0.5])),
        "reward_weights has 2 entries for 1 reward_funcs",
    ),
    "a config that is no config": (
        lambda t, ds: build(t, ds, [rookworld_trl.env_reward], args={"learning_rate": 1e-4}),
        "args must be a RookWorldGRPOConfig (or a trl.GRPOConfig), got dict",
    ),
}


@needs_stockfish
@pytest.mark.parametrize("case", list(CASES))
def test_trainer_mistake_is_one_exception_naming_the_fix(case, prompts, tmp_path):
    make, expected = CASES[case]
    with pytest.raises(UserError) as e:
        make(tmp_path, prompts)
    assert expected in one_line(e)


def test_completion_budget_that_cuts_the_answers(tmp_path):
    """The stage's minimum (grpo/config.check_completion_length), raised when it cuts most reference answers."""
    from rookworld_trl import load_rookworld_dataset

    rows = load_rookworld_dataset(assets.DATA, max_samples=64)
    with pytest.raises(UserError) as e:
        build(tmp_path, rows, [rookworld_trl.env_reward], config(tmp_path, max_completion_length=16))
    message = one_line(e)
    longest = int(re.search(r"raise it to at least (\d+)", message)[1])
    assert longest > 16 and "max_completion_length=16 cuts" in message
    build(tmp_path, rows, [rookworld_trl.env_reward], config(tmp_path, max_completion_length=longest))


@needs_stockfish
def test_trl_shapes_are_accepted(tmp_path):
    """Reward names as strings, a plain trl.GRPOConfig and a `text`-only dataset: converted, not refused."""
    from datasets import Dataset
    from trl import GRPOConfig

    from rookworld_trl import RookWorldGRPOConfig, load_rookworld_dataset

    lines = load_rookworld_dataset(assets.DATA, max_samples=16)["text"]
    plain = GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, num_generations=8, use_cpu=True,
        bf16=False, report_to=[], learning_rate=3e-5,
    )  # fmt: skip
    trainer = build(tmp_path, Dataset.from_dict({"text": lines}), ["policy_reward", "env_reward"], plain)
    assert isinstance(trainer.args, RookWorldGRPOConfig) and trainer.args.learning_rate == 3e-5
    assert trainer.args.disable_dropout and not trainer.args.activation_checkpointing  # our defaults
    assert [f.__name__ for f in trainer.reward_funcs] == ["policy_reward", "env_reward"]
    assert trainer.reward_funcs[0].shaping == trainer.args.reward_shaping  # the ready one took the config's
    assert {"prompt", "completion", "task"} <= set(trainer.train_dataset.column_names)
    assert trainer.train_dataset["prompt"][0] + trainer.train_dataset["completion"][0] == lines[0]


# ---------------------------------------------------------------------------------- evaluate and the card


@needs_stockfish
def test_evaluate_defaults_to_the_embedded_data_and_returns_figures(tmp_path):
    from rookworld_trl import evaluate

    result = evaluate(assets.MODEL, suites="policy", policy_samples=16, out=str(tmp_path))
    written = json.loads(Path(result["json"]).read_text())
    assert written["settings"]["data"].endswith("assets/data")  # `rookworld eval`'s default
    legal = result.value("policy", "greedy/legal_best_move")
    assert legal == written["suites"]["policy"]["greedy/legal_best_move"]["model"]["value"]
    assert 0.0 <= legal <= 1.0 and "greedy/legal_best_move" in str(result)


def test_model_card_snippet_runs_with_transformers(tmp_path):
    """The card in final/ says how to prompt the model; its snippet, run as written, answers in the P: format."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    from rookworld_trl.model.loading import FEN_WIDTH_KEY
    from rookworld_trl.training.publish import model_card

    (tmp_path / "final").symlink_to(assets.MODEL)
    width = getattr(AutoConfig.from_pretrained(assets.MODEL), FEN_WIDTH_KEY)
    args = SimpleNamespace(output_dir=str(tmp_path))
    card = str(
        model_card(args, 5, assets.MODEL, None, SimpleNamespace(fen_width=width, dataset_name=assets.DATA))
    )
    assert f"fen.ljust({width})" in card
    snippet = re.search(r"## Usage.*?```python\n(.*?)```", card, re.S)[1]
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert re.match(r" \S+.* E: .* B: [a-h][1-8][a-h][1-8]", run.stdout), run.stdout


# -------------------------------------------------------------------------------------- the quickstart


def readme_quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(r"From Python, .*?```python\n(.*?)```", readme, re.S)[1]


def test_readme_quickstart_is_short():
    assert len(readme_quickstart().strip().splitlines()) < 20


@pytest.mark.slow
@needs_stockfish
def test_readme_quickstart_runs_as_written(tmp_path):
    """The README's Python block, unchanged, in a folder outside the repository (~1.5 min on 2 cores)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", readme_quickstart()], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "runs" / "quickstart" / "final" / "model.safetensors").is_file()
    assert "greedy/legal_best_move" in run.stdout and (tmp_path / "eval_results" / "eval.json").is_file()
