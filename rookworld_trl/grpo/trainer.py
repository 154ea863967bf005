"""RookWorldGRPOTrainer: TRL's GRPOTrainer with our advantages, loss terms, step guard and checkpoint state.
The stage that builds and runs it is rookworld_trl/grpo/stage.py (`python -m rookworld_trl.grpo`).

TRL does the GRPO work (sampling K completions per prompt, group advantages, clipped loss, k3 KL, vLLM, PEFT);
the trainer changes it through the hooks of rookworld_trl/training/trl_compat.py (the one module that touches
TRL's internals), each overridden once, here:
  - `shape_advantages`: TRL's advantages -> ours, top to bottom: the reference's hidden states kept for an exact
    KL; the EMA/adaptive baseline (rl_config.py, advantages.py); field credit of P: answers (`field_credit`,
    credit.py, against the same baseline); the value head's GAE over the fields' rewards once its warm-up ends;
  - `compute_loss`: TRL's clipped loss (its k3 KL term unless an exact estimator replaces it) + beta x the
    exact KL (kl.py) + the value head's loss + supervised replay of A: truths (replay.py);
  - `create_optimizer`: Trainer's, plus the value head's own group and an optimizer hook that clips its gradients;
  - `training_step`: self-play positions mixed into P: prompts (selfplay.py), each micro-batch's loss and KL
    reported to the step guard;
  - the step guard (safety.py: faults.py, kl_control.py, snapshots.py): NaN/divergence rollback, adaptive KL
    and the KL guard. `beta` (what TRL's loss reads) is KLControl's, its one writer;
  - `checkpoint_written` / `on_resume`: our controller state in one JSON file per checkpoint (STATE_FILE), the
    value head beside it; `checkpoint_complete`: the stable/ copy and optional checkpoint pushes;
  - GPT-2 positions from the attention mask when TRL scores left-padded rows, the reference model on its own
    device, the "warmup_cosine_linear" LR schedule, a JSONL metrics file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os

import torch
from accelerate.utils import gather_object

from rookworld_trl.grpo import advantages as adv
from rookworld_trl.grpo import credit
from rookworld_trl.grpo import dynamic_sampling as ds
from rookworld_trl.grpo import rl_options as rl
from rookworld_trl.grpo.config import RookWorldGRPOConfig, compiling
from rookworld_trl.grpo.kl import HiddenTap, completion_hidden, lm_head_of, per_token_kl
from rookworld_trl.grpo.kl_control import KLControl
from rookworld_trl.grpo.replay import Replay, replay_loss
from rookworld_trl.grpo.rollout import check_supported, rollout
from rookworld_trl.grpo.safety import StepGuard
from rookworld_trl.grpo.schedule import warmup_cosine_linear
from rookworld_trl.grpo.selfplay import SelfPlay, SelfPlayCallback
from rookworld_trl.model.loading import gpt2_backbone, use_fused_gelu, use_padding_aware_positions
from rookworld_trl.model.shared_prefix import use_shared_prefix
from rookworld_trl.training import checkpoints, publish
from rookworld_trl.training.interrupt import SaveOnInterrupt
from rookworld_trl.training.metrics_log import JSONLMetricsCallback
from rookworld_trl.training.trl_compat import GRPOSeams, place_ref_model

logger = logging.getLogger(__name__)

STATE_FILE = (
    "rookworld_state.json"  # our controller state inside each checkpoint (beta, rollbacks, baselines)
)


class RookWorldGRPOTrainer(GRPOSeams):
    """GRPOTrainer with our advantages and loss terms, the step guard, ref-model offload and checkpoint state.

    `replay_dataset`: the rows supervised replay draws from (default: `train_dataset`). The stage passes the
    whole training split, so that replay of A: truths works when `mix_env_ratio` leaves no A: prompts to sample.
    `selfplay`: self-play positions to mix into P: prompts (grpo/selfplay.py; None: off). `push_checkpoints`:
    with push_to_hub, upload each complete checkpoint's model files too.
    After `train()` returns, `halt_reason` is None for a normal end, else a message saying why it stopped.
    """

    _trl_kl_off = False  # while TRL's loss runs under an exact kl_estimator, which adds its own KL term

    @property
    def beta(self) -> float:
        """The KL coefficient TRL reads (in scoring: whether to run the reference; in its loss: the k3 term)."""
        return 0.0 if self._trl_kl_off else self.kl_control.beta

    @beta.setter
    def beta(self, value: float) -> None:
        # GRPOTrainer.__init__ sets args.beta, which KLControl already holds: it is beta's one writer
        if value != self.kl_control.beta:
            raise AttributeError("beta is KLControl's: use trainer.kl_control.restore(beta)")

    def __init__(
        self,
        model,
        reward_funcs,
        args: RookWorldGRPOConfig,
        *rest,
        replay_dataset=None,
        selfplay: SelfPlay | None = None,
        push_checkpoints: bool = False,
        **kwargs,
    ):
        # Trainer would push output_dir (stable/, Parquet, engine cache) at every save: publish.py pushes final/
        self.publish_to_hub, args.push_to_hub = args.push_to_hub, False
        self.push_checkpoints = push_checkpoints  # each complete checkpoint's model files too
        self.kl_control = KLControl(args)
        own_sampler = args.generation_backend == "rookworld" and not args.use_vllm
        if own_sampler:
            kwargs["rollout_func"] = rollout
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        self._init_rl_options()
        if own_sampler:
            check_supported(self.args, self.model, self.accelerator)
        self.ref_device = place_ref_model(self, self.args.ref_model_device)
        self.compiled_scoring = compiling(
            self.args
        )  # fixed shapes: pad_to_multiple_of, every position scored
        for model in (self.model, self.ref_model):  # TRL loads the reference itself, not through our loader
            if model is not None:
                use_fused_gelu(model)
        if self.args.padding_aware_positions:
            self._use_padding_aware_positions()
        self.guard = StepGuard(self)
        self.add_callback(self.guard)
        a = self.args
        self.replay = None
        if a.replay_coef > 0:
            rows = self.train_dataset if replay_dataset is None else replay_dataset
            self.replay = Replay(rows, a.replay_task, self.processing_class, a.replay_batch_size, a.seed,
                                 a.process_index, a.pad_to_multiple_of)  # fmt: skip
        self.selfplay = selfplay  # rookworld_trl/grpo/selfplay.py: the policy's own games as P: prompts
        if selfplay is not None:
            self.add_callback(SelfPlayCallback(self))
        self.interrupt = SaveOnInterrupt()
        self.add_callback(self.interrupt)
        if a.metrics_jsonl:
            self.add_callback(JSONLMetricsCallback(os.path.join(a.output_dir, a.metrics_jsonl)))

    def _init_rl_options(self) -> None:
        """The running baseline, the hidden-state taps of an exact KL and the value head, the checks."""
        a = self.args
        self.running_baseline = adv.RunningBaseline(a.baseline_ema_decay)
        self.gae_state: dict = {}  # value_baseline: the running scale of GAE advantages per task
        self.value_started = False  # value_baseline: its bias comes from its first batch or a checkpoint
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
            hidden = gpt2_backbone(self.model).config.hidden_size
            self.value_head = adv.ValueHead(hidden).to(self.accelerator.device)
        if a.dynamic_sampling:
            ds.check_trainer(self)

    @property
    def halt_reason(self) -> str | None:
        """None after a normal end of train(), else why the guard stopped it."""
        return self.guard.halt_reason

    def _use_padding_aware_positions(self) -> None:
        # TRL scores completions with a plain forward that passes no position_ids; GPT-2 would then count the
        # left padding as positions, unlike generate(). TRL builds the reference itself, so hook it here.
        for model in (self.model, self.ref_model):
            if model is not None and gpt2_backbone(model, required=False) is not None:
                use_padding_aware_positions(model)
                if self.args.shared_prefix_scoring:  # it reads the padding-aware positions
                    use_shared_prefix(model)

    # ---- sampling and advantages ----

    def generate_batch(self, inputs):
        output = self.score(inputs)
        if self.args.dynamic_sampling and self.model.training:  # DAPO: zero-std groups swapped for fresh ones
            output = ds.refill(self, inputs, output)
        return output

    def score(self, inputs):
        # an exact KL needs the reference's hidden states, tapped while TRL scores the batch with it
        with self.ref_tap.recording() if self.ref_tap is not None else contextlib.nullcontext():
            return super().score(inputs)

    def shape_advantages(self, output):
        """TRL's scored batch -> the advantages our loss trains on: the EMA/adaptive baseline, field credit of
        P: answers (A: rows keep their sequence advantage), then the value head's GAE once it predicts well."""
        if self.ref_tap is not None and self.ref_tap.records:
            hidden = completion_hidden(self.ref_tap.records, output["completion_ids"].shape[1])
            output["ref_hidden"] = hidden.detach().to(output["completion_ids"].device)
        if not self.model.training:
            return output
        a, sequence, terms, layouts = self.args, None, None, None
        if a.baseline != "group":
            sequence = self._running_advantages(output)
        if a.field_credit:
            terms, layouts = self._field_parts(output["completion_ids"])
            output["advantages"] = self._field_advantages(output["advantages"], terms, layouts, sequence)
        if a.value_baseline:
            rl.value_advantages(self, output, terms, layouts)
        if a.baseline != "group" or a.value_baseline:
            rl.log_advantages(self, output)
        return output

    def _local(self, rows: int) -> slice:
        """This process's rows among every process's (TRL's order)."""
        start = self.accelerator.process_index * rows
        return slice(start, start + rows)

    def _running_advantages(self, output) -> adv.BaselineAdvantages:
        """(r - b - c) / s against the EMA/adaptive baseline (advantages.RunningBaseline), every process's rows."""
        rewards = adv.row_rewards(self.scored_rewards, self.reward_weights)
        tasks = [adv.task_of(p) for p in gather_object(self.scored_prompts)]
        scaled = self.scale_rewards != "none"
        out = self.running_baseline(self.args.baseline, rewards, tasks, self.num_generations, scaled)
        output["advantages"] = out.advantages[self._local(len(output["completion_ids"]))]
        for task, state in self.running_baseline.state.items():
            self.log_metric(f"baseline/{task.rstrip(':')}", state["mean"])
        return out

    def _field_parts(self, completion_ids: torch.Tensor) -> tuple[list, list]:
        """This process's rows: each P: answer's field terms (credit.field_terms; None: A: or unparseable), graded
        again by the policy reward's grader from its memo, and each row's token layout (credit.token_layout)."""
        from rookworld_trl.rewards.functions import policy_components, policy_grader

        texts = self.processing_class.batch_decode(completion_ids.tolist(), skip_special_tokens=False)
        eos = self.processing_class.eos_token
        components = policy_components(
            policy_grader(self.reward_funcs), self.scored_prompts, [t.split(eos, 1)[0] for t in texts]
        )
        terms = [credit.field_terms(c, self.args.reward_shaping) for c in components]
        pieces = self.processing_class.batch_decode(completion_ids.reshape(-1, 1).tolist())
        width = completion_ids.shape[1]
        layouts = [credit.token_layout(pieces[i : i + width]) for i in range(0, len(pieces), width)]
        return terms, layouts

    def _field_advantages(self, sequence, local_terms, layouts, baseline=None) -> torch.Tensor:
        """(B, T) advantages: each listed move and each P: field gets its own verdict's advantage (credit.py),
        against its group, or under an ema/adaptive `baseline` against the same baseline as the sequence."""
        terms = gather_object(local_terms)
        n = self.num_generations
        if baseline is None:
            rewards = adv.row_rewards(self.scored_rewards, self.reward_weights)
            tasks = [adv.task_of(p) for p in gather_object(self.scored_prompts)]
            scale = adv.reward_scale(rewards, tasks, n, self.scale_rewards)
        else:
            scale = baseline.scale
        rows = credit.row_advantages(terms, scale.tolist(), n)  # a group may span processes, as in TRL
        if baseline is not None:
            rows = adv.recentre_fields(rows, terms, baseline.weights, baseline.scale, n)
        return credit.spread(rows[self._local(len(local_terms))], layouts, sequence)

    # ---- the loss ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One micro-batch's loss: TRL's clipped GRPO loss (with its k3 KL term unless an exact kl_estimator
        replaces it) + beta x the exact KL + the value head's loss + supervised replay."""
        training = self.model.training
        if training:
            self.guard.faults.record_inputs(inputs)  # kept until the step ends, to save it if it goes bad
        if self.policy_tap is None:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        else:
            with self.policy_tap.recording() as records, self._without_trl_kl():
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            hidden = completion_hidden(records, inputs["completion_ids"].shape[1])
            mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
            if self.exact_kl:
                loss = loss + self._exact_kl_term(model, hidden, inputs, mask)
            if self.value_head is not None and "returns" in inputs:
                value_loss = rl.value_loss(self.value_head, hidden, inputs["returns"], mask)
                if training:
                    self.log_metric("value/loss", float(value_loss.detach()))
                loss = loss + self.args.value_coef * value_loss / self.current_gradient_accumulation_steps
        if self.replay is not None and training:
            # the replayed rows follow the micro-step count (restored on resume); scaled for accumulation
            # like TRL's own loss, so replay weighs replay_coef whatever gradient_accumulation_steps is
            supervised = replay_loss(model, self.replay.batch(self.micro_step, loss.device))
            self.log_metric("replay_loss", supervised.item())
            loss = loss + self.args.replay_coef * supervised / self.current_gradient_accumulation_steps
        return loss

    @contextlib.contextmanager
    def _without_trl_kl(self):
        """TRL's loss without its k3 term (beta reads 0) when an exact KL replaces it."""
        self._trl_kl_off = self.exact_kl
        try:
            yield
        finally:
            self._trl_kl_off = False

    def _exact_kl_term(self, model, hidden, inputs, mask) -> torch.Tensor:
        """beta x the exact KL (kl.py), normalised like TRL's loss; logs `kl` (what the guard and adaptive KL
        read) and `kl/<estimator>`."""
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
        """A (B, T) per-token term aggregated as TRL aggregates its loss now (rl_options.normalise_like_trl)."""
        training = self.model.training
        accumulation = self.current_gradient_accumulation_steps if training else 1.0
        items = None
        if self.loss_type in ("cispo", "dapo", "vespo"):  # TRL's normaliser: the batch's completion tokens
            items = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if training:
                items = items * accumulation / self.args.steps_per_generation
        return rl.normalise_like_trl(
            per_token, mask, self.loss_type, accumulation, self.max_completion_length, items
        )

    def training_step(self, model, inputs, num_items_in_batch):
        if self.selfplay is not None:
            inputs = self._mix_selfplay(inputs)
        kl = self.metric_values(
            "kl"
        )  # TRL appends one value per micro-batch when beta != 0 (ours: the exact KL)
        seen = len(kl)
        loss = super().training_step(model, inputs, num_items_in_batch)
        step_kl = list(kl[seen:])
        if not self.exact_kl:
            for value in step_kl:  # TRL's k3, also under its estimator's name
                self.log_metric("kl/k3", value)
        self.guard.faults.record_step(loss, step_kl)
        return loss

    def _mix_selfplay(self, inputs):
        """Self-play positions into this generation batch's P: prompts. TRL hands every micro-batch the rows
        of its generation batch but generates only on the first: the figures are logged for that one."""
        inputs, figures = self.selfplay.mix(inputs, self.state.global_step)
        if self.micro_step % (self.args.steps_per_generation * self.args.num_iterations) == 0:
            for name, value in figures.items():
                self.log_metric(name, value)
        return inputs

    def before_grad_clip(self):
        self.guard.faults.record_grads(
            self.model.named_parameters()
        )  # clipping turns a NaN into NaN everywhere

    def on_grad_norm(self, norm):
        self.guard.faults.record_grad_norm(norm)  # the norm before clipping: the guard's spike check needs it

    # ---- optimizer and LR schedule ----

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.value_head is not None:
            rl.add_value_head(optimizer, self.value_head, self.args.value_learning_rate)
            if self._value_clip is None:  # the head is no part of the model: TRL's clipping skips it
                self._value_clip = optimizer.register_step_pre_hook(
                    functools.partial(rl.clip_value_head, self)
                )
        return optimizer

    _value_clip = None  # the optimizer hook that clips the value head's gradients, registered once

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.args.lr_schedule != "warmup_cosine_linear" or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        schedule = functools.partial(
            warmup_cosine_linear,
            warmup_steps=self.args.get_warmup_steps(num_training_steps),
            total_steps=num_training_steps,
            min_ratio=self.args.lr_cosine_min_ratio,
            final_decay_ratio=self.args.lr_final_decay_ratio,
        )
        self.adopt_scheduler(torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule))
        return self.lr_scheduler

    # ---- checkpoints: our state in STATE_FILE, the value head beside it ----

    def checkpoint_written(self, path):
        state = {
            "beta": self.kl_control.beta,
            "nan_recoveries": self.guard.nan_recoveries,
            "healthy": self.guard.healthy,
            "baseline": self.running_baseline.state,
            "gae": self.gae_state,
        }
        checkpoints.write_json_atomic(os.path.join(path, STATE_FILE), state)
        if self.value_head is not None:
            rl.save_value_head(self.value_head, path)

    def checkpoint_complete(self, path):
        if self.args.save_stable and self.guard.healthy:
            checkpoints.promote_to_stable(path, os.path.dirname(path))
        if self.publish_to_hub and self.push_checkpoints:
            publish.push_checkpoint(self.args, path)

    def on_resume(self, checkpoint):
        path = os.path.join(checkpoint, STATE_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                state = json.load(f)
            self.kl_control.restore(state["beta"])
            self.guard.nan_recoveries = state["nan_recoveries"]
            self.running_baseline.state = state["baseline"]
            self.gae_state = state.get("gae", {})
        if self.value_head is not None:
            self.value_started = rl.load_value_head(self.value_head, checkpoint)
