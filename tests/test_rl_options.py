"""The RL options of issue 19 (rookworld_trl/grpo/rl_config.py, rl_options.py): exact KL estimators, EMA/adaptive
baselines, the value head with GAE, DAPO dynamic sampling. Tiny random GPT-2 of tests/tiny_grpo.py on CPU.

    .venv/bin/pytest tests/test_rl_options.py            (add -m slow for the 3-step runs from the recipe)
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_grpo import file_reward, make_trainer, tiny_config, tiny_recipe_argv
from trl import GRPOTrainer

from rookworld_trl.grpo import advantages as adv
from rookworld_trl.grpo import dynamic_sampling as ds
from rookworld_trl.grpo import kl as kl_module
from rookworld_trl.grpo.kl import divergences, per_token_kl
from rookworld_trl.grpo.stage import main
from rookworld_trl.model.loading import gpt2_backbone


def has_e(prompts, completions, **kwargs):
    """1 when the completion holds an 'e': a flat group (all 0 or all 1) is frequent."""
    return [float("e" in c) for c in completions]


def constant(prompts, completions, **kwargs):
    return [1.0 for _ in completions]


def generation_rows(trainer, groups: int) -> list[dict]:
    """A generation batch as TRL's sampler gives it: each prompt repeated num_generations times."""
    n = trainer.num_generations
    return [trainer.train_dataset[g] for g in range(groups) for _ in range(n)]


def completion_texts(trainer, output) -> list[str]:
    ids = output["completion_ids"] * output["completion_mask"]  # pad is EOS (0): skipped when decoding
    return trainer.processing_class.batch_decode(ids, skip_special_tokens=True)


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


def test_exact_kl_of_identical_models_is_zero(model_dir):
    trainer = make_trainer(model_dir, "unused", beta=0.1, kl_estimator="reverse")
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


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_kl_term_is_normalised_as_trls_own(model_dir, loss_type):
    """TRL's loss with beta minus without = beta x its k3 term; ours normalises the same k3 to the same value."""
    trainer = make_trainer(model_dir, "unused", beta=0.5, loss_type=loss_type, learning_rate=0.0)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(1)
    inputs = trainer.score(generation_rows(trainer, 1))
    with torch.no_grad():
        with_kl = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        trainer.kl_control.beta = 0.0
        without = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        trainer.kl_control.beta = 0.5
        for param in trainer.model.parameters():  # the policy moves: k3 is no longer 0
            param.add_(0.05 * torch.randn_like(param))
        with_kl_moved = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        trainer.kl_control.beta = 0.0
        without_moved = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        trainer.kl_control.beta = 0.5
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        width = inputs["completion_ids"].shape[1]
        logits = trainer.model(input_ids=ids, attention_mask=mask).logits[:, -width - 1 : -1]
        logps = logits.log_softmax(-1).gather(-1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1)
        diff = inputs["ref_per_token_logps"] - logps
        k3 = diff.exp() - diff - 1
        ours = 0.5 * trainer.normalise_like_trl(k3, inputs["completion_mask"], inputs)
    assert (with_kl - without).abs().item() < 1e-6  # identical models: k3 = 0
    assert (with_kl_moved - without_moved).item() > 1e-5
    assert ours.item() == pytest.approx((with_kl_moved - without_moved).item(), rel=1e-3)


# ---- baselines ----


def test_ema_advantages_are_each_tasks_rewards_against_its_batch_mean():
    ema = adv.RunningBaseline(decay=0.5)
    tasks = ["P:", "P:", "A:", "A:"]
    first = ema("ema", torch.tensor([1.0, 0.0, 2.0, 2.0]), tasks, 2)
    # P: d = r - 0.5; sd(d) = 0.5 (population) = s -> +-1; A: all equal -> 0
    assert first.advantages.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-3)
    assert first.weights.tolist() == [0.0] * 4
    second = ema("ema", torch.tensor([1.0, 1.0, 0.0, 1.0]), tasks, 2)
    assert ema.state["P:"]["mean"] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert ema.state["A:"]["mean"] == pytest.approx(0.5 * 2.0 + 0.5 * 0.5)
    # P: all equal now: d = 0; the running scale remembers the first batch's spread (V = 0.5 x 0.25)
    assert second.advantages[:2].tolist() == [0.0, 0.0]
    assert second.scale[0].item() == pytest.approx(math.sqrt(0.125))
    assert second.advantages[2:].tolist() == pytest.approx([-1.0, 1.0], abs=1e-3)


def test_advantages_under_a_lagging_ema_stay_centred_and_bounded():
    """Issue 19's collapse: rewards 0.1 above the running mean, groups of std 0.02: TRL's group-std scaling gave
    ~+5 to every sample. Here: mean 0 per task and |a| <= sqrt(N - 1) (RunningBaseline's bound), on every batch."""
    n, groups = 8, 8
    torch.manual_seed(0)
    for kind in ("ema", "adaptive"):
        running = adv.RunningBaseline(0.9, state={"P:": {"mean": 0.4, "spread": 0.01**2, "var": 0.05**2}})
        for step in range(5):
            level = 0.5 + 0.03 * torch.randn(groups, 1)  # the batch's prompts, 0.1 above e = 0.4 on average
            rewards = (level + 0.02 * torch.randn(groups, n)).flatten()
            out = running(kind, rewards, ["P:"] * (n * groups), n)
            a = out.advantages
            assert abs(a.mean().item()) < 1e-4, (kind, step)
            assert a.abs().max().item() <= math.sqrt(n * groups - 1), (kind, step)
            assert 0.3 < a.std(correction=0).item() <= 1.0 + 1e-3  # s >= the batch's spread of r - b - c
            naive = (rewards - 0.4) / (0.02 + adv.EPS)  # the old formula, for contrast
            assert naive.mean().item() > 3.0


def test_adaptive_baseline_weighs_the_group_mean_by_its_noise():
    adaptive = adv.RunningBaseline(decay=0.5, state={"P:": {"mean": 0.0, "spread": 1.0}})
    # group [1, 3]: mean 2, variance 2, noise 2 / 2 = 1 -> w = 1 / (1 + 1) = 0.5 -> b = 0.5 x 2 + 0.5 x 0 = 1
    # group [4, 4]: no noise -> w = 1 -> b = 4. r - b: [0, 2, 0, 0], c = 0.5 -> d = [-0.5, 1.5, -0.5, -0.5]
    out = adaptive("adaptive", torch.tensor([1.0, 3.0, 4.0, 4.0]), ["P:"] * 4, 2)
    assert out.weights.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])
    s = math.sqrt((3 * 0.25 + 2.25) / 4)
    assert out.advantages.tolist() == pytest.approx([-0.5 / s, 1.5 / s, -0.5 / s, -0.5 / s], rel=1e-3)
    assert adaptive.state["P:"]["mean"] == pytest.approx(0.5 * 0.0 + 0.5 * 3.0)


def test_fields_under_weights_of_one_are_field_credits_own():
    """recentre_fields with w = 1 (the group's mean) gives credit.row_advantages' advantages back; with w = 0
    each field is centred on the batch instead."""
    import copy

    from rookworld_trl.grpo.credit import row_advantages

    def terms(m, e, b, moves, slot):
        return {"M": m, "E": e, "B": b, "moves": moves, "best_slot": slot}

    rows = [terms(0.3, 0.1, 0.4, [0.1, 0.1], 0), terms(0.1, 0.0, 0.0, [0.1, -0.05], -1), None,
            terms(0.2, 0.05, 0.2, [0.1], 0), terms(0.2, 0.05, 0.2, [0.1], 0), None]  # fmt: skip
    scale = torch.full((6,), 0.5)
    group = row_advantages(rows, scale.tolist(), 3)
    same = adv.recentre_fields(copy.deepcopy(group), rows, torch.ones(6), scale, 3)
    for a, b in zip(group, same, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert [a[f] for f in "MEB"] == pytest.approx([b[f] for f in "MEB"])
            assert a["moves"] == pytest.approx(b["moves"])
    batch = adv.recentre_fields(copy.deepcopy(group), rows, torch.zeros(6), scale, 3)
    b_mean = (0.4 + 0.0 + 0.2 + 0.2) / 4
    assert batch[3]["B"] == pytest.approx(
        (0.2 - b_mean) / (0.5 + adv.EPS)
    )  # group 2's B: was 0 against itself
    assert group[3]["B"] == pytest.approx(0.0)
    assert sum(r["E"] for r in batch if r is not None) == pytest.approx(0.0, abs=1e-6)


def test_ema_baseline_in_the_trainer_tracks_the_rewards_it_scored(model_dir):
    """The trainer's ema advantages are RunningBaseline's of the rewards it scored, centred."""
    trainer = make_trainer(model_dir, "unused", baseline="ema", baseline_ema_decay=0.5)
    trainer.model.train()
    rows = generation_rows(trainer, 1)  # one group of "P: e2e4 M:"
    first = trainer.score(rows)
    r1 = torch.tensor(file_reward(None, completion_texts(trainer, first)))
    assert trainer.running_baseline.state["P:"]["mean"] == pytest.approx(r1.mean().item(), abs=1e-6)
    expected = adv.RunningBaseline(0.5)("ema", r1, ["P:"] * 4, 4).advantages
    assert torch.allclose(first["advantages"], expected, atol=1e-4)
    assert first["advantages"].mean().abs().item() < 1e-4


# ---- value baseline ----


def test_gae_on_a_known_sequence_matches_a_hand_computation():
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    advantages, returns = adv.gae(torch.tensor([1.0]), values, mask, gamma=0.9, lam=0.8)
    a2 = 1.0 - 0.1  # the reward at the last token, nothing after it
    a1 = (0.9 * 0.1 - 0.2) + 0.9 * 0.8 * a2
    a0 = (0.9 * 0.2 - 0.5) + 0.9 * 0.8 * a1
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert returns[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.1, 0.0])
    mc, _ = adv.gae(torch.tensor([1.0]), values, mask, gamma=1.0, lam=1.0)  # lambda 1: reward minus value
    assert mc[0, :3].tolist() == pytest.approx([0.5, 0.8, 0.9])


def test_token_rewards_put_each_field_term_where_the_field_ends():
    from rookworld_trl.grpo.credit import token_layout

    layout = token_layout([" e2", "e4", " d2d4", " ", "E:", " 0.3", " B", ":", " e2e4", "<eos>", "<eos>"])
    terms = {"M": 0.3, "E": 0.05, "B": 0.4, "moves": [0.1, 0.12], "best_slot": 0}
    mask = torch.tensor([[1] * 10 + [0], [1] * 3 + [0] * 8])
    out = adv.token_rewards(torch.tensor([0.95, 0.5]), mask, [terms, None], [layout, layout])
    assert out[0].tolist() == pytest.approx(
        [0, 0.1, 0.12, 0.3 - 0.22, 0, 0.05, 0, 0, 0, 0.4 + 0.2, 0]
    )  # B: at its last token (EOS), with the 0.2 left
    assert out[0].sum().item() == pytest.approx(0.95) and out[1].tolist() == pytest.approx(
        [0, 0, 0.5] + [0] * 8
    )
    advantages, returns = adv.gae(out, torch.zeros(2, 11), mask, 1.0, 1.0)  # V = 0: returns are rewards to go
    assert returns[0, 0].item() == pytest.approx(0.95) and returns[0, 2].item() == pytest.approx(0.95 - 0.1)


def test_value_loss_decreases_over_a_few_steps(model_dir):
    trainer = make_trainer(
        model_dir,
        "unused",
        value_baseline=True,
        value_coef=1.0,
        value_learning_rate=0.005,
        learning_rate=1e-12,
    )
    trainer.reward_funcs[0] = constant  # returns of 1: the head must learn them from 0
    trainer.value_started = True  # (else its first batch sets the bias to 1 at once)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    inputs = trainer.score(generation_rows(trainer, 1))
    # warm-up: constant returns have no variance to explain, so the batch keeps the group's advantages
    assert inputs["advantages"].shape == inputs["completion_ids"].shape[:1]
    assert trainer.metric_values("value/gae_used") == [0.0]
    optimizer = trainer.create_optimizer()
    losses = trainer.metric_values("value/loss")
    for _ in range(6):
        trainer.compute_loss(trainer.model, inputs).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert len(losses) == 6 and losses[0] > 0
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)) and losses[-1] < 0.5 * losses[0]


def test_value_head_starts_at_the_mean_return(model_dir):
    trainer = make_trainer(model_dir, "unused", value_baseline=True)
    trainer.reward_funcs[0] = constant
    trainer.model.train()
    trainer.score(generation_rows(trainer, 1))
    assert trainer.value_head.bias.item() == pytest.approx(1.0) and trainer.metric_values("value/mean") == [
        pytest.approx(1.0)
    ]


def test_value_head_past_its_warm_up_gives_centred_gae_advantages_and_clips_its_own_gradient(model_dir):
    trainer = make_trainer(
        model_dir,
        "unused",
        value_baseline=True,
        value_warmup_ev=-1e9,
        value_max_grad_norm=0.01,
        value_coef=1e3,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    inputs = trainer.score(generation_rows(trainer, 2))
    assert trainer.metric_values("value/gae_used") == [1.0]
    assert inputs["advantages"].shape == inputs["completion_ids"].shape  # per token
    mask = inputs["completion_mask"].bool()
    assert abs(inputs["advantages"][mask].mean().item()) < 1e-4  # centred over the task's tokens
    optimizer = trainer.create_optimizer()
    head_group = optimizer.param_groups[-1]  # the head's own group, after Trainer's (decay / no decay)
    assert head_group["params"] == list(trainer.value_head.parameters())
    assert head_group["lr"] == trainer.args.value_learning_rate
    trainer.compute_loss(trainer.model, inputs).backward()
    policy_norm = torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), float("inf"))
    optimizer.step()
    head_norm = trainer.metric_values("value/grad_norm")[-1]
    assert head_norm > 0.01  # a loss weighted 1000: a large gradient, clipped before the step on its own
    assert policy_norm.item() < head_norm  # the head's gradient never enters the policy's norm


# ---- dynamic sampling ----


def test_dynamic_sampling_leaves_no_zero_std_group_while_it_can_redraw(model_dir):
    trainer = make_trainer(
        model_dir,
        "unused",
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=30,
        per_device_train_batch_size=16,
    )
    trainer.reward_funcs[0] = has_e
    trainer.model.train()
    torch.manual_seed(0)
    for _ in range(3):
        output = trainer.generate_batch(generation_rows(trainer, 4))
        rewards = torch.tensor(has_e(None, completion_texts(trainer, output)))
        assert ds.informative(rewards, 4).all()
        assert output["num_items_in_batch"].item() == output["completion_mask"].sum().item()
    dropped, redrawn = (
        trainer.metric_values("dynamic_sampling/dropped"),
        trainer.metric_values("dynamic_sampling/redrawn"),
    )
    assert sum(dropped) > 0 and sum(redrawn) > 0 and redrawn[0] % 4 == 0
    assert trainer.metric_values("dynamic_sampling/left") == [0, 0, 0]


def test_dynamic_sampling_stops_after_its_rounds_and_says_so(model_dir):
    trainer = make_trainer(model_dir, "unused", dynamic_sampling=True, dynamic_sampling_max_rounds=2)
    trainer.reward_funcs[0] = constant  # every group flat, forever
    trainer.model.train()
    trainer.generate_batch(generation_rows(trainer, 1))
    assert trainer.metric_values("dynamic_sampling/redrawn") == [2]  # 2 rounds of 1 group
    assert trainer.metric_values("dynamic_sampling/dropped") == [0]
    assert trainer.metric_values("dynamic_sampling/left") == [1]


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


def test_value_head_and_running_baseline_come_back_on_resume(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path / "a", value_baseline=True)
    with torch.no_grad():
        trainer.value_head.bias.fill_(0.25)
    trainer.running_baseline.state = {"P:": {"mean": 0.5, "spread": 0.1}}
    trainer.checkpoint_written(str(tmp_path))
    resumed = make_trainer(model_dir, tmp_path / "b", value_baseline=True)
    resumed.on_resume(str(tmp_path))
    assert resumed.value_head.bias.item() == 0.25
    assert resumed.running_baseline.state == {"P:": {"mean": 0.5, "spread": 0.1}}


# ---- 30 steps of each baseline on the embedded model (issue 33) ----

LEGAL_BEST = "eval/policy/greedy/legal_best_move"


def thirty_steps(out, *flags: str) -> dict:
    """30 steps of the main job's recipe on the embedded model (seed 0) -> its metrics.jsonl rows with the
    held-out legal best move (200 positions, greedy) of step 30."""
    import json

    from tiny_grpo import ROOT

    argv = ["--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--output_dir", str(out),
            "--max_steps", "30", "--eval_samples", "0", "--eval_every_steps", "30", "--eval_every_samples", "200",
            "--save_steps", "30", "--print_completions_every", "0", "--disable_tqdm", "true", *flags]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "legal_best": next(r[LEGAL_BEST] for r in rows if r.get("step") == 30 and LEGAL_BEST in r),
        "rows": rows,
    }


@pytest.fixture(scope="module")
def group_run(tmp_path_factory):
    return thirty_steps(tmp_path_factory.mktemp("group") / "run")


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags",
    [
        ["--baseline", "ema"],
        ["--baseline", "adaptive"],
        ["--value_baseline", "true", "--value_warmup_ev=-1e9"],
    ],
    ids=["ema", "adaptive", "value_gae_from_step_1"],
)
def test_thirty_steps_of_a_baseline_keep_the_held_out_skill(group_run, tmp_path, flags):
    """Issue 19's builds lost 20 (ema) and 54 (GAE) points of legal best moves over 150 steps; here each option,
    with the recipe's field credit, ends 30 steps within 3 points of the group baseline's run on the same 200
    held-out positions (the value head uses GAE from the first step: no warm-up to hide behind). ~4 min each
    on 2 cores, plus the group run once."""
    run = thirty_steps(tmp_path / "run", *flags)
    assert run["legal_best"] >= group_run["legal_best"] - 0.03, (run["legal_best"], group_run["legal_best"])
    steps = [r for r in run["rows"] if "loss" in r]
    if "--value_baseline" in flags:
        assert all(r["value/gae_used"] == 1.0 for r in steps)
        assert max(r["value/grad_norm"] for r in steps) < 100.0
