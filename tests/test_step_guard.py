"""The step guard (rookworld_trl/grpo/guard.py) and its three parts, each alone: numerical faults and rollback,
KL control (kl.py), snapshots; then the guard inside a tiny GRPO run.

    .venv/bin/pytest tests/test_step_guard.py          (-m unit: the parts alone, no Trainer)
"""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest
import torch
from tiny_grpo import make_trainer, train_logs, trainable
from transformers import TrainerCallback

from rookworld_trl.grpo import guard as faults_module
from rookworld_trl.grpo.guard import Snapshots, StepFaults, across_ranks, roll_back
from rookworld_trl.grpo.kl import adapt_beta, kl_guard
from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer
from rookworld_trl.training import checkpoints

KL_ARGS = dict(beta=0.01, adaptive_kl=True, kl_target=0.1, kl_horizon=1, beta_min=1e-3, beta_max=0.04,
               kl_warn=1.0, kl_stop=5.0)  # fmt: skip


def linear_and_adam(lr: float = 0.1):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def backward_step(model, optimizer, scale: float = 1.0) -> torch.Tensor:
    optimizer.zero_grad()
    loss = scale * model(torch.ones(4, 3)).pow(2).sum()
    loss.backward()
    return loss


# ---- the parts alone ----


def test_step_faults_pass_a_healthy_step_and_keep_its_figures():
    model, optimizer = linear_and_adam()
    faults = StepFaults()
    faults.record_step(backward_step(model, optimizer), [0.01])
    faults.judge_update(optimizer, list(model.parameters()), kl_stop=5.0)
    optimizer.step()
    faults.judge_weights(list(model.parameters()))
    assert faults.bad is None and faults.mean_kl() == 0.01 and faults.norm_before > 0
    faults.accept()
    assert faults.history["loss"] == [faults.measured["loss"]] and len(faults.history["gradient norm"]) == 1


@pytest.mark.parametrize(
    "scale, kl, bad",
    [(float("nan"), 0.0, "loss"), (1.0, 60.0, "diverged: KL 60 > 10 x kl_stop 5.0")],
)
def test_step_faults_drop_the_gradients_of_a_bad_step(scale, kl, bad):
    model, optimizer = linear_and_adam()
    faults = StepFaults()
    faults.record_step(backward_step(model, optimizer, scale), [kl])
    faults.judge_update(optimizer, list(model.parameters()), kl_stop=5.0)
    assert faults.bad == bad and all(p.grad is None for p in model.parameters())
    assert faults.blame_previous is (kl > 50.0)


def test_step_faults_find_a_blown_up_update_and_a_spike():
    model, optimizer = linear_and_adam()
    faults = StepFaults()
    faults.record_step(backward_step(model, optimizer), [])
    faults.judge_update(optimizer, list(model.parameters()), kl_stop=5.0)
    with torch.no_grad():
        model.weight.mul_(1e7)  # an update that left |weight| far above WEIGHT_LIMIT
    faults.judge_weights(list(model.parameters()))
    assert faults.bad.startswith("diverged: a weight reached")
    faults.reset()
    faults.history = {"loss": [1.0] * 5, "gradient norm": [1.0] * 5}
    faults.record_step(torch.tensor(5000.0), [])
    backward_step(model, optimizer)
    faults.judge_update(optimizer, list(model.parameters()), kl_stop=5.0)
    assert faults.bad == "diverged: loss 5000 is 5e+03x the median of recent steps"


def test_kl_control_adapts_beta_within_bounds_and_stops_above_kl_stop(caplog):
    a = SimpleNamespace(**KL_ARGS)
    beta = a.beta
    for _ in range(3):  # far above the target: x2 a step, up to beta_max
        beta = adapt_beta(beta, 1.0, a.kl_target, a.kl_horizon, a.beta_min, a.beta_max)
    assert beta == 0.04
    assert adapt_beta(beta, 0.01, a.kl_target, a.kl_horizon, a.beta_min, a.beta_max) == 0.02
    with caplog.at_level(logging.WARNING, logger="rookworld_trl.grpo.kl"):
        assert kl_guard(2.0, a, step=3, output_dir="out", warned=False) is None  # above kl_warn: a warning
        assert kl_guard(3.0, a, step=4, output_dir="out", warned=True) is None  # ... once per excursion
        halt = kl_guard(6.0, a, step=5, output_dir="out", warned=True, rolled_back_to=2)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert (
        halt.startswith("KL guard: KL 6 > kl_stop 5.0 at step 5") and "(rolled back to step 2 first)" in halt
    )


def test_snapshots_roll_back_past_the_last_update_only_when_asked():
    model, optimizer = linear_and_adam()
    snapshots = Snapshots()
    snapshots.take(model, optimizer, step=0, beta=0.01)
    weights = [model.weight.detach().clone()]
    for step in (1, 2):
        backward_step(model, optimizer)
        optimizer.step()
        snapshots.take(model, optimizer, step=step, beta=0.01 * (step + 1))
        weights.append(model.weight.detach().clone())
    assert (snapshots.newest.step, snapshots.older.step) == (2, 1)
    target = snapshots.rollback_target(past_last_update=True)
    assert target.step == 1 and snapshots.older is None and target.extra == {"beta": 0.02}
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    for group in optimizer.param_groups:
        group["lr"] = 0.05  # the schedule's LR now: kept, then cut
    roll_back(target, model, optimizer, None, lr_factor=0.5)
    assert torch.equal(model.weight, weights[1]) and optimizer.param_groups[0]["lr"] == 0.025
    assert snapshots.rollback_target(past_last_update=True).step == 1  # no older one left: the newest


def test_across_ranks_leaves_the_values_of_one_process_untouched(monkeypatch):
    values = [0.1 + 0.2, float("inf"), 3.0]
    assert across_ranks(values, "max") == values and across_ranks(values) == values  # no process group
    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert across_ranks(values, "sum") == values  # a group of one: no all-reduce, no float64 round trip
        monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)  # the all-reduce itself, on a group of one
        assert across_ranks([1.5, 2.0], "sum") == [1.5, 2.0] and across_ranks([1.5, -2.0], "max") == [
            1.5,
            -2.0,
        ]
    finally:
        dist.destroy_process_group()


def other_rank(monkeypatch, loss=0.0, kl=(), bad=0.0, bad_weights=0.0):
    """Two ranks: this one and a simulated other, whose loss, KL values and bad flag join this rank's sums, its
    gradient norm is this rank's, and its weights after the update are bad when bad_weights."""
    monkeypatch.setattr(faults_module, "world_size", lambda: 2)

    def reduce(values, op="sum"):
        if op == "sum":  # judge_update: loss, KL sum, KL count, bad flag
            return [values[0] + loss, values[1] + sum(kl), values[2] + len(kl), values[3] + bad]
        if len(values) == 1:  # judge_update: the gradient norm
            return list(values)
        return [max(values[0], bad_weights), values[1]]  # judge_weights: bad flag, blame_previous

    monkeypatch.setattr(faults_module, "across_ranks", reduce)


def test_step_faults_judge_on_the_ranks_common_figures(monkeypatch):
    model, optimizer = linear_and_adam()
    faults = StepFaults()
    faults.history = {"loss": [1.0] * 5, "gradient norm": [1e6] * 5}
    other_rank(monkeypatch, loss=1e7, kl=[0.3, 0.5])  # the other rank alone sees a loss spike
    faults.record_step(backward_step(model, optimizer), [0.1])
    faults.judge_update(optimizer, list(model.parameters()), kl_stop=5.0)
    assert faults.bad.startswith("diverged: loss 5e+06") and all(p.grad is None for p in model.parameters())
    assert faults.mean_kl() == pytest.approx(0.3)  # the mean over both ranks' micro-batches
    faults.reset()
    other_rank(monkeypatch, bad=1.0)  # a non-finite loss or gradient on the other rank
    faults.record_step(backward_step(model, optimizer), [])
    faults.judge_update(optimizer, list(model.parameters()), kl_stop=5.0)
    assert faults.bad == "loss or gradient on another rank"
    faults.reset()
    other_rank(monkeypatch, bad_weights=1.0)  # the update left bad weights on the other rank only
    faults.record_step(backward_step(model, optimizer), [])
    faults.judge_update(optimizer, list(model.parameters()), kl_stop=5.0)
    assert faults.bad is None
    optimizer.step()
    faults.judge_weights(list(model.parameters()))
    assert faults.bad == "diverged: bad weights after the update on another rank"


# ---- in a GRPO run ----


def test_adapt_beta_rule():
    kw = dict(target=0.1, horizon=2, beta_min=1e-3, beta_max=0.05)
    assert adapt_beta(0.01, kl=0.2, **kw) == pytest.approx(0.01 * 2**0.5)
    assert adapt_beta(0.01, kl=0.05, **kw) == pytest.approx(0.01 / 2**0.5)
    assert adapt_beta(0.01, kl=0.149, **kw) == 0.01 and adapt_beta(0.01, kl=0.067, **kw) == 0.01
    assert adapt_beta(0.049, kl=10.0, **kw) == 0.05 and adapt_beta(0.0011, kl=0.0, **kw) == 1e-3


def test_adaptive_kl_follows_measured_kl(model_dir, tmp_path):
    kw = dict(adaptive_kl=True, beta=0.01, kl_target=1e-3, kl_horizon=1, beta_min=1e-4, beta_max=1.0)
    trainer = make_trainer(model_dir, tmp_path, max_steps=5, learning_rate=5e-2, **kw)
    trainer.train()
    logs = train_logs(trainer)
    beta = 0.01
    for row in logs:  # the logged beta is the rule applied to the KL TRL measured in that step
        beta = adapt_beta(beta, row["kl"], 1e-3, 1, 1e-4, 1.0)
        assert row["beta"] == pytest.approx(beta)
    assert logs[0]["kl"] == 0.0 and logs[0]["beta"] == pytest.approx(0.005)  # policy == reference at step 1
    assert max(row["kl"] for row in logs) > 1.5e-3 and trainer.beta > 0.005  # it moved up once KL grew
    assert trainer.beta == pytest.approx(logs[-1]["beta"])


def test_kl_guard_saves_and_stops(model_dir, tmp_path):
    trainer = make_trainer(
        model_dir, tmp_path, max_steps=6, learning_rate=5e-2, beta=0.01, kl_warn=1e-7, kl_stop=1e-6
    )
    trainer.train()
    step = trainer.state.global_step
    assert 2 <= step < 6, "step 1 has KL 0; a later step must trip the guard"
    assert "kl_stop" in trainer.halt_reason and "learning_rate" in trainer.halt_reason
    assert checkpoints.is_complete(str(tmp_path / f"checkpoint-{step}"))
    assert not (tmp_path / "stable").exists(), "a run-away step is not a stable checkpoint"


# ---- NaN / Inf recovery ----


class NaNLossTrainer(RookWorldGRPOTrainer):
    """Test hook: the loss of the optimizer steps listed in nan_steps (1-based) becomes NaN."""

    nan_steps: tuple[int, ...] = ()

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        return loss * float("nan") if self.state.global_step + 1 in self.nan_steps else loss


class RecordWeights(TrainerCallback):
    def __init__(self):
        self.after_step = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after_step[state.global_step] = trainable(model)


def test_nan_loss_skips_update_restores_and_cuts_lr(model_dir, tmp_path):
    NaNLossTrainer.nan_steps = (3,)
    recorder = RecordWeights()
    trainer = make_trainer(model_dir, tmp_path, [recorder], trainer_cls=NaNLossTrainer, max_steps=5)
    trainer.train()
    assert trainer.halt_reason is None and trainer.state.global_step == 5
    for name, value in recorder.after_step[3].items():  # step 3 left the weights as step 2 had them
        assert torch.equal(value, recorder.after_step[2][name]), name
    assert not torch.equal(
        recorder.after_step[4]["transformer.wte.weight"], recorder.after_step[3]["transformer.wte.weight"]
    )
    assert all(all(torch.isfinite(v).all() for v in w.values()) for w in recorder.after_step.values())
    lrs = [row["learning_rate"] for row in train_logs(trainer)]
    assert (
        lrs[:3] == [1e-3] * 3 and lrs[3:] == [pytest.approx(5e-4)] * 2
    )  # logged LR is the one used in the step
    assert [row["nan_recoveries"] for row in train_logs(trainer)] == [0, 0, 1, 1, 1]
    saved = torch.load(tmp_path / "nan_batches" / "step-3-rank0.pt", weights_only=True)
    assert saved["reason"] == "loss" and saved["global_step"] == 3
    assert saved["micro_batches"][0]["completion_ids"].shape[0] == 4


class CorruptWeights(TrainerCallback):
    """Test hook: right after the optimizer step of the listed steps, a trainable weight turns NaN."""

    def __init__(self, steps):
        self.steps = steps

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 in self.steps:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))


def test_nan_weights_roll_back_then_give_up(model_dir, tmp_path):
    recorder = RecordWeights()
    trainer = make_trainer(
        model_dir, tmp_path, [CorruptWeights({2, 3, 4}), recorder], max_steps=8, nan_max_retries=2
    )
    trainer.train()
    assert trainer.state.global_step == 4, "retries 1 and 2 at steps 2 and 3, the third failure stops"
    assert (
        "NaN/Inf recovery gave up" in trainer.halt_reason
        and "weights are those of step 1" in trainer.halt_reason
    )
    final = trainable(trainer.model)
    assert all(torch.isfinite(v).all() for v in final.values())
    assert all(torch.equal(final[n], recorder.after_step[1][n]) for n in final)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**3)
    assert sorted(os.listdir(tmp_path / "nan_batches")) == [f"step-{s}-rank0.pt" for s in (2, 3, 4)]


def test_lora_snapshot_holds_only_the_adapter_and_recovers(model_dir, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM")
    trainer = make_trainer(
        model_dir,
        tmp_path,
        [CorruptWeights({2})],
        peft_config=lora,
        beta=0.01,
        ref_model_device="cpu",
        max_steps=3,
    )
    assert (
        trainer.ref_model is None and trainer.ref_device is None
    )  # the reference is the adapter-disabled policy
    trainer.train()
    assert trainer.halt_reason is None and trainer.run.nan_recoveries == 1
    names = list(trainer.guard.snapshots.newest.params)
    assert names and all("lora_" in n for n in names)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
