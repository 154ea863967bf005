"""A non-finite step names the quantity that went non-finite first (grpo/guard.py): rewards,
advantages, the batch's log-probs and ratios, the policy's log-probs and the terms the loss builds from them, the
loss, or which parameter's gradient. Planted one kind per step in a tiny GRPO run on CPU.

    .venv/bin/pytest tests/test_nonfinite.py
"""

from __future__ import annotations

import logging

import pytest
import torch
from tiny_grpo import make_trainer

from rookworld_trl.grpo.guard import first_non_finite_input, first_non_finite_policy_term
from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer

NAN = float("nan")


def batch(**tensors) -> dict:
    base = {"completion_mask": torch.tensor([[1, 1, 0], [1, 0, 0]]), "advantages": torch.tensor([0.5, -0.5])}
    return {**base, **tensors}


def test_the_first_non_finite_input_is_named_in_the_order_the_step_makes_them():
    logps = torch.full((2, 3), -1.0)
    assert first_non_finite_input(torch.tensor([[1.0, NAN]]), [batch()]) is None  # NaN: a skipped reward
    assert first_non_finite_input(torch.tensor([[float("-inf"), 1.0]]), [batch()]) == "rewards"
    padded = logps.clone()
    padded[1, 2] = NAN  # a padding position: the loss masks it
    assert first_non_finite_input(None, [batch(old_per_token_logps=padded)]) is None
    bad = logps.clone()
    bad[0, 1] = NAN
    assert first_non_finite_input(None, [batch(), batch(ref_per_token_logps=bad)]) == "reference log-probs"
    both = batch(advantages=torch.tensor([NAN, 0.0]), sampling_per_token_logps=bad)
    assert first_non_finite_input(None, [both]) == "sampler log-probs"  # made before the advantages
    ratio = batch(importance_sampling_ratio=torch.tensor([[1.0], [float("inf")]]))
    assert first_non_finite_input(None, [ratio]) == "importance sampling ratio"
    assert first_non_finite_policy_term(bad, batch()) == "policy log-probs"
    assert (
        first_non_finite_policy_term(logps, batch(ref_per_token_logps=logps + 200.0)) == "KL to the reference"
    )


class Planted(RookWorldGRPOTrainer):
    """Plants PLAN[step] into the step's scored batch (or its loss, or a gradient)."""

    PLAN = {
        1: "rewards", 2: "advantages", 3: "reference log-probs", 4: "old log-probs", 5: "policy/old ratio",
        6: "importance sampling ratio", 7: "policy log-probs", 8: "loss", 9: "gradient",
    }  # fmt: skip

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        kind, logps = self.PLAN.get(self.state.global_step + 1), output["ref_per_token_logps"]
        poisoned = logps.clone()
        poisoned[0, 0] = NAN
        if kind == "rewards":
            # the rewards of the batch, as the guard keeps them
            self.guard.scored_rewards[0, 0] = float("inf")
            output["advantages"] = output["advantages"] * NAN
        elif kind == "advantages":
            output["advantages"] = output["advantages"] * NAN
        elif kind == "reference log-probs":
            output["ref_per_token_logps"] = poisoned
        elif kind == "old log-probs":
            output["old_per_token_logps"] = poisoned
        elif kind == "policy/old ratio":  # finite, but exp(logp - old) overflows
            output["old_per_token_logps"] = logps - 1e4
        elif kind == "importance sampling ratio":  # as the trainer applies it: multiplied into the advantages
            output["importance_sampling_ratio"] = torch.full_like(logps, float("inf"))
            output["advantages"] = output["advantages"].unsqueeze(1) * output["importance_sampling_ratio"]
        elif kind == "policy log-probs":
            with torch.no_grad():
                self.model.transformer.ln_f.weight[0] = NAN  # the rollback restores it
        elif kind == "gradient":
            self.model.transformer.h[1].mlp.c_fc.weight.register_hook(self._once_nan)
        return output

    def _once_nan(self, grad):
        self.model.transformer.h[1].mlp.c_fc.weight._backward_hooks.clear()
        return grad * NAN

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        return (
            loss * NAN
            if self.model.training and self.PLAN.get(self.state.global_step + 1) == "loss"
            else loss
        )


@pytest.mark.integration
def test_the_guard_names_each_planted_non_finite_quantity(model_dir, tmp_path, caplog):
    trainer = make_trainer(
        model_dir, tmp_path, trainer_cls=Planted, max_steps=10, beta=0.01, nan_max_retries=20
    )
    with caplog.at_level(logging.WARNING, logger="rookworld_trl.grpo.guard"):
        trainer.train()
    named = [r.getMessage().split("first non-finite: ")[1].split(") at step")[0] for r in caplog.records
             if "first non-finite" in r.getMessage()]  # fmt: skip
    # named before clipping, which scales every gradient by the (NaN) norm
    expected = [*Planted.PLAN.values()][:-1] + ["gradient of transformer.h.1.mlp.c_fc.weight"]
    assert named == expected, named
    logged = {
        k.split("/", 2)[2]
        for row in trainer.state.log_history
        for k in row
        if k.startswith("guard/non_finite/")
    }
    assert logged == set(Planted.PLAN.values()), logged
    assert trainer.run.nan_recoveries == 9 and trainer.halt_reason is None
