"""Baselines (rookworld_trl/grpo/baselines.py, value.py, trainer.py): EMA/adaptive advantages
centred per task, field credit under them, the value head (its own group, clipping, warm-up, GAE), its resume,
and 30 steps of each baseline on the embedded model (slow). Tiny random GPT-2 of tests/tiny_grpo.py on CPU.

    .venv/bin/pytest tests/test_baselines.py            (add -m slow for the 30-step runs)
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tiny_grpo import completion_texts, constant, file_reward, generation_rows, make_trainer

from rookworld_trl.grpo import baselines as adv
from rookworld_trl.grpo import value
from rookworld_trl.grpo.groups import EPS
from rookworld_trl.stages.grpo import main

# ---- baselines ----


class Running:
    """running_advantages with its state carried from batch to batch, as the trainer's RunState carries it."""

    def __init__(self, decay: float, state: dict | None = None):
        self.decay, self.state = decay, dict(state or {})

    def __call__(self, kind, rewards, tasks, n):
        out, self.state = adv.running_advantages(self.state, kind, rewards, tasks, n, self.decay)
        return out


def test_ema_advantages_are_each_tasks_rewards_against_its_batch_mean():
    ema = Running(decay=0.5)
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
    ~+5 to every sample. Here: mean 0 per task and |a| <= sqrt(N - 1) (running_advantages' bound), on every batch."""
    n, groups = 8, 8
    torch.manual_seed(0)
    for kind in ("ema", "adaptive"):
        running = Running(0.9, state={"P:": {"mean": 0.4, "spread": 0.01**2, "var": 0.05**2}})
        for step in range(5):
            level = 0.5 + 0.03 * torch.randn(groups, 1)  # the batch's prompts, 0.1 above e = 0.4 on average
            rewards = (level + 0.02 * torch.randn(groups, n)).flatten()
            out = running(kind, rewards, ["P:"] * (n * groups), n)
            a = out.advantages
            assert abs(a.mean().item()) < 1e-4, (kind, step)
            assert a.abs().max().item() <= math.sqrt(n * groups - 1), (kind, step)
            assert 0.3 < a.std(correction=0).item() <= 1.0 + 1e-3  # s >= the batch's spread of r - b - c
            naive = (rewards - 0.4) / (0.02 + EPS)  # the old formula, for contrast
            assert naive.mean().item() > 3.0


def test_adaptive_baseline_weighs_the_group_mean_by_its_noise():
    adaptive = Running(decay=0.5, state={"P:": {"mean": 0.0, "spread": 1.0}})
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
    assert batch[3]["B"] == pytest.approx((0.2 - b_mean) / (0.5 + EPS))  # group 2's B: was 0 against itself
    assert group[3]["B"] == pytest.approx(0.0)
    assert sum(r["E"] for r in batch if r is not None) == pytest.approx(0.0, abs=1e-6)


def test_ema_baseline_in_the_trainer_tracks_the_rewards_it_scored(model_dir, tmp_path):
    """The trainer's ema advantages are running_advantages' of the rewards it scored, centred; its state is the
    RunState's."""
    trainer = make_trainer(model_dir, str(tmp_path), baseline="ema", baseline_ema_decay=0.5)
    trainer.model.train()
    rows = generation_rows(trainer, 1)  # one group of "P: e2e4 M:"
    first = trainer.score(rows)
    r1 = torch.tensor(file_reward(None, completion_texts(trainer, first)))
    assert trainer.run.baseline["P:"]["mean"] == pytest.approx(r1.mean().item(), abs=1e-6)
    expected = Running(0.5)("ema", r1, ["P:"] * 4, 4).advantages
    assert torch.allclose(first["advantages"], expected, atol=1e-4)
    assert first["advantages"].mean().abs().item() < 1e-4


# ---- value baseline ----


def test_gae_on_a_known_sequence_matches_a_hand_computation():
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    advantages, returns = value.gae(torch.tensor([1.0]), values, mask, gamma=0.9, lam=0.8)
    a2 = 1.0 - 0.1  # the reward at the last token, nothing after it
    a1 = (0.9 * 0.1 - 0.2) + 0.9 * 0.8 * a2
    a0 = (0.9 * 0.2 - 0.5) + 0.9 * 0.8 * a1
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert returns[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.1, 0.0])
    mc, _ = value.gae(torch.tensor([1.0]), values, mask, gamma=1.0, lam=1.0)  # lambda 1: reward minus value
    assert mc[0, :3].tolist() == pytest.approx([0.5, 0.8, 0.9])


def test_token_rewards_put_each_field_term_where_the_field_ends():
    from rookworld_trl.grpo.credit import token_layout

    layout = token_layout([" e2", "e4", " d2d4", " ", "E:", " 0.3", " B", ":", " e2e4", "<eos>", "<eos>"])
    terms = {"M": 0.3, "E": 0.05, "B": 0.4, "moves": [0.1, 0.12], "best_slot": 0}
    mask = torch.tensor([[1] * 10 + [0], [1] * 3 + [0] * 8])
    out = value.token_rewards(torch.tensor([0.95, 0.5]), mask, [terms, None], [layout, layout])
    assert out[0].tolist() == pytest.approx(
        [0, 0.1, 0.12, 0.3 - 0.22, 0, 0.05, 0, 0, 0, 0.4 + 0.2, 0]
    )  # B: at its last token (EOS), with the 0.2 left
    assert out[0].sum().item() == pytest.approx(0.95) and out[1].tolist() == pytest.approx(
        [0, 0, 0.5] + [0] * 8
    )
    advantages, returns = value.gae(
        out, torch.zeros(2, 11), mask, 1.0, 1.0
    )  # V = 0: returns are rewards to go
    assert returns[0, 0].item() == pytest.approx(0.95) and returns[0, 2].item() == pytest.approx(0.95 - 0.1)


def test_value_loss_decreases_over_a_few_steps(model_dir, tmp_path):
    trainer = make_trainer(
        model_dir,
        str(tmp_path),
        value_baseline=True,
        value_coef=1.0,
        value_learning_rate=0.005,
        learning_rate=1e-12,
    )
    trainer.reward_funcs[0] = constant  # returns of 1: the head must learn them from 0
    trainer.run.value_started = True  # (else its first batch sets the bias to 1 at once)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    inputs = trainer.score(generation_rows(trainer, 1))
    # warm-up: constant returns have no variance to explain, so the batch keeps the group's advantages
    assert inputs["advantages"].shape == inputs["completion_ids"].shape[:1]
    assert trainer.metrics.values("value/gae_used") == [0.0]
    optimizer = trainer.create_optimizer()
    losses = trainer.metrics.values("value/loss")
    for _ in range(6):
        trainer.compute_loss(trainer.model, inputs).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert len(losses) == 6 and losses[0] > 0
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)) and losses[-1] < 0.5 * losses[0]


def test_a_value_head_leaves_the_random_stream_as_it_was():
    """Adding the head must not change what the policy samples: while its gate is closed, a value run is the
    group baseline's run (issue 33's first gated runs drew other samples from step 1: Linear's random init)."""
    torch.manual_seed(0)
    value.ValueHead(192)
    after_head = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after_head)
    assert value.ValueHead(192).weight.abs().sum() == 0


def test_value_head_starts_at_the_mean_return(model_dir, tmp_path):
    trainer = make_trainer(model_dir, str(tmp_path), value_baseline=True)
    trainer.reward_funcs[0] = constant
    trainer.model.train()
    trainer.score(generation_rows(trainer, 1))
    assert trainer.value_head.bias.item() == pytest.approx(1.0) and trainer.metrics.values("value/mean") == [
        pytest.approx(1.0)
    ]


def test_value_head_past_its_warm_up_gives_centred_gae_advantages_and_clips_its_own_gradient(
    model_dir, tmp_path
):
    trainer = make_trainer(
        model_dir,
        str(tmp_path),
        value_baseline=True,
        value_warmup_ev=-1e9,
        value_max_grad_norm=0.01,
        value_coef=1e3,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    inputs = trainer.score(generation_rows(trainer, 2))
    assert trainer.metrics.values("value/gae_used") == [1.0]
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
    head_norm = trainer.metrics.values("value/grad_norm")[-1]
    assert head_norm > 0.01  # a loss weighted 1000: a large gradient, clipped before the step on its own
    assert policy_norm.item() < head_norm  # the head's gradient never enters the policy's norm


def test_value_head_and_running_baseline_come_back_on_resume(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path / "a", value_baseline=True)
    with torch.no_grad():
        trainer.value_head.bias.fill_(0.25)
    trainer.run.baseline = {"P:": {"mean": 0.5, "spread": 0.1}}
    trainer.checkpoint_written(str(tmp_path))
    resumed = make_trainer(model_dir, tmp_path / "b", value_baseline=True)
    resumed.on_resume(str(tmp_path))
    assert resumed.value_head.bias.item() == 0.25
    assert resumed.run.baseline == {"P:": {"mean": 0.5, "spread": 0.1}}


# ---- 30 steps of each baseline on the embedded model ----

LEGAL_BEST = "eval/policy/greedy/legal_best_move"


def thirty_steps(out, *flags: str) -> dict:
    """30 steps of the main job's recipe on the embedded model (seed 0) -> its metrics.jsonl rows with the
    held-out legal best move (200 positions, greedy) of step 30. Without the recipe's tactics replay: the baselines
    shape the RL part, and with the replay on, adaptive ended 5 points under group (52.5% vs 57.5%, twice; an
    interaction not yet measured on seeds: docs/EXPERIMENTS.md, "No harm")."""
    import json

    from tiny_grpo import ROOT

    argv = ["--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--output_dir", str(out),
            "--max_steps", "30", "--eval_samples", "0", "--eval_every_steps", "30", "--eval_every_samples", "200",
            "--save_steps", "30", "--print_completions_every", "0", "--disable_tqdm", "true",
            "--tactics_replay_coef", "0", *flags]  # fmt: skip
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
    with the recipe's field credit, ends 30 steps near the group baseline's run on the same 200 held-out
    positions: ema and adaptive within 3 points; the value head, using GAE from the first step (no warm-up to
    hide behind), within 10, since forced GAE costs ~8 points over 150 steps (docs/EXPERIMENTS.md, issue 33:
    the warm-up gate exists for that), far from the collapse this guards against. ~4 min each on 2 cores,
    plus the group run once."""
    run = thirty_steps(tmp_path / "run", *flags)
    slack = 0.10 if "--value_baseline" in flags else 0.03
    assert run["legal_best"] >= group_run["legal_best"] - slack, (run["legal_best"], group_run["legal_best"])
    steps = [r for r in run["rows"] if "loss" in r]
    if "--value_baseline" in flags:
        assert all(r["value/gae_used"] == 1.0 for r in steps)
        assert max(r["value/grad_norm"] for r in steps) < 100.0
