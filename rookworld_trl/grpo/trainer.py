"""RookWorldGRPOTrainer: TRL's GRPOTrainer with our advantages, loss terms, step guard and checkpoint state.
The stage that builds and runs it is rookworld_trl/stages/grpo.py (`python -m rookworld_trl.stages.grpo`).

One optimizer step, in the order it runs (docs/ARCHITECTURE.md walks it), each hook overridden once, here;
TRL calls them through the seams of training/trl_compat.py, and each hands its part to grpo/step.py's `Step`
(`grpo_step`), which reads top to bottom:
  1. prompts: `training_step` -> Step.mix_prompts: self-play (selfplay.py), curriculum (curriculum.py) and
     tactics (tactics.py) positions into P: prompts;
  2. rollout and rewards: `generate_batch` -> Step.generate_batch -> Step.score: TRL samples K completions per
     prompt with our sampler (rollout.py), calls the reward functions (grpo/rewards/functions.py) and hands
     back the batch and its rewards as a ScoredBatch (grpo/options.py);
  3. advantages: Step.shape_advantages (baselines, field credit, the value head's GAE), then what the options
     learn from the batch (after_scoring: the guard, the curriculum, dynamic sampling);
  4. loss: `compute_loss` -> TRL's clipped loss + Step.add_terms (exact KL, value loss, replays);
  5. guard: the StepGuard callback (safety.py) checks the step, `before_grad_clip` / `on_grad_norm` feed it;
     then the optimizer (`create_optimizer`: Trainer's + the value head's group).
Every RL option is an `Option` (grpo/options.py) in `options`, and each of these steps loops over that list:
KL control and the step guard, then grpo/rl_options.py's `build_options`; options read the run through a
StepContext, not the trainer. `beta` (what TRL's loss reads) is
KLControl's (kl_control.py), its one writer; `checkpoint_written` / `on_resume` keep the options' state in
STATE_FILE and their files beside it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os

import torch

from rookworld_trl.common.errors import UserError
from rookworld_trl.data.read import prompt_rows
from rookworld_trl.grpo.config import (
    RookWorldGRPOConfig,
    as_rookworld_config,
    check_completion_length,
    compiling,
)
from rookworld_trl.grpo.guard.safety import StepGuard
from rookworld_trl.grpo.kl import HiddenTap, completion_hidden
from rookworld_trl.grpo.kl_control import KLControl
from rookworld_trl.grpo.options import StepContext
from rookworld_trl.grpo.rewards.own import resolve_rewards
from rookworld_trl.grpo.rl_options import build_options
from rookworld_trl.grpo.rollout import check_supported, rollout
from rookworld_trl.grpo.schedule import warmup_cosine_linear
from rookworld_trl.grpo.selfplay import SelfPlay, SelfPlayCallback
from rookworld_trl.grpo.step import Step
from rookworld_trl.grpo.tactics import TacticsMix
from rookworld_trl.grpo.trl_fields import check_fields
from rookworld_trl.grpo.value import ValueBaseline, add_value_head, clip_value_head
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
from rookworld_trl.training.trl_compat import GRPOSeams

logger = logging.getLogger(__name__)

STATE_FILE = "rookworld_state.json"  # the options' state inside each checkpoint (beta, rollbacks, baselines)


class RookWorldGRPOTrainer(GRPOSeams):
    """GRPOTrainer with our advantages and loss terms, the step guard, ref-model offload and checkpoint state.

    `replay_dataset`: the rows supervised replay draws from (default: `train_dataset`). The stage passes the
    whole training split, so that replay of A: truths works when `mix_env_ratio` leaves no A: prompts to sample.
    `selfplay`: self-play positions to mix into P: prompts (grpo/selfplay.py; None: off). `tactics`: tactics
    rows to mix into P: prompts and replay (grpo/tactics.py; None: off). `push_checkpoints`:
    with push_to_hub, upload each complete checkpoint's model files too. TRL's `rollout_func`, when given,
    samples in place of our sampler (rollout.py, the default); every GRPOConfig field takes effect as in TRL or
    is refused here in one line (grpo/trl_fields.py, docs/GUIDE.md's table).
    After `train()` returns, `halt_reason` is None for a normal end, else a message saying why it stopped.
    Built from Python it checks what `rookworld train` checks (`_checked_inputs`): `model` may be a path or hub
    id, `reward_funcs` names or functions, `args` a plain trl.GRPOConfig, `train_dataset` a `text` column of
    P:/A: lines (docs/GUIDE.md, "From Python"); `check_lengths` False leaves the completion budget unchecked,
    "warn" only warns.
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
        self.kl_control = KLControl(args)
        # a rollout_func of the user's samples in place of ours, as TRL calls it
        own_sampler = own_sampling(args, kwargs)
        check_fields(args, own_sampler)  # what this run cannot honour, one line each (grpo/trl_fields.py)
        if own_sampler:
            kwargs["rollout_func"] = rollout
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        self._init_taps()
        if own_sampler:
            check_supported(self.args, self.model, self.accelerator)
        self.ref_device = place_ref_model(self, self.args.ref_model_device)
        # fixed shapes: pad_to_multiple_of, every position scored
        self.compiled_scoring = compiling(self.args)
        for model in (self.model, self.ref_model):  # TRL loads the reference itself, not through our loader
            if model is not None:
                use_fused_gelu(model)
        if self.args.padding_aware_positions:
            self._use_padding_aware_positions()
        self.guard = StepGuard(self)
        self.add_callback(self.guard)
        rows = self.train_dataset if replay_dataset is None else replay_dataset
        # every step loops over these (grpo/options.py), in this order; STATE_FILE's keys follow it
        self.options = [self.kl_control, self.guard, *build_options(self, rows, selfplay, tactics)]
        self.value = self.option(ValueBaseline)  # its head joins the optimizer
        a = self.args  # vllm_importance_sampling_correction false turns it off, as it does TRL's under vLLM
        correct = (
            a.sampler_importance_sampling and a.vllm_importance_sampling_correction and not self.use_vllm
        )
        # grpo/step.py: the step's parts, over the options and what they may read of the run
        self.grpo_step = Step(self.options, StepContext(self), self.trl_scored, self.ref_tap, correct)
        self.selfplay = selfplay  # rookworld_trl/grpo/selfplay.py: the policy's own games as P: prompts
        if selfplay is not None:
            self.add_callback(SelfPlayCallback(self))
        self.interrupt = SaveOnInterrupt()
        self.add_callback(self.interrupt)
        if self.args.metrics_jsonl:
            self.add_callback(
                JSONLMetricsCallback(os.path.join(self.args.output_dir, self.args.metrics_jsonl))
            )

    @staticmethod
    def _checked_inputs(model, reward_funcs, args, rest, kwargs, check_lengths):
        """`rookworld train`'s checks, for a trainer built in Python, each one UserError naming the fix: the
        config (a plain GRPOConfig is converted), the model path (loaded here with its tokenizer), the rewards
        (grpo/rewards/own.py resolve_rewards: names, signatures, shaping, field credit), the dataset's columns (a
        `text` column is split) and the completion length against its reference completions (more than half cut:
        UserError; some: a warning; `check_lengths` "warn": a warning whatever it cuts, as `rookworld train` does;
        False: unchecked)."""
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
        key = "train_dataset" if not rest else None
        dataset = kwargs.get("train_dataset") if key else rest[0]
        if dataset is not None:
            dataset = prompt_rows(dataset)
            check_prompts(dataset, own_sampling(args, kwargs))
            if key:
                kwargs[key] = dataset
            else:
                rest[:1] = [dataset]
            tokenizer = kwargs.get("processing_class") or (rest[2] if len(rest) > 2 else None)
            if tokenizer is not None and check_lengths:
                check_completion_length(
                    dataset, tokenizer, args.max_completion_length, strict=check_lengths is True
                )
        return args, model, reward_funcs

    def option(self, kind: type):
        """The first of `options` of that type, or None (off)."""
        return next((option for option in self.options if isinstance(option, kind)), None)

    def _init_taps(self) -> None:
        """The hidden-state taps an exact KL and the value head read; the checks that need the built trainer."""
        a = self.args
        self.exact_kl = a.kl_estimator != "k3"
        if self.exact_kl and self.ref_model is None:
            raise ValueError(
                f"kl_estimator {a.kl_estimator!r} needs a separate reference model: not with PEFT"
            )
        self.ref_tap = HiddenTap(self.ref_model) if self.exact_kl else None
        self.policy_tap = HiddenTap(self.model) if self.exact_kl or a.value_baseline else None

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

    # ---- sampling and advantages: grpo/step.py ----

    def generate_batch(self, inputs):
        return self.grpo_step.generate_batch(inputs)

    def score(self, inputs) -> dict:
        """Sample and score `inputs` as a step does (our advantages in training): TRL's generation batch."""
        return self.grpo_step.score(inputs).output

    # ---- the loss ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One micro-batch's loss: TRL's clipped GRPO loss + our terms (loss.py)."""
        if self.model.training:
            self.guard.faults.record_inputs(inputs)  # kept until the step ends, to save it if it goes bad
        if self.policy_tap is None:
            trl_loss, hidden = super().compute_loss(model, inputs, return_outputs, num_items_in_batch), None
        else:
            with self.policy_tap.recording() as records, self._without_trl_kl():
                trl_loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            hidden = completion_hidden(records, inputs["completion_ids"].shape[1])
        return self.grpo_step.add_terms(model, inputs, trl_loss, hidden)

    @contextlib.contextmanager
    def _without_trl_kl(self):
        """TRL's loss without its k3 term (beta reads 0) when an exact KL replaces it."""
        self._trl_kl_off = self.exact_kl
        try:
            yield
        finally:
            self._trl_kl_off = False

    def training_step(self, model, inputs, num_items_in_batch):
        inputs = self._mix_prompts(inputs)
        # TRL appends one value per micro-batch when beta != 0 (ours: the exact KL)
        kl = self.metrics.values("kl")
        seen = len(kl)
        loss = super().training_step(model, inputs, num_items_in_batch)
        step_kl = list(kl[seen:])
        if not self.exact_kl:
            for value in step_kl:  # TRL's k3, also under its estimator's name
                self.metrics.add("kl/k3", value)
        self.guard.faults.record_step(loss, step_kl)
        return loss

    def _mix_prompts(self, inputs):
        """TRL hands every micro-batch the rows of its generation batch but generates only on the first: the mix's
        figures are logged for it."""
        inputs, figures = self.grpo_step.mix_prompts(inputs, self.state.global_step)
        if self.micro_step % (self.args.steps_per_generation * self.args.num_iterations) == 0:
            for name, value in figures.items():
                self.metrics.add(name, value)
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
        if self.value is not None:
            add_value_head(optimizer, self.value.head, self.args.value_learning_rate)
            if self._value_clip is None:  # the head is no part of the model: TRL's clipping skips it
                self._value_clip = optimizer.register_step_pre_hook(functools.partial(clip_value_head, self))
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

    # ---- checkpoints: the options' state in STATE_FILE, their files beside it (grpo/options.py) ----

    def checkpoint_written(self, path):
        state = {}
        for option in self.options:
            state |= option.saved_state()
        checkpoints.write_json_atomic(os.path.join(path, STATE_FILE), state)
        for option in self.options:
            option.write_files(path)

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
            for option in self.options:
                option.restore_state(state)
        for option in self.options:
            option.read_files(checkpoint)


def own_sampling(args, kwargs: dict) -> bool:
    """Whether our sampler (rollout.py) samples: generation_backend rookworld, no vLLM, no rollout_func given."""
    return args.generation_backend == "rookworld" and not args.use_vllm and kwargs.get("rollout_func") is None


def check_prompts(dataset, own_sampler: bool) -> None:
    """UserError, one line, for conversational prompts (lists of messages) where they cannot be sampled: our
    sampler takes text; TRL's generate() applies the tokenizer's chat template (RookWorld-LM has none)."""
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
