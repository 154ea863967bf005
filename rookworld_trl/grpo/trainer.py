"""RookWorldGRPOTrainer: TRL's GRPOTrainer with our advantages, loss terms, step guard and run state; one GRPO step
reads top to bottom in this file. The stage that builds and runs it is rookworld_trl/stages/grpo.py:

    python -m rookworld_trl.stages.grpo --config recipes/grpo_tiny_cpu.yaml --max_steps 5

One optimizer step, in the order it runs (docs/ARCHITECTURE.md walks it); TRL drives the loop, we override its
seams, and each RL option is a plain `if args.X:` calling its own module:
  1. prompts     `mix_prompts`: self-play, curriculum and tactics positions into P: prompts;
  2. rollout     `_generate_and_score_completions` -> `score_batch` -> `trl_scored`: TRL samples and calls the
                 reward functions; `_calculate_rewards` hands their (N, F) rewards back;
  3. advantages  `advantages`: the ema/adaptive baseline, field credit, the value head's GAE; then the guard, the
                 curriculum and dynamic sampling learn from the scored batch;
  4. loss        `compute_loss`: TRL's clipped loss + the exact KL, the value loss, supervised and tactics replay;
  5. guard       `_clip_grad_norm` records the gradients for StepGuard (guard.py), which judges each step.
The state a run carries between steps is `self.run` (RunState), saved as STATE_FILE in each checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field

import torch
from accelerate.utils import gather_object

from rookworld_trl.common.errors import UserError
from rookworld_trl.data.read import prompt_rows
from rookworld_trl.grpo import dynamic_sampling
from rookworld_trl.grpo.baselines import reward_scale, running_advantages
from rookworld_trl.grpo.config import (
    RookWorldGRPOConfig,
    as_rookworld_config,
    check_completion_length,
    compiling,
)
from rookworld_trl.grpo.credit import (
    answer_components,
    field_advantages,
    field_parts,
    other_rewards,
    with_rest,
)
from rookworld_trl.grpo.curriculum import curriculum_for
from rookworld_trl.grpo.dynamic_sampling import fresh_prompts, refill
from rookworld_trl.grpo.groups import ScoredBatch, group_task, local_rows, loss_mask, row_rewards, task_masks
from rookworld_trl.grpo.guard import StepGuard
from rookworld_trl.grpo.kl import HiddenTap, completion_hidden, lm_head_of, normalise_like_trl, per_token_kl
from rookworld_trl.grpo.replay import replay_for, replay_loss
from rookworld_trl.grpo.rewards.functions import resolve_rewards
from rookworld_trl.grpo.rollout import check_supported, correct_for_sampler, rollout
from rookworld_trl.grpo.selfplay import SelfPlay, SelfPlayCallback
from rookworld_trl.grpo.tactics import TacticsMix, tactics_replay_for
from rookworld_trl.grpo.trl_fields import check_fields
from rookworld_trl.grpo.value import (
    ValueHead,
    add_value_head,
    clip_value_head,
    load_value_head,
    save_value_head,
    value_advantages,
    value_loss,
)
from rookworld_trl.model.loading import (
    gpt2_backbone,
    init_kwargs,
    load_model_and_tokenizer,
    use_fused_gelu,
    use_padding_aware_positions,
)
from rookworld_trl.model.shared_prefix import use_shared_prefix
from rookworld_trl.training import checkpoints, publish
from rookworld_trl.training.interrupt import SaveOnInterrupt
from rookworld_trl.training.metrics_log import JSONLMetricsCallback
from rookworld_trl.training.trl_compat import GRPOInternals, argument

logger = logging.getLogger(__name__)

STATE_FILE = "rookworld_state.json"  # the RunState inside each checkpoint


@dataclass
class RunState:
    """What a run carries between steps besides weights, optimizer and TRL's TrainerState; saved in STATE_FILE
    (all but `value_started`, which says whether value_head.safetensors was there)."""

    beta: float  # the KL coefficient TRL's loss reads; adaptive KL (the guard) and rollbacks move it
    nan_recoveries: int = 0  # the guard's rollbacks in the whole run
    # last step finite with KL <= kl_warn: its checkpoint may become stable (the guard's)
    healthy: bool = True
    baseline: dict = field(default_factory=dict)  # ema/adaptive baselines: task -> {"mean", "spread", "var"}
    gae: dict = field(default_factory=dict)  # value baseline: "<task>/gae" -> {"var"}, GAE's running scale
    value_started: bool = False  # the value head's bias has been set (its first batch, or a checkpoint)

    def saved(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "value_started"}

    def restore(self, state: dict) -> None:
        self.beta, self.nan_recoveries = float(state["beta"]), state["nan_recoveries"]
        self.baseline, self.gae = state["baseline"], state.get("gae", {})  # `healthy`: the next step decides


class RookWorldGRPOTrainer(GRPOInternals):
    """GRPOTrainer with our advantages and loss terms, the step guard, ref-model offload and checkpoint state.

    `replay_dataset`: the rows supervised replay draws from (default: `train_dataset`). `selfplay`, `tactics`:
    positions to mix into P: prompts (None: off). `push_checkpoints`: with push_to_hub, upload each checkpoint too.
    Built from Python it checks what `rookworld train` checks (docs/GUIDE.md, "From Python"); `check_lengths`
    False leaves the completion budget unchecked, "warn" only warns. `halt_reason`: why train() stopped early.
    """

    _trl_kl_off = False  # while TRL's loss runs under an exact kl_estimator, which adds its own KL term
    _scored: list | None = None  # the rewards and prompts TRL scored, while trl_scored runs

    @property
    def beta(self) -> float:
        """The KL coefficient TRL reads (in scoring: whether to run the reference; in its loss: the k3 term)."""
        return 0.0 if self._trl_kl_off else self.run.beta

    @beta.setter
    def beta(self, value: float) -> None:
        # GRPOTrainer.__init__ sets args.beta, which the RunState already holds: it is beta's one home
        if value != self.run.beta:
            raise AttributeError("beta is the RunState's: set trainer.run.beta")

    def __init__(
        self,
        model,
        reward_funcs,
        args: RookWorldGRPOConfig | None = None,
        *rest,
        replay_dataset=None,
        selfplay: SelfPlay | None = None,
        tactics: TacticsMix | None = None,
        push_checkpoints: bool = False,
        check_lengths: bool | str = True,
        **kwargs,
    ):
        rest = list(rest)
        args, model, reward_funcs = self._checked_inputs(
            model, reward_funcs, args, rest, kwargs, check_lengths
        )
        # Trainer would push output_dir (stable/, Parquet, engine cache) at every save: publish.py pushes final/
        self.publish_to_hub, args.push_to_hub = args.push_to_hub, False
        self.push_checkpoints = push_checkpoints  # each complete checkpoint's model files too
        self.run = RunState(beta=float(args.beta))
        # a rollout_func of the user's samples in place of ours, as TRL calls it
        own_sampler = own_sampling(args, kwargs)
        check_fields(args, own_sampler)  # what this run cannot honour, one line each (grpo/trl_fields.py)
        if own_sampler:
            kwargs["rollout_func"] = rollout
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        # the hidden-state taps an exact KL and the value head read
        self.exact_kl = self.args.kl_estimator != "k3"
        if self.exact_kl and self.ref_model is None:
            raise ValueError(
                f"kl_estimator {self.args.kl_estimator!r} needs a separate reference model: not with PEFT"
            )
        self.ref_tap = HiddenTap(self.ref_model) if self.exact_kl else None
        self.policy_tap = HiddenTap(self.model) if self.exact_kl or self.args.value_baseline else None
        if own_sampler:
            check_supported(self.args, self.model, self.accelerator)
        self.ref_device = place_ref_model(self, self.args.ref_model_device)
        # fixed shapes: pad_to_multiple_of, every position scored
        self.compiled_scoring = compiling(self.args)
        for model in (self.model, self.ref_model):  # TRL loads the reference itself, not through our loader
            if model is None:
                continue
            use_fused_gelu(model)
            # TRL scores completions with a plain forward that passes no position_ids; GPT-2 would then count the
            # left padding as positions, unlike generate()
            if self.args.padding_aware_positions and gpt2_backbone(model, required=False) is not None:
                use_padding_aware_positions(model)
                if self.args.shared_prefix_scoring:  # it reads the padding-aware positions
                    use_shared_prefix(model)
        self.guard = StepGuard(self)
        self.add_callback(self.guard)
        # the RL options' parts, each None when off (their fields: grpo/config.py, one section each)
        a = self.args
        self.value_head = None  # value_baseline: V on the policy's hidden states (value.py)
        if a.value_baseline:
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError(
                    "value_baseline is not supported with DeepSpeed/FSDP: set value_baseline: false"
                )
            self.value_head = ValueHead(gpt2_backbone(self.model).config.hidden_size).to(
                self.accelerator.device
            )
        replay_rows = self.train_dataset if replay_dataset is None else replay_dataset
        self.replay = replay_for(self, replay_rows)  # replay_coef: supervised replay (replay.py)
        self.selfplay = selfplay  # selfplay_ratio: the policy's own games as P: prompts (selfplay.py)
        if selfplay is not None:
            self.add_callback(SelfPlayCallback(self))
        self.curriculum = curriculum_for(a, self.reward_funcs)  # curriculum_ratio (curriculum.py)
        self.tactics = tactics  # tactics_ratio / tactics_replay_coef (tactics.py)
        self.tactics_replay = tactics_replay_for(self, tactics)
        if a.dynamic_sampling:
            dynamic_sampling.check_trainer(self)
        # vllm_importance_sampling_correction false turns it off, as it does TRL's under vLLM
        self.correct_sampler = (
            a.sampler_importance_sampling and a.vllm_importance_sampling_correction and not self.use_vllm
        )
        self.interrupt = SaveOnInterrupt()
        self.add_callback(self.interrupt)
        if a.metrics_jsonl:
            self.add_callback(JSONLMetricsCallback(os.path.join(a.output_dir, a.metrics_jsonl)))

    @staticmethod
    def _checked_inputs(model, reward_funcs, args, rest, kwargs, check_lengths):
        """`rookworld train`'s checks, each a UserError naming the fix; a model path is loaded with its tokenizer,
        a plain GRPOConfig converted and a `text` column split."""
        args = as_rookworld_config(args)
        if isinstance(model, str):  # a typo is one line, not transformers' two chained tracebacks
            # the policy takes every model_init_kwargs as TRL's reference does (attn_implementation, ...)
            init = {"trust_remote_code": args.trust_remote_code, **(args.model_init_kwargs or {})}
            model, tokenizer = load_model_and_tokenizer(model, **init_kwargs(init))
            if len(rest) < 3:
                kwargs.setdefault("processing_class", tokenizer)
        reward_funcs = resolve_rewards(
            reward_funcs, args.reward_shaping, weights=args.reward_weights, field_credit=args.field_credit
        )
        dataset = rest[0] if rest else kwargs.get("train_dataset")
        if dataset is not None:
            dataset = prompt_rows(dataset)
            check_prompts(dataset, own_sampling(args, kwargs))
            if rest:
                rest[0] = dataset
            else:
                kwargs["train_dataset"] = dataset
            tokenizer = kwargs.get("processing_class") or (rest[2] if len(rest) > 2 else None)
            if tokenizer is not None and check_lengths:
                check_completion_length(
                    dataset, tokenizer, args.max_completion_length, strict=check_lengths is True
                )
        return args, model, reward_funcs

    @property
    def halt_reason(self) -> str | None:
        """None after a normal end of train(), else why the guard stopped it."""
        return self.guard.halt_reason

    def log_figures(self, figures: dict[str, float]) -> None:
        for name, value in figures.items():
            self.metrics.add(name, value)

    # ---- 1. prompts ----

    def training_step(self, model, inputs, num_items_in_batch):
        inputs = self.mix_prompts(inputs)
        # TRL appends one value per micro-batch when beta != 0 (ours: the exact KL)
        kl = self.metrics.values("kl")
        seen = len(kl)
        loss = super().training_step(model, inputs, num_items_in_batch)  # 2-4 below, then backward
        step_kl = list(kl[seen:])
        if not self.exact_kl:
            for value in step_kl:  # TRL's k3, also under its estimator's name
                self.metrics.add("kl/k3", value)
        self.guard.faults.record_step(loss, step_kl)
        return loss

    def mix_prompts(self, rows: list[dict]) -> list[dict]:
        """Self-play, the curriculum's and tactics positions into P: prompts, in that order; the figures are
        logged once per generation batch (TRL hands every micro-batch its rows but generates on the first)."""
        figures = {}
        for mixer in (self.selfplay, self.curriculum, self.tactics):  # (tactics replay alone mixes nothing)
            if mixer is not None:
                rows, more = mixer.mix(rows, self.state.global_step)
                figures |= more
        if self.micro_step % (self.args.steps_per_generation * self.args.num_iterations) == 0:
            self.log_figures(figures)
        return rows

    # ---- 2. rollout and rewards ----

    def _generate_and_score_completions(self, inputs):
        """TRL's seam: the generation batch the next micro-batches train on; dynamic sampling may replace it."""
        batch = self.score_batch(inputs)
        if self.model.training:
            self.guard.scored_rewards = batch.rewards  # where the guard looks first for a fault
            if self.curriculum is not None:  # every process's rows: each rank keeps the same buffer
                ids = batch.output["completion_ids"]
                components = answer_components(self.processing_class, self.reward_funcs, ids, batch.prompts)
                rows, components = gather_object(list(batch.rows)), gather_object(components)
                self.log_figures(self.curriculum.observe(rows, components, self.num_generations))
            if self.args.dynamic_sampling:
                batch, figures = refill(
                    batch, self.score_batch, self._fresh_rows, self.num_generations, self.reward_weights,
                    self.accelerator, self.args.dynamic_sampling_max_rounds, self.processing_class.pad_token_id,
                )  # fmt: skip
                self.log_figures(figures)
        return batch.output

    def score(self, inputs) -> dict:
        """Sample and score `inputs` as a step does (our advantages in training): TRL's generation batch."""
        return self.score_batch(inputs).output

    def score_batch(self, rows: list[dict]) -> ScoredBatch:
        """Sample and score completions of `rows` (TRL), then our advantages (training only) and the sampler's
        importance-sampling correction."""
        tap = self.ref_tap
        with tap.recording() if tap is not None else contextlib.nullcontext():
            output, rewards, prompts = self.trl_scored(rows)
            if tap is not None and tap.records:
                hidden = completion_hidden(tap.records, output["completion_ids"].shape[1])
                output["ref_hidden"] = hidden.detach().to(output["completion_ids"].device)
            batch = ScoredBatch(rows, list(prompts), rewards, output)
            if self.model.training:
                self.advantages(batch)
        if self.correct_sampler:
            self.log_figures(correct_for_sampler(output, self.scoring_logps, self.args, self.loss_type))
        return batch

    def trl_scored(self, rows: list[dict]) -> tuple[dict, torch.Tensor, list]:
        """TRL's generation batch of `rows`, every process's (N, F) rewards (NaN: a function skipped the row) and
        this process's prompts; `_calculate_rewards` hands the rewards back through `_scored`."""
        self._scored = []
        try:
            output = super()._generate_and_score_completions(rows)
            rewards, prompts = self._scored[-1]
        finally:
            self._scored = None
        return output, rewards, prompts

    def _calculate_rewards(self, *args, **kwargs):
        rewards = super()._calculate_rewards(*args, **kwargs)
        if self._scored is not None:  # inside trl_scored, which hands them back
            prompts = argument("_calculate_rewards", "prompts", self, args, kwargs)
            self._scored.append((rewards, list(prompts)))
        return rewards

    # ---- 3. advantages, and what learns from the scored batch ----

    def advantages(self, batch: ScoredBatch) -> None:
        """TRL's group advantages in batch.output -> ours, in place: the ema/adaptive baseline, then field credit
        (against that baseline when on), then the value head's GAE (once its warm-up gate opens)."""
        a, output, n = self.args, batch.output, self.num_generations
        rewards = row_rewards(batch.rewards, self.reward_weights)  # (N,) every process's, TRL's order
        tasks = [group_task(p) for p in gather_object(batch.prompts)]
        mine = local_rows(self.accelerator, len(output["completion_ids"]))
        sequence = terms = layouts = None
        if a.baseline != "group":
            scaled = self.scale_rewards != "none"
            sequence, self.run.baseline = running_advantages(
                self.run.baseline, a.baseline, rewards, tasks, n, a.baseline_ema_decay, scaled
            )
            output["advantages"] = sequence.advantages[mine]
            self.log_figures({f"baseline/{t.rstrip(':')}": s["mean"] for t, s in self.run.baseline.items()})
        if a.field_credit:
            ids, funcs, weights = output["completion_ids"], self.reward_funcs, self.reward_weights
            terms, layouts = field_parts(
                self.processing_class, funcs, weights, a.reward_shaping, ids, batch.prompts
            )
            rest = other_rewards(funcs, weights, batch.rewards, rewards)  # your reward functions' share
            scale = (
                reward_scale(rewards, tasks, n, self.scale_rewards) if sequence is None else sequence.scale
            )
            every = with_rest(gather_object(terms), rest)  # every process's rows: a group may span processes
            output["advantages"] = field_advantages(
                every, layouts, output["advantages"], scale, n, mine, a.choice_credit, sequence,
                choice_against=a.choice_against,
            )  # fmt: skip
        if self.value_head is not None:
            figures = value_advantages(
                self.value_head, self.run.gae, output, rewards[mine], batch.prompts, terms, layouts, self.model, a,
                self.accelerator.autocast, start=not self.run.value_started,
            )  # fmt: skip
            self.run.value_started = True
            self.log_figures(figures)
        if a.baseline != "group" or self.value_head is not None:  # not TRL's advantages: ours per task
            self.log_advantages(batch)

    def log_advantages(self, batch: ScoredBatch) -> None:
        """adv/mean/<task>, adv/std/<task>: the advantages this process trains on, over completion tokens."""
        advantages, mask = batch.output["advantages"], batch.output["completion_mask"].bool()
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1).expand_as(mask)
        tasks = [group_task(p) for p in batch.prompts]
        for task, rows in task_masks(tasks, mask.device).items():
            values = advantages[mask & rows.unsqueeze(1)].float()
            if values.numel() > 1:
                self.metrics.add(f"adv/mean/{task.rstrip(':')}", float(values.mean()))
                self.metrics.add(f"adv/std/{task.rstrip(':')}", float(values.std()))

    def _fresh_rows(self, count: int, round_: int) -> list[dict]:
        """Dynamic sampling's fresh training rows for this process: a draw per (seed, micro-step, round)."""
        seed = (self.args.seed * 1_000_003 + self.micro_step * 101 + round_) % 2**63
        return fresh_prompts(self.train_dataset, count, self.num_generations, self.accelerator, seed)

    # ---- 4. the loss ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One micro-batch's loss: TRL's, then in this order beta x the exact KL, the value loss and replay."""
        training = self.model.training
        if training:
            self.guard.faults.inputs.append(inputs)  # kept until the step ends, to save it if it goes bad
        if self.policy_tap is None:
            loss, hidden = super().compute_loss(model, inputs, return_outputs, num_items_in_batch), None
        else:
            # TRL's loss without its k3 term (beta reads 0): ours replaces it
            self._trl_kl_off = self.exact_kl
            try:
                with self.policy_tap.recording() as records:
                    loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                self._trl_kl_off = False
            hidden = completion_hidden(records, inputs["completion_ids"].shape[1])
        a = self.args
        if self.exact_kl and hidden is not None:  # k3: TRL's loss has added it
            loss = loss + self.run.beta * self.exact_kl_term(model, hidden, inputs)
        if self.value_head is not None and hidden is not None and "returns" in inputs:
            value = value_loss(self.value_head, hidden, inputs["returns"], loss_mask(inputs))
            if training:
                self.metrics.add("value/loss", float(value.detach()))
            loss = loss + a.value_coef * value / self.current_gradient_accumulation_steps
        for replay in (self.replay, self.tactics_replay) if training else ():
            if replay is not None:  # the replayed rows follow the micro-step count (restored on resume)
                supervised = replay_loss(
                    model, replay.batch(self.micro_step, inputs["completion_ids"].device)
                )
                self.metrics.add(replay.metric, supervised.item())
                loss = loss + replay.coef * supervised / self.current_gradient_accumulation_steps
        return loss

    def exact_kl_term(self, model, hidden, inputs: dict) -> torch.Tensor:
        """The exact KL (kl.py), normalised like TRL's loss; logs `kl` (the guard's) and `kl/<estimator>`."""
        est, mask = self.args.kl_estimator, loss_mask(inputs)
        # the reference's hidden states were tapped while TRL scored the batch (score_batch)
        ref_head, ref_hidden = lm_head_of(self.ref_model), inputs["ref_hidden"]
        kl = per_token_kl(hidden, lm_head_of(model), ref_hidden, ref_head, mask, est, self.temperature)
        if self.model.training:
            totals = self.accelerator.reduce(
                torch.stack([(kl * mask).sum(), mask.sum().float()]).detach(), "sum"
            )
            kl_value = float(totals[0] / totals[1].clamp(min=1.0))
            self.log_figures({"kl": kl_value, f"kl/{est}": kl_value})
        return self.normalised_like_trl(kl, mask, inputs)

    def normalised_like_trl(self, per_token, mask, inputs: dict) -> torch.Tensor:
        """A (B, T) per-token term aggregated as the run's TRL loss is now (kl.normalise_like_trl)."""
        training = self.model.training
        accumulation = self.current_gradient_accumulation_steps if training else 1.0
        items = None
        if self.loss_type in ("cispo", "dapo", "vespo"):  # TRL's normaliser: the batch's completion tokens
            items = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if training:
                items = items * accumulation / self.args.steps_per_generation
        return normalise_like_trl(
            per_token, mask, self.loss_type, accumulation, self.max_completion_length, items
        )

    # ---- 5. the guard (StepGuard, a TrainerCallback, judges the step at its boundaries) ----

    def _clip_grad_norm(self, model):
        # TRL's seam: the guard reads the gradients before clipping turns one NaN into NaN everywhere, and the
        # norm before clipping (its spike check)
        self.guard.faults.record_grads(self.model.named_parameters())
        norm = super()._clip_grad_norm(model)
        self.guard.faults.record_grad_norm(norm)
        return norm

    # ---- optimizer and LR schedule ----

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.value_head is not None:
            add_value_head(optimizer, self.value_head, self.args.value_learning_rate)
            if self._value_clip is None:  # the head is no part of the model: TRL's clipping skips it
                self._value_clip = optimizer.register_step_pre_hook(functools.partial(clip_value_head, self))
        return optimizer

    _value_clip = None  # the optimizer hook that clips the value head's gradients, registered once

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.args.lr_schedule != "warmup_cosine_linear" or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        schedule = functools.partial(  # the "warmup_cosine_linear" LR schedule (below)
            warmup_cosine_linear,
            warmup_steps=self.args.get_warmup_steps(num_training_steps),
            total_steps=num_training_steps,
            min_ratio=self.args.lr_cosine_min_ratio,
            final_decay_ratio=self.args.lr_final_decay_ratio,
        )
        self.adopt_scheduler(torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule))
        return self.lr_scheduler

    # ---- checkpoints: the RunState in STATE_FILE, the value head beside it ----

    def checkpoint_written(self, path):
        checkpoints.write_json_atomic(os.path.join(path, STATE_FILE), self.run.saved())
        if self.value_head is not None:
            save_value_head(self.value_head, path)

    def checkpoint_complete(self, path):
        if self.args.save_stable and self.run.healthy:
            checkpoints.promote_to_stable(path, os.path.dirname(path))
        if self.publish_to_hub and self.push_checkpoints:
            publish.push_checkpoint(self.args, path)

    def on_resume(self, checkpoint):
        path = os.path.join(checkpoint, STATE_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                self.run.restore(json.load(f))
        if self.value_head is not None:
            self.run.value_started = load_value_head(self.value_head, checkpoint)


def own_sampling(args, kwargs: dict) -> bool:
    """Whether our sampler (rollout.py) samples: generation_backend rookworld, no vLLM, no rollout_func given."""
    return args.generation_backend == "rookworld" and not args.use_vllm and kwargs.get("rollout_func") is None


def check_prompts(dataset, own_sampler: bool) -> None:
    """UserError for conversational prompts where our sampler (it takes text) samples."""

    names = getattr(dataset, "column_names", None) or []
    if not own_sampler or "prompt" not in names or not len(dataset):
        return
    if isinstance(dataset[0]["prompt"], list):
        raise UserError(
            "train_dataset has conversational prompts (lists of messages), which RookWorld-LM (no chat template) "
            "and our sampler do not take: give text prompts (P:/A: lines, rookworld_trl.policy_prompt), or for a "
            "chat model with a chat template set generation_backend: transformers (TRL's generate() applies it)"
        )


def place_ref_model(trainer, device: str | None) -> torch.device | None:
    """The reference model on its own device (`ref_model_device`); training/trl_compat.py moves its inputs there."""
    if device is None:
        return None
    if trainer.ref_model is None:
        logger.warning(f"ref_model_device={device} ignored: no separate reference model (beta == 0 or PEFT)")
        return None
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        raise ValueError(
            "ref_model_device is not supported with DeepSpeed/FSDP, which shard the reference model"
        )
    device = torch.device(device)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        if device.index >= count:
            raise ValueError(f"ref_model_device={device}: only {count} CUDA device(s) visible")
    trainer.ref_model.to(device)
    return device


def warmup_cosine_linear(
    step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1, final_decay_ratio: float = 0.1
) -> float:
    """LR multiplier: 0 -> 1 linear over warmup, cosine 1 -> min_ratio, then linear min_ratio -> 0 at the end.

    The final linear leg lands exactly on zero, which a cosine alone reaches only with a zero floor.

    >>> [round(warmup_cosine_linear(s, 2, 20), 2) for s in (0, 1, 2, 10, 18, 19, 20)]
    [0.0, 0.5, 1.0, 0.55, 0.1, 0.05, 0.0]
    """
    decay_start = max(warmup_steps, total_steps - round(final_decay_ratio * total_steps))
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if step < decay_start:
        progress = (step - warmup_steps) / max(1, decay_start - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    floor = min_ratio if decay_start > warmup_steps else 1.0
    return max(0.0, floor * (total_steps - step) / max(1, total_steps - decay_start))
