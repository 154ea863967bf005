"""Every GRPOConfig field through RookWorldGRPOTrainer, as grpo/trl_fields.py classifies it (issue #73).

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_trl_fields.py            # classification, cases: ~1 min
    PYTHONPATH=$PWD .venv/bin/python -m pytest -q -m slow tests/test_trl_fields.py    # the walk + weights: ~6 min

The default tier checks that every field of the installed TRL's GRPOConfig is classified (a TRL upgrade that adds
one fails here until FIELDS names it), that docs/GUIDE.md's table is FIELDS', that each refusal is one line
naming the field and the fix, and the issue's cases: a user's rollout_func is called, model_init_kwargs reach
policy and reference, TRL-style data fails in one line, the completions table prints at each log as in TRL.
The slow walk takes each of TRL's own fields that "works": a 2-step run of the tiny model where setting it
changes a logged quantity against the same run without it, or (where no 2-step run can show it: vLLM, the hub,
evaluation, tools) a check that the value reaches the attribute TRL reads.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tiny_grpo import file_reward, load_tiny, tiny_config, tiny_dataset, train_logs

from rookworld_trl.chess.engine import find_stockfish
from rookworld_trl.common.errors import UserError
from rookworld_trl.grpo.config import RookWorldGRPOConfig
from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer
from rookworld_trl.grpo.trl_fields import (
    FIELDS,
    GRPO_FIELDS,
    REFUSED,
    WORKS,
    check_fields,
    markdown_table,
    unclassified,
)
from rookworld_trl.training import trl_compat

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "GUIDE.md"
NOT_LOGGED = ("time", "runtime", "per_second", "memory/")  # wall-clock figures differ run to run


def digit_reward(prompts, completions, **kwargs):
    """Fraction of rank digits: a second reward, on another scale than file_reward (for the aggregation)."""
    return [2 * sum(ch in "12345678" for ch in c) / max(len(c), 1) for c in completions]


def build(model_dir, out, model=None, data=None, **overrides) -> RookWorldGRPOTrainer:
    """The tiny trainer (tests/tiny_grpo.py) with two rewards; `model` may be a path, `data` a dataset."""
    policy, tokenizer = load_tiny(model_dir)
    kwargs = {"rollout_func": overrides.pop("rollout_func")} if "rollout_func" in overrides else {}
    return RookWorldGRPOTrainer(
        model=policy if model is None else model,
        reward_funcs=[file_reward, digit_reward],
        args=tiny_config(out, metrics_jsonl=None, **overrides),
        train_dataset=tiny_dataset() if data is None else data,
        processing_class=tokenizer,
        **kwargs,
    )


def cpu(tmp_path) -> dict:
    return {"output_dir": str(tmp_path), "use_cpu": True, "bf16": False}


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------ the classification and the GUIDE's table


def test_every_grpo_config_field_is_classified():
    """A TRL upgrade that adds (or drops) a GRPOConfig field fails here until grpo/trl_fields.py FIELDS says
    whether it works through the subclass or is refused."""
    assert unclassified() == []
    assert {p.verdict for p in FIELDS.values()} == {WORKS, REFUSED}
    assert all(p.fix for p in FIELDS.values() if p.verdict == REFUSED)


def test_guide_holds_the_classification_table():
    """docs/GUIDE.md's parity table is markdown_table() (`python -m rookworld_trl.grpo.trl_fields --write docs/GUIDE.md`
    rewrites it)."""
    assert markdown_table() in GUIDE.read_text()


REFUSALS = {  # field: (a value TRL would take, overrides the refusal needs)
    "ds3_gather_for_generation": (False, {}),
    "generation_kwargs": ({"no_repeat_ngram_size": 2}, {}),
    "chat_template_kwargs": ({"enable_thinking": False}, {}),
    "repetition_penalty": (1.2, {}),
    "cache_implementation": ("static", {}),
    "use_transformers_continuous_batching": (True, {}),
    "transformers_continuous_batching_config": ({"max_batch_tokens": 64}, {}),
    "use_transformers_paged": (True, {}),
    "cast_lm_head_to_fp32": (True, {}),
    "multi_objective_aggregation": ("normalize_then_sum", {"field_credit": True}),
}


def test_every_refused_field_has_a_refusal_case():
    ours = {n for n, p in FIELDS.items() if p.verdict == REFUSED and p.refuse is not None}
    assert ours == set(REFUSALS)


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusal_is_one_line_naming_the_field_why_and_the_fix(name, tmp_path):
    value, needs = REFUSALS[name]
    parity = FIELDS[name]
    try:
        args = RookWorldGRPOConfig(**cpu(tmp_path), **needs, **{name: value})
    except ValueError as e:  # refused as the config is built (the RL options' checks call the same refusal)
        message = str(e)
    else:
        with pytest.raises(UserError) as e:
            check_fields(args, sampler=True)
        message = one_line(e)
    assert message.startswith(f"{name}=") and parity.note in message and parity.fix in message
    if parity.refuse is not None and parity.refuse.__name__ == "under_sampler":
        check_fields(args, sampler=False)  # generation_backend transformers takes it


# ------------------------------------------------------------------ the cases


def test_a_users_rollout_func_is_called_in_place_of_ours(model_dir, tmp_path):
    """Case 1: TRL's rollout_func is honoured; ours is the default only when none is given."""
    from rookworld_trl.grpo.rollout import rollout

    calls = []

    def mine(prompts, trainer):
        calls.append(len(prompts))
        return rollout(prompts, trainer)

    trainer = build(model_dir, tmp_path, rollout_func=mine, max_steps=1)
    assert trainer.rollout_func is mine
    trainer.train()
    assert calls
    assert build(model_dir, tmp_path / "ours").rollout_func is rollout


def test_sampler_settings_are_refused_at_construction_and_taken_by_generate(model_dir, tmp_path):
    """Case 1: cache_implementation under our sampler is one line naming the switch; transformers takes it."""
    with pytest.raises(UserError) as e:
        build(model_dir, tmp_path, cache_implementation="static")
    assert "cache_implementation='static'" in one_line(e) and "generation_backend: transformers" in one_line(
        e
    )
    trainer = build(model_dir, tmp_path, cache_implementation="static", generation_backend="transformers")
    assert trainer.generation_config.cache_implementation == "static"


def test_aggregation_that_field_credit_overrides_is_refused(tmp_path):
    """Case 2: normalize_then_sum under field credit (or a running baseline, GAE) is refused as the config is
    built; without them it is TRL's (the slow walk shows it changes the logged advantages)."""
    for option in ({"field_credit": True}, {"baseline": "ema"}, {"value_baseline": True}):
        with pytest.raises(
            ValueError, match="multi_objective_aggregation='normalize_then_sum': has no effect"
        ):
            RookWorldGRPOConfig(**cpu(tmp_path), multi_objective_aggregation="normalize_then_sum", **option)
    RookWorldGRPOConfig(**cpu(tmp_path), multi_objective_aggregation="normalize_then_sum")


def odd_sum(prompts, completions, **kwargs):
    """A reward of one's own on P: answers (1.0 when its characters' codes sum to an odd number), None for A:."""
    pairs = zip(prompts, completions, strict=True)
    return [float(sum(map(ord, c)) % 2) if p.startswith("P:") else None for p, c in pairs]


def recipe_step(tmp_path, rewards: list, weights: list[float]) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """One step of the recipe (field credit) with scale_rewards none (advantages in reward units: a reward's
    change shows as itself) on 8 P: prompts of the embedded model, real Stockfish: (its log line, the
    advantages the loss trains on, their completion mask)."""
    from rookworld_trl import assets, load_rookworld_dataset

    args = RookWorldGRPOConfig.from_recipe(
        "grpo_tiny_cpu", max_steps=1, output_dir=str(tmp_path), reward_weights=weights, replay_coef=0.0,
        report_to=[], save_strategy="no", disable_tqdm=True, metrics_jsonl=None, log_completions=False,
        per_device_train_batch_size=8, num_generations=8, scale_rewards="none",
    )  # fmt: skip
    assert args.field_credit
    data = load_rookworld_dataset(assets.DATA, mix_env_ratio=0.0, max_samples=8)
    trainer = RookWorldGRPOTrainer(assets.MODEL, rewards, args, train_dataset=data)
    seen, generate = [], trainer._generate_and_score_completions

    def recorded(inputs):
        output = generate(inputs)
        seen.append((output["advantages"].clone(), output["completion_mask"].bool()))
        return output

    trainer._generate_and_score_completions = recorded
    trainer.train()
    return train_logs(trainer)[0], *seen[0]


@pytest.mark.slow  # three steps of the embedded model: ~1-2 min on 2 cores
@pytest.mark.skipif(find_stockfish() is None, reason="needs Stockfish")
def test_field_credit_applies_reward_weights_and_your_own_rewards(tmp_path):
    """What field credit used to override, now applied: (1) the policy reward's weight: at weight 2 a P: answer's
    advantages double, as TRL's sequence advantages do (before, field credit's terms ignored the weight); (2) a
    reward of yours on P: answers moves every token of an answer by its centred value (before, dropped)."""
    from rookworld_trl import env_reward, policy_reward

    line, plain, mask = recipe_step(tmp_path / "1", [policy_reward, env_reward], [1.0, 1.0])
    doubled, weighted, _ = recipe_step(tmp_path / "2", [policy_reward, env_reward], [2.0, 1.0])
    assert line["reward"] * 2 == pytest.approx(doubled["reward"], rel=1e-5)  # the same completions
    assert plain.dim() == 2 and plain.abs().max() > 0  # field credit's (B, T) advantages
    assert torch.allclose(weighted[mask], 2 * plain[mask], atol=1e-3)  # (EPS: advantages / (1 + 1e-4))
    _, mine, _ = recipe_step(tmp_path / "3", [policy_reward, env_reward, odd_sum], [1.0, 1.0, 1.0])
    shift = (mine - plain).masked_fill(~mask, float("nan"))
    per_row = shift.nanmean(dim=1, keepdim=True)
    assert per_row.abs().max() > 0.05  # the odd sums count
    assert torch.allclose(shift[mask], per_row.expand_as(shift)[mask], atol=1e-3)  # alike on every token


def test_model_init_kwargs_reach_policy_and_reference(model_dir, tmp_path):
    """Case 3: a model path loads the policy with every model_init_kwargs, as TRL builds the reference."""
    init = {"attn_implementation": "eager", "dtype": "float32"}
    trainer = build(model_dir, tmp_path, model=model_dir, beta=0.04, model_init_kwargs=init)
    assert trainer.model.config._attn_implementation == "eager"
    assert trainer.ref_model.config._attn_implementation == "eager"
    default = build(model_dir, tmp_path, model=model_dir, beta=0.04)
    assert default.model.config._attn_implementation == default.ref_model.config._attn_implementation


def test_prompt_only_data_with_replay_says_the_fix(model_dir, tmp_path):
    """Case 4: TRL-style data (a `prompt` column) under supervised replay: one line with both ways out."""
    with pytest.raises(UserError) as e:
        build(model_dir, tmp_path, replay_coef=0.1)
    assert "set replay_coef=0" in one_line(e) and "replay_dataset=" in one_line(e)


def test_conversational_prompts_say_which_backend_takes_them(model_dir, tmp_path):
    """Case 4: prompts as lists of messages: one line, before the tokenizer sees them."""
    chat = Dataset.from_dict({"prompt": [[{"role": "user", "content": "P: e2e4 M:"}]] * 4})
    with pytest.raises(UserError) as e:
        build(model_dir, tmp_path, data=chat)
    assert "conversational prompts" in one_line(e) and "generation_backend: transformers" in one_line(e)


def test_log_completions_prints_the_table_at_every_log_as_trl(model_dir, tmp_path, monkeypatch):
    """Case 5: log_completions prints at every logging step, unless print_completions_every says otherwise."""
    steps = []
    monkeypatch.setattr(trl_compat.COMPLETIONS_TABLE, "original", lambda *a, **k: steps.append(a[4]))
    build(model_dir, tmp_path, log_completions=True).train()
    assert steps == [1, 2]
    steps.clear()
    build(model_dir, tmp_path / "b", log_completions=True, print_completions_every=2).train()
    assert steps == [2]


def test_one_item_lora_target_modules_becomes_a_list_again():
    """Case 5: TRL's ModelConfig turns [c_attn] into "c_attn", a regex PEFT matches against whole names."""
    from trl import ModelConfig

    from rookworld_trl.stages.grpo import lora_targets

    assert lora_targets(ModelConfig(lora_target_modules=["c_attn"])).lora_target_modules == ["c_attn"]
    assert lora_targets(ModelConfig(lora_target_modules="all-linear")).lora_target_modules == "all-linear"
    assert lora_targets(ModelConfig(lora_target_modules=".*c_attn")).lora_target_modules == ".*c_attn"


# ------------------------------------------------------------------ the walk (slow): each TRL field that works

IS = {"sampler_importance_sampling": True}
TWICE = {"num_iterations": 2}  # a second pass over a batch: the policy has moved, so clipping and ratios act
KL = {"beta": 0.04}


def reaches(attribute: str):
    """A check that the field's value is where TRL reads it (the trainer's attribute, else its args)."""

    def check(trainer, name, value):
        held = getattr(trainer, attribute) if attribute else getattr(trainer.args, name)
        assert held == value, (attribute or name, held, value)

    return check


def asks_for_vllm(model_dir, tmp_path, overrides):
    """use_vllm: TRL's vLLM path is taken (here, without vllm installed, TRL asks for it at construction)."""
    with pytest.raises((ImportError, ModuleNotFoundError, ValueError), match="(?i)vllm"):
        build(model_dir, tmp_path, **overrides)


def dropout_kept(model_dir, tmp_path, overrides):
    """disable_dropout false keeps the model's dropout; ours (true) zeroes it, as TRL's option does."""
    policy, _ = load_tiny(model_dir)
    for module in policy.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    trainer = build(model_dir, tmp_path, model=policy, **overrides)
    assert {m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    policy, _ = load_tiny(model_dir)
    for module in policy.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    ours = build(model_dir, tmp_path / "ours", model=policy)
    assert {m.p for m in ours.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}


def policy_loaded_with(model_dir, tmp_path, overrides):
    """model_init_kwargs / trust_remote_code: a model path loads with them (policy and reference alike)."""
    trainer = build(model_dir, tmp_path, model=model_dir, beta=0.04, **overrides)
    for model in (trainer.model, trainer.ref_model):
        assert model.config._attn_implementation == "eager"


def writes_completions(model_dir, tmp_path, overrides):
    """log_completions: TRL's completions Parquet at each logging step (the console table: the test above)."""
    build(model_dir, tmp_path, **overrides).train()
    assert sorted(p.name for p in (tmp_path / "completions").iterdir()) == [
        "completions_00001.parquet",
        "completions_00002.parquet",
    ]


def pushes_completions(model_dir, tmp_path, overrides):
    """log_completions_hub_repo: TRL creates that dataset repo and schedules the completions' upload (the hub
    calls recorded here: no network)."""
    from trl.trainer import grpo_trainer

    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpo_trainer, "create_repo", lambda repo_id, **kw: calls.append(repo_id))
        patch.setattr(
            grpo_trainer.DatasetCard, "push_to_hub", lambda self, repo_id, **kw: calls.append(repo_id)
        )
        patch.setattr(grpo_trainer, "CommitScheduler", lambda repo_id, **kw: calls.append(repo_id))
        build(model_dir, tmp_path, **overrides)
    assert calls == [overrides["log_completions_hub_repo"]] * 3


LOGS = "logs"  # the check: a logged quantity differs from the run without the field
WALK = {  # field: (value, the overrides both runs share, the check)
    "model_init_kwargs": ({"attn_implementation": "eager"}, {}, policy_loaded_with),
    "trust_remote_code": (True, {"model_init_kwargs": {"attn_implementation": "eager"}}, policy_loaded_with),
    "router_aux_loss_coef": (0.1, {}, "refused by TRL"),
    "disable_dropout": (False, {}, dropout_kept),
    "num_generations": (2, {}, LOGS),
    "num_generations_eval": (2, {}, reaches("num_generations_eval")),
    "max_completion_length": (5, {}, LOGS),
    "shuffle_dataset": (False, {}, LOGS),
    "pad_to_multiple_of": (16, {}, reaches("pad_to_multiple_of")),
    "generation_batch_size": (8, {}, LOGS),
    "steps_per_generation": (2, {}, LOGS),
    "temperature": (0.5, {}, LOGS),
    "top_p": (0.3, {}, LOGS),
    "top_k": (2, {}, LOGS),
    "min_p": (0.9, {}, LOGS),  # the tiny model's distribution is flat: 0.2 of its top keeps every token
    "use_vllm": (True, {}, asks_for_vllm),
    "beta": (0.04, {}, LOGS),
    "num_iterations": (2, {}, LOGS),
    "epsilon": (0.001, TWICE, LOGS),
    "delta": (1.0, TWICE, LOGS),
    "epsilon_high": (0.001, TWICE, LOGS),
    "sapo_temperature_neg": (3.0, {"loss_type": "sapo", **TWICE}, LOGS),
    "sapo_temperature_pos": (3.0, {"loss_type": "sapo", **TWICE}, LOGS),
    "vespo_k_pos": (5.0, {"loss_type": "vespo", **TWICE}, LOGS),
    "vespo_lambda_pos": (6.0, {"loss_type": "vespo", **TWICE}, LOGS),
    "vespo_k_neg": (6.0, {"loss_type": "vespo", **TWICE}, LOGS),
    "vespo_lambda_neg": (5.0, {"loss_type": "vespo", **TWICE}, LOGS),
    "importance_sampling_level": ("sequence", {"loss_type": "grpo", **TWICE}, LOGS),
    "reward_weights": ([2.0, 0.5], {}, LOGS),
    "multi_objective_aggregation": ("normalize_then_sum", {}, LOGS),
    "scale_rewards": ("none", {}, LOGS),
    "loss_type": ("cispo", TWICE, LOGS),
    "mask_truncated_completions": (True, {}, LOGS),
    "sync_ref_model": (True, {**KL, "ref_model_sync_steps": 1}, LOGS),
    "ref_model_mixup_alpha": (0.1, {**KL, "sync_ref_model": True, "ref_model_sync_steps": 1}, LOGS),
    "ref_model_sync_steps": (1, {**KL, "sync_ref_model": True}, LOGS),
    "top_entropy_quantile": (0.2, {}, LOGS),
    "entropy_coef": (0.5, {}, LOGS),
    "use_adaptive_entropy": (True, {"entropy_target": 10.0}, LOGS),
    "entropy_coef_min": (0.3, {"use_adaptive_entropy": True}, LOGS),
    "entropy_coef_max": (0.001, {"use_adaptive_entropy": True, "entropy_target": 10.0}, LOGS),
    "entropy_coef_delta": (0.3, {"use_adaptive_entropy": True, "entropy_target": 10.0}, LOGS),
    "entropy_target": (10.0, {"use_adaptive_entropy": True}, LOGS),
    "max_tool_calling_iterations": (2, {}, reaches("max_tool_calling_iterations")),
    "vllm_importance_sampling_correction": (False, IS, LOGS),
    "vllm_importance_sampling_mode": (
        "token_truncate",
        {**IS, "vllm_importance_sampling_clip_max": 0.5},
        LOGS,
    ),
    "vllm_importance_sampling_clip_max": (0.5, IS, LOGS),
    "vllm_importance_sampling_clip_min": (1.5, IS, LOGS),
    "vllm_importance_sampling_cap": (0.5, IS, LOGS),
    "off_policy_mask_threshold": (0.0, TWICE, LOGS),
    "use_bias_correction_kl": (False, {**KL, **TWICE}, LOGS),
    "log_completions": (True, {}, writes_completions),
    "log_multimodal": (False, {}, reaches(None)),  # images only, as in TRL
    "num_completions_to_print": (1, {}, reaches("num_completions_to_print")),
    "log_unique_prompts": (True, {}, reaches("log_unique_prompts")),  # wandb / trackio tables only
    "log_completions_hub_repo": ("me/completions", {"log_completions": True}, pushes_completions),
}
VLLM_VALUES = {  # TRL's vLLM settings: read by TRL's vLLM path only (use_vllm), which needs vllm and a GPU
    "vllm_mode": "server", "vllm_model_impl": "transformers", "vllm_enable_sleep_mode": True,
    "vllm_structured_outputs_regex": "P: .*", "vllm_server_base_url": "http://localhost:8001",
    "vllm_server_host": "127.0.0.1", "vllm_server_port": 8001, "vllm_server_timeout": 10.0,
    "vllm_group_port": 51217, "vllm_gpu_memory_utilization": 0.5, "vllm_max_model_length": 256,
    "vllm_tensor_parallel_size": 2,
}  # fmt: skip
WALK |= {name: (value, {}, reaches(None)) for name, value in VLLM_VALUES.items()}


def test_the_walk_covers_every_field_of_trls_that_works():
    works = {n for n, p in GRPO_FIELDS.items() if p.verdict == WORKS}
    assert works - set(WALK) == set()


def figures(logs: list[dict]) -> list[dict]:
    """The logged quantities of a run, without wall-clock figures."""
    return [{k: v for k, v in row.items() if not any(w in k for w in NOT_LOGGED)} for row in logs]


def differs(a: list[dict], b: list[dict]) -> list[str]:
    """The logged names whose values (or presence) differ between two runs' step logs."""
    names = {k for row in a + b for k in row}
    out = []
    for name in sorted(names):
        x, y = [row.get(name) for row in a], [row.get(name) for row in b]
        same = all(
            (u is None and v is None)
            or (u is not None and v is not None and (math.isclose(u, v) or (math.isnan(u) and math.isnan(v))))
            for u, v in zip(x, y, strict=True)
        )
        if not same or len(a) != len(b):
            out.append(name)
    return out


_runs: dict = {}


def run_logs(model_dir, tmp_path, overrides: dict) -> list[dict]:
    """A 2-step run's logged figures (cached by its overrides: the baselines are shared)."""
    key = repr(sorted(overrides.items(), key=lambda kv: kv[0]))
    if key not in _runs:
        trainer = build(model_dir, tmp_path / f"run{len(_runs)}", **overrides)
        trainer.train()
        _runs[key] = figures(train_logs(trainer))
    return _runs[key]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WALK))
def test_each_trl_field_takes_effect(name, model_dir, tmp_path):
    """A field that works changes a logged quantity of a 2-step run (against the same run without it), or reaches
    the attribute TRL reads where no 2-step run can show it; TRL's own refusal for router_aux_loss_coef."""
    value, shared, check = WALK[name]
    if check == "refused by TRL":
        with pytest.raises(ValueError, match=re.escape(f"`{name}` is set to {value}")):
            build(model_dir, tmp_path, **{name: value})
    elif check == LOGS:
        changed = differs(
            run_logs(model_dir, tmp_path, shared), run_logs(model_dir, tmp_path, shared | {name: value})
        )
        assert changed, f"{name}={value!r} changed no logged quantity"
    elif check.__name__ == "check":
        check(build(model_dir, tmp_path, **shared, **{name: value}), name, value)
    else:
        check(model_dir, tmp_path, shared | {name: value})
