"""The trainer side of the RL options (fields and formulas: rookworld_trl/grpo/rl_config.py): a mixin of
RookWorldGRPOTrainer, over trl_compat.GRPOSeams' hooks.

- kl_estimator forward/reverse/symmetric: TRL's loss runs with beta 0 (no k3 term); the exact KL (kl.py) of the
  policy's tapped hidden states against the reference's (tapped while TRL scores the batch) is added as
  beta x KL, normalised as TRL normalises its loss for the loss_type; logged as `kl` (what adaptive KL and
  the KL guard read) and `kl/<estimator>`.
- baseline ema/adaptive and value_baseline (GAE): `shape_advantages` replaces TRL's advantages from the
  batch's rewards (trl_compat: scored_rewards); the value head's loss joins `compute_loss`.
- dynamic_sampling: `generate_batch` scores fresh prompts while zero-std groups remain (dynamic_sampling.py).
"""

from __future__ import annotations

import json
import os

import torch
from accelerate.utils import gather_object
from safetensors.torch import load_file, save_file

from rookworld_trl.grpo import advantages as adv
from rookworld_trl.grpo import dynamic_sampling as ds
from rookworld_trl.grpo.kl import HiddenTap, backbone_of, completion_hidden, lm_head_of, per_token_kl
from rookworld_trl.training import checkpoints

RL_STATE_FILE = "rl_options_state.json"  # running baselines, inside each checkpoint
VALUE_HEAD_FILE = "value_head.safetensors"


class RLOptionsTrainer:
    """Mixin (before GRPOSeams): kl_estimator, baseline, value_baseline, dynamic_sampling."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        self.running_baseline = adv.RunningBaseline(a.baseline_ema_decay)
        self.exact_kl = a.kl_estimator != "k3"
        if self.exact_kl and self.ref_model is None:
            raise ValueError(
                f"kl_estimator {a.kl_estimator!r} needs a separate reference model: not with PEFT"
            )
        self.ref_tap = HiddenTap(self.ref_model) if self.exact_kl else None
        self.policy_tap = HiddenTap(self.model) if self.exact_kl or a.value_baseline else None
        self.value_head = None
        if a.value_baseline:
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError(
                    "value_baseline is not supported with DeepSpeed/FSDP: set value_baseline: false"
                )
            hidden = backbone_of(self.model).config.hidden_size
            self.value_head = adv.ValueHead(hidden).to(self.accelerator.device)
        if a.dynamic_sampling:
            ds.check_trainer(self)

    # ---- sampling and advantages ----

    def generate_batch(self, inputs):
        output = self.score(inputs)
        if self.args.dynamic_sampling and self.model.training:
            output = ds.refill(self, inputs, output)
        return output

    def score(self, inputs):
        if self.ref_tap is None:
            return super().score(inputs)
        with self.ref_tap.recording():  # the reference's forward inside TRL's scoring
            return super().score(inputs)

    def shape_advantages(self, output):
        output = super().shape_advantages(output)
        width = output["completion_ids"].shape[1]
        if self.ref_tap is not None and self.ref_tap.records:
            hidden = completion_hidden(self.ref_tap.records, width)
            output["ref_hidden"] = hidden.detach().to(output["completion_ids"].device)
        a = self.args
        if not self.model.training or (a.baseline == "group" and not a.value_baseline):
            return output
        n, start = self.num_generations, self.accelerator.process_index * len(output["completion_ids"])
        local = slice(start, start + len(output["completion_ids"]))
        rewards = adv.row_rewards(self.scored_rewards, self.reward_weights)
        tasks = [adv.task_of(p) for p in gather_object(self.scored_prompts)]
        scale = adv.reward_scale(rewards, tasks, n, self.scale_rewards)
        if a.value_baseline:
            mask = output["completion_mask"] * output.get("tool_mask", 1)
            values = self.rollout_values(output)
            advantages, returns = adv.gae(rewards[local], values, mask, a.gae_gamma, a.gae_lambda)
            output["advantages"] = advantages / (scale[local].unsqueeze(1) + adv.EPS)
            output["returns"] = returns
            self.log_metric("value/mean", float((values * mask).sum() / mask.sum().clamp(min=1)))
        else:
            baseline = self.running_baseline(a.baseline, rewards, tasks, n)
            output["advantages"] = adv.baseline_advantages(rewards, baseline, scale)[local]
            for task, state in self.running_baseline.state.items():
                self.log_metric(f"baseline/{task.rstrip(':')}", state["mean"])
        return output

    @torch.no_grad()
    def rollout_values(self, output) -> torch.Tensor:
        """(B, T) value of the state before each completion token, by the policy as it sampled them."""
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        width, step = output["completion_ids"].shape[1], self.args.per_device_train_batch_size
        backbone, values = backbone_of(self.model), []
        for i in range(0, len(ids), step):
            with self.accelerator.autocast():
                hidden = backbone(
                    input_ids=ids[i : i + step], attention_mask=mask[i : i + step], use_cache=False
                )
            values.append(self.value_head(hidden.last_hidden_state[:, -width - 1 : -1]))
        return torch.cat(values).float()

    # ---- the loss ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.policy_tap is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        beta = self.beta
        self.beta = 0.0 if self.exact_kl else beta  # TRL adds no k3 term; ours replaces it below
        try:
            with self.policy_tap.recording() as records:
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self.beta = beta
        hidden = completion_hidden(records, inputs["completion_ids"].shape[1])
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        if self.exact_kl:
            loss = loss + self.kl_term(model, hidden, inputs, mask)
        if self.value_head is not None and "returns" in inputs:
            loss = loss + self.value_term(hidden, inputs["returns"], mask)
        return loss

    def kl_term(self, model, hidden, inputs, mask) -> torch.Tensor:
        """beta x the exact KL, normalised like TRL's loss; logs `kl` and `kl/<estimator>`."""
        est = self.args.kl_estimator
        ref_head = lm_head_of(self.ref_model)
        kl = per_token_kl(
            hidden, lm_head_of(model), inputs["ref_hidden"], ref_head, mask, est, self.temperature
        )
        if self.model.training:
            totals = self.accelerator.reduce(
                torch.stack([(kl * mask).sum(), mask.sum().float()]).detach(), "sum"
            )
            value = float(totals[0] / totals[1].clamp(min=1.0))
            self.log_metric("kl", value)
            self.log_metric(f"kl/{est}", value)
        return self.beta * self.normalise_like_trl(kl, mask, inputs)

    def normalise_like_trl(self, per_token, mask, inputs) -> torch.Tensor:
        """Aggregate a (B, T) per-token loss term as GRPOTrainer aggregates its loss for `loss_type` (the KL it
        adds per token is aggregated so); tests/test_rl_options.py checks this against TRL's own k3 term."""
        training = self.model.training
        accumulation = self.current_gradient_accumulation_steps if training else 1.0
        kind, masked = self.loss_type, per_token * mask
        if kind in ("grpo", "sapo"):
            return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
        if kind == "bnpo":
            return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
        if kind == "dr_grpo":
            return masked.sum() / (per_token.size(0) * self.max_completion_length) / accumulation
        if kind in ("cispo", "dapo", "vespo"):
            normaliser = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if training:
                normaliser = normaliser * accumulation / self.args.steps_per_generation
            return masked.sum() / normaliser
        if kind == "luspo":
            return masked.sum(-1).mean() / accumulation
        raise ValueError(f"kl_estimator {self.args.kl_estimator!r}: unknown loss_type {kind!r}")

    def value_term(self, hidden, returns, mask) -> torch.Tensor:
        """value_coef x 0.5 (V - return)^2 averaged over completion tokens (gradient to the head only)."""
        values = self.value_head(hidden)
        loss = 0.5 * (((values - returns) ** 2) * mask).sum() / mask.sum().clamp(min=1.0)
        if self.model.training:
            self.log_metric("value/loss", float(loss.detach()))
        return self.args.value_coef * loss / self.current_gradient_accumulation_steps

    def training_step(self, model, inputs, num_items_in_batch):
        kl = self.metric_values("kl")
        seen = len(kl)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not self.exact_kl:
            for value in list(kl[seen:]):  # TRL's k3, also under its estimator's name
                self.log_metric("kl/k3", value)
        return loss

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        head = self.value_head
        if head is not None and not any(
            p is head.weight for g in optimizer.param_groups for p in g["params"]
        ):
            optimizer.add_param_group(
                {"params": list(head.parameters()), "lr": self.args.value_learning_rate, "weight_decay": 0.0}
            )
        return optimizer

    # ---- checkpoints ----

    def checkpoint_written(self, path):
        super().checkpoint_written(path)
        checkpoints.write_json_atomic(
            os.path.join(path, RL_STATE_FILE), {"baseline": self.running_baseline.state}
        )
        if self.value_head is not None:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                os.path.join(path, VALUE_HEAD_FILE),
            )

    def on_resume(self, checkpoint):
        super().on_resume(checkpoint)
        path = os.path.join(checkpoint, RL_STATE_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                self.running_baseline.state = json.load(f)["baseline"]
        head = os.path.join(checkpoint, VALUE_HEAD_FILE)
        if self.value_head is not None and os.path.isfile(head):
            self.value_head.load_state_dict(load_file(head, device=str(self.value_head.weight.device)))
