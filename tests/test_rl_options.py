"""The RL options of issue 19 (rookworld_trl/grpo/trainer.py, kl.py, dynamic_sampling.py): exact KL estimators, DAPO dynamic
sampling, 3-step runs of every option from the recipe (the baselines and the value head: tests/test_baselines.py).
Tiny random GPT-2 of tests/tiny_grpo.py on CPU.

    .venv/bin/pytest tests/test_rl_options.py            (add -m slow for the 3-step runs from the recipe)
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_grpo import completion_texts, constant, generation_rows, make_trainer, tiny_config, tiny_recipe_argv
from trl import GRPOTrainer

from rookworld_trl.grpo import dynamic_sampling as ds
from rookworld_trl.grpo import kl as kl_module
from rookworld_trl.grpo.kl import LOSS_TYPES, divergences, per_token_kl
from rookworld_trl.model.loading import gpt2_backbone
from rookworld_trl.stages.grpo import main


def has_e(prompts, completions, **kwargs):
    """1 when the completion holds an 'e': a flat group (all 0 or all 1) is frequent."""
    return [float("e" in c) for c in completions]


# ---- config ----


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(kl_estimator="jensen", beta=0.1), "kl_estimator must be one of"),
        (dict(kl_estimator="forward"), "needs beta > 0"),
        (dict(baseline="median"), "baseline must be one of"),
        (dict(baseline="ema", baseline_ema_decay=1.0), "baseline_ema_decay must be in"),
        (dict(value_baseline=True, baseline="ema"), "value_baseline replaces the baseline"),
        (dict(value_baseline=True, gae_lambda=1.5), "gae_lambda"),
        (dict(dynamic_sampling=True, dynamic_sampling_max_rounds=0), "dynamic_sampling_max_rounds"),
        (dict(baseline="ema", multi_objective_aggregation="normalize_then_sum"), "sum_then_normalize"),
        (dict(value_baseline=True, value_max_grad_norm=0.0), "value_max_grad_norm > 0"),
    ],
)
def test_config_rejects_bad_rl_options(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides)


# ---- KL ----


def one_hot_head(log_probs: list[float]) -> torch.nn.Linear:
    """An LM head whose logits for the hidden state [1, 0] are `log_probs`."""
    head = torch.nn.Linear(2, len(log_probs))
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, 0] = torch.tensor(log_probs)
        head.bias.zero_()
    return head


def test_exact_kl_of_known_distributions_matches_a_hand_computation():
    p, q = [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]
    reverse = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))  # KL(p || q)
    forward = sum(b * math.log(b / a) for a, b in zip(p, q, strict=True))  # KL(q || p)
    hidden = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # (B=1, T=2, H=2)
    mask = torch.tensor([[1, 0]])
    head_p, head_q = one_hot_head([math.log(x) for x in p]), one_hot_head([math.log(x) for x in q])
    expected = {"reverse": reverse, "forward": forward, "symmetric": (reverse + forward) / 2}
    for estimator, value in expected.items():
        kl = per_token_kl(hidden, head_p, hidden, head_q, mask, estimator)
        assert kl[0, 0].item() == pytest.approx(value, rel=1e-5)
        assert kl[0, 1].item() == 0.0  # masked token
    assert reverse != pytest.approx(forward)  # the estimators do differ here


def test_exact_kl_of_identical_models_is_zero(model_dir, tmp_path):
    trainer = make_trainer(model_dir, str(tmp_path), beta=0.1, kl_estimator="reverse")
    ids = torch.randint(1, trainer.model.config.vocab_size, (3, 12))
    hidden = gpt2_backbone(trainer.model)(input_ids=ids).last_hidden_state
    ref_hidden = gpt2_backbone(trainer.ref_model)(input_ids=ids).last_hidden_state
    mask = torch.ones(3, 12)
    for estimator in ("forward", "reverse", "symmetric"):
        kl = per_token_kl(
            hidden, trainer.model.lm_head, ref_hidden, trainer.ref_model.lm_head, mask, estimator
        )
        assert kl.abs().max().item() < 1e-5
    other = torch.randn_like(hidden)  # and not zero for another distribution
    assert (
        per_token_kl(other, trainer.model.lm_head, hidden, trainer.ref_model.lm_head, mask, "forward").min()
        > 0
    )


def test_chunked_kl_has_the_values_and_gradients_of_the_direct_sum(monkeypatch):
    torch.manual_seed(0)
    head, ref_head = torch.nn.Linear(8, 50), torch.nn.Linear(8, 50)
    hidden, ref_hidden = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    direct = (
        divergences((head(hidden)).log_softmax(-1), ref_head(ref_hidden).log_softmax(-1), "symmetric") * mask
    )
    (grad_direct,) = torch.autograd.grad(direct.sum(), hidden)
    monkeypatch.setattr(kl_module, "CHUNK_FLOATS", 150)  # 3 tokens per chunk: 3 chunks
    chunked = per_token_kl(hidden, head, ref_hidden, ref_head, mask, "symmetric")
    (grad_chunked,) = torch.autograd.grad(chunked.sum(), hidden)
    assert torch.allclose(chunked, direct, atol=1e-6) and torch.allclose(grad_chunked, grad_direct, atol=1e-6)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_kl_term_is_normalised_as_trls_own(model_dir, loss_type, tmp_path):
    """TRL's loss with beta minus without = beta x its k3 term; ours normalises the same k3 to the same value."""
    trainer = make_trainer(model_dir, str(tmp_path), beta=0.5, loss_type=loss_type, learning_rate=0.0)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(1)
    inputs = trainer.score(generation_rows(trainer, 1))
    with torch.no_grad():
        with_kl = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        trainer.run.beta = 0.0
        without = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        trainer.run.beta = 0.5
        for param in trainer.model.parameters():  # the policy moves: k3 is no longer 0
            param.add_(0.05 * torch.randn_like(param))
        with_kl_moved = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        trainer.run.beta = 0.0
        without_moved = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        trainer.run.beta = 0.5
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        width = inputs["completion_ids"].shape[1]
        logits = trainer.model(input_ids=ids, attention_mask=mask).logits[:, -width - 1 : -1]
        logps = logits.log_softmax(-1).gather(-1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1)
        diff = inputs["ref_per_token_logps"] - logps
        k3 = diff.exp() - diff - 1
        ours = 0.5 * trainer.normalised_like_trl(k3, inputs["completion_mask"], inputs)
    assert (with_kl - without).abs().item() < 1e-6  # identical models: k3 = 0
    assert (with_kl_moved - without_moved).item() > 1e-5
    assert ours.item() == pytest.approx((with_kl_moved - without_moved).item(), rel=1e-3)


# ---- dynamic sampling ----


def test_dynamic_sampling_leaves_no_zero_std_group_while_it_can_redraw(model_dir, tmp_path):
    trainer = make_trainer(
        model_dir,
        str(tmp_path),
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=30,
        per_device_train_batch_size=16,
    )
    trainer.reward_funcs[0] = has_e
    trainer.model.train()
    torch.manual_seed(0)
    for _ in range(3):
        output = trainer._generate_and_score_completions(generation_rows(trainer, 4))
        rewards = torch.tensor(has_e(None, completion_texts(trainer, output)))
        assert ds.informative(rewards, 4).all()
        assert output["num_items_in_batch"].item() == output["completion_mask"].sum().item()
    dropped, redrawn = (
        trainer.metrics.values("dynamic_sampling/dropped"),
        trainer.metrics.values("dynamic_sampling/redrawn"),
    )
    assert sum(dropped) > 0 and sum(redrawn) > 0 and redrawn[0] % 4 == 0
    assert trainer.metrics.values("dynamic_sampling/left") == [0, 0, 0]


def test_dynamic_sampling_stops_after_its_rounds_and_says_so(model_dir, tmp_path):
    trainer = make_trainer(model_dir, str(tmp_path), dynamic_sampling=True, dynamic_sampling_max_rounds=2)
    trainer.reward_funcs[0] = constant  # every group flat, forever
    trainer.model.train()
    trainer._generate_and_score_completions(generation_rows(trainer, 1))
    assert trainer.metrics.values("dynamic_sampling/redrawn") == [2]  # 2 rounds of 1 group
    assert trainer.metrics.values("dynamic_sampling/dropped") == [0]
    assert trainer.metrics.values("dynamic_sampling/left") == [1]


# ---- 3-step runs from the recipe ----


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, logged",
    [
        (["--beta", "0.05", "--kl_estimator", "forward"], "kl/forward"),
        (["--beta", "0.05", "--kl_estimator", "symmetric", "--adaptive_kl", "true"], "kl/symmetric"),
        (["--baseline", "ema"], "baseline/A"),
        (["--baseline", "adaptive"], "baseline/A"),
        (["--value_baseline", "true"], "value/loss"),
        (["--dynamic_sampling", "true"], "dynamic_sampling/redrawn"),
    ],
    ids=["forward_kl", "symmetric_kl", "ema", "adaptive", "gae", "dynamic_sampling"],
)
def test_three_steps_from_the_tiny_recipe(model_dir, tmp_path, flags, logged):
    import json

    out = tmp_path / "run"
    code = main(
        tiny_recipe_argv(model_dir, tmp_path, "--max_steps", "3", "--per_device_train_batch_size", "16",
                         "--num_generations", "4", "--save_steps", "3", "--eval_samples", "0",
                         "--eval_every_steps", "0", *flags)
    )  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 3 and all(logged in r and math.isfinite(r["loss"]) for r in steps)
    if "--value_baseline" in flags:
        assert (out / "checkpoint-3" / "value_head.safetensors").is_file()
