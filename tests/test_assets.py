"""The embedded default (rookworld_trl/assets): within the issue's size limits, loadable, honestly split."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from transformers import GPT2LMHeadModel

from rookworld_trl.chess.formats import parse_policy_completion, position_key, split_prompt_completion
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import load_model_and_tokenizer

ASSETS = Path(__file__).resolve().parents[1] / "rookworld_trl" / "assets"
MB = 1_000_000


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def splits():
    return {
        s: pq.read_table(ASSETS / "data" / f"{s}.parquet").to_pandas()
        for s in ("train", "validation", "test")
    }


def test_sizes_within_the_limits():
    assert size(ASSETS / "model") <= 20 * MB
    assert size(ASSETS / "data") <= 10 * MB


def test_model_is_stored_in_bf16_and_loads_as_fp32():
    # half the bytes in git (the build's `pack`); transformers reads config.json's dtype, so it trains in fp32
    weights = safe_open(ASSETS / "model" / "model.safetensors", "pt")
    assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}  # noqa: SIM118 (no dict)
    assert GPT2LMHeadModel.from_pretrained(ASSETS / "model").dtype == torch.float32


def test_model_loads_and_completes_held_out_prompts(splits):
    model, tokenizer = load_model_and_tokenizer(str(ASSETS / "model"))
    assert isinstance(model, GPT2LMHeadModel) and model.config.vocab_size == len(tokenizer)
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 5e6
    test = splits["test"]
    lines = list(test[test.task == "P"].text[:4]) + list(test[test.task == "A"].text[:4])
    for line in lines:  # the shipped tokenizer keeps the prompt/completion boundary
        prompt, completion = split_prompt_completion(line)
        assert (
            tokenizer(prompt)["input_ids"] + tokenizer(completion)["input_ids"]
            == tokenizer(line)["input_ids"]
        )
    prompts = [split_prompt_completion(line)[0] for line in lines[:4]]
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=80)
    assert all(parse_policy_completion(text).ok for text in completions)


def test_splits_hold_both_tasks_and_match_stats(splits):
    stats = json.loads((ASSETS / "data" / "stats.json").read_text())
    for name, frame in splits.items():
        assert {"P", "A"} == set(frame.task)
        assert stats["rows"][name] == frame.task.value_counts().to_dict()


def test_no_held_out_position_is_trained_on(splits):
    train = {position_key(fen) for fen in splits["train"].fen}
    for name in ("validation", "test"):
        assert not train & {position_key(fen) for fen in splits[name].fen}


def test_model_card_reports_the_shipped_eval():
    # the card's headline figures are the ones of the eval.json shipped beside the weights
    suites = json.loads((ASSETS / "model" / "eval.json").read_text())["suites"]
    card = (ASSETS / "README.md").read_text()
    for suite, name in [
        ("policy", "greedy/legal_best_move"),
        ("policy", "greedy/layout"),
        ("env", "reward_accuracy"),
    ]:
        value = suites[suite][name]["model"]["value"]
        assert f"{100 * value:.1f}%" in card, (suite, name)


def test_tactics_split_by_game_and_held_out_from_every_training_split():
    """The embedded tactics (rookworld data generate --tactics): small, every row a tactic of its kind's label,
    and no test position among the tactics train rows or the embedded data's train rows (the main job trains
    on both)."""
    tactics = ASSETS / "tactics"
    assert size(tactics) <= 2 * MB
    rows = {s: pq.read_table(tactics / f"{s}.parquet").to_pandas() for s in ("train", "test")}
    assert set(rows["test"].kind) == set(rows["train"].kind) == {"mate1", "mate2", "only"}
    assert len(rows["test"]) >= 1000 and (rows["test"].task == "P").all()
    test_keys = {position_key(f) for f in rows["test"].fen}
    data_train = pq.read_table(ASSETS / "data" / "train.parquet", columns=["fen"]).column("fen").to_pylist()
    assert not test_keys & {position_key(f) for f in rows["train"].fen}
    assert not test_keys & {position_key(f) for f in data_train}
    stats = json.loads((tactics / "stats.json").read_text())
    assert stats["settings"]["tactics"] and stats["rows"]["test"]["P"] == len(rows["test"])
