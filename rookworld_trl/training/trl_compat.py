"""The one module that touches TRL's, Trainer's and torch's internals (pinned: trl 1.16, transformers 5).

The rest of the package uses public API and the hooks of `VerifiedCheckpoints` (a Trainer mixin) and
`GRPOInternals`. The registries below list every internal name with why it is needed; `check_internals()` at
import and `check_trainer()` check them, so an upgrade that drops one fails at once, naming it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import shutil
import warnings

import torch
import transformers
import trl
from packaging.version import Version
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer import grpo_trainer as trl_grpo_trainer
from trl.trainer import utils as trl_utils
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling  # noqa: F401  (SFT's collator: not in trl's top level)

from rookworld_trl.common.quiet_logs import dropping
from rookworld_trl.model import shared_prefix
from rookworld_trl.model.loading import tied_parameter_names
from rookworld_trl.training import checkpoints
from rookworld_trl.training.metrics_log import MetricLog

logger = logging.getLogger(__name__)

# Methods of GRPOTrainer / Trainer we override or call: name -> why
METHODS = {
    "_generate_and_score_completions": "field credit, baselines and GAE swap TRL's advantages; dynamic sampling "
    "calls it again on fresh prompts",
    "_calculate_rewards": "the per-row rewards (all processes) behind TRL's advantages: baselines, GAE and "
    "dynamic sampling read them",
    "_get_per_token_logps_and_entropies": "the reference model may sit on its own device; the prompt length "
    "for shared-prompt scoring (shared_prefix.py)",
    "_clip_grad_norm": "the step guard's spike check needs the gradient norm before clipping",
    "_save_checkpoint": "verified completion markers and one-line disk errors around Trainer's save",
    "_get_output_dir": "where _save_checkpoint writes, to mark it complete",
    "_issue_warnings_after_load": "GPT-2's tied lm_head.weight is reported missing on every resume",
    "_load_optimizer_and_scheduler": "on resume: TRL's micro-step count and our controller state",
    "_load_from_checkpoint": "a run killed during its final save reloads its weights without training",
}
# The private arguments our overrides take by name (inspect.signature binds TRL's call): method -> names
PRIVATE_ARGUMENTS = {
    "_calculate_rewards": ("prompts",),
    "_get_per_token_logps_and_entropies": ("model", "input_ids", "attention_mask", "logits_to_keep"),
}
# Attributes of a GRPOTrainer / Trainer we write or read (checked on each built trainer but LATER): name -> why
ATTRIBUTES = {
    "_metrics": "our figures join TRL's per-step averages of the next log line",
    "_step": "TRL's micro-batch counter: when to generate, which replay rows",
    "_buffered_inputs": "completions sampled by weights that were rolled back must not be trained on",
    "_created_lr_scheduler": "Trainer rebuilds a scheduler it created itself on a second train()",
}
LATER = {"current_gradient_accumulation_steps"}  # set by Trainer once training starts, not in __init__
# Public attributes of a GRPOTrainer / Trainer that grpo/ reads (set in their __init__, or properties): name -> why.
# tests/test_trl_seam.py fails when grpo/ reads an attribute of TRL's trainer that is not listed here.
TRL_ATTRIBUTES = {
    "accelerator": "processes, gathers and the device",
    "args": "the config (RookWorldGRPOConfig) TRL keeps",
    "beta": "the KL coefficient TRL's loss reads; adaptive KL moves it",
    "current_gradient_accumulation_steps": "the KL term and replay are normalised as TRL's loss",
    "eos_token_ids": "where our sampler stops",
    "is_deepspeed_enabled": "where the value head's optimizer and snapshots cannot go",
    "is_fsdp_enabled": "as is_deepspeed_enabled",
    "loss_type": "how TRL normalises its loss (grpo/kl.py normalise_like_trl copies it for the exact KL)",
    "lr_scheduler": "the LR cut after a rollback",
    "max_completion_length": "dr_grpo's normaliser",
    "model": "the policy",
    "model_wrapped": "the policy as accelerate wrapped it (the sampler unwraps it)",
    "num_generations": "the group size: completions per prompt",
    "optimizer": "snapshots and rollback",
    "processing_class": "the tokenizer",
    "ref_model": "the reference of the exact KL (and its device)",
    "reward_funcs": "the reward functions, to score fresh prompts and log components",
    "reward_weights": "the weighted reward row behind the baselines and dynamic sampling",
    "scale_rewards": "whether advantages are divided by a scale",
    "state": "global_step and the log history",
    "temperature": "the sampling temperature of the exact KL's distributions",
    "train_dataset": "self-play, the curriculum and dynamic sampling draw from it",
    "use_vllm": "vLLM samples with its own correction: our sampler's importance sampling is off then",
}
# Keys of the dict GRPOTrainer._generate_and_score_completions returns (compute_loss's inputs) that grpo/ reads
# (tests/test_trl_seam.py: a generation batch of each kind has them)
OUTPUT_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages",
               "num_items_in_batch", "old_per_token_logps", "importance_sampling_ratio")  # fmt: skip
# GRPOTrainer._compute_loss is linear in the advantages (a non-negative factor folded into them is the same
# correction as vLLM's importance-sampling ratio, which TRL multiplies in after them): tests/test_trl_seam.py
# compares its loss at 2x the advantages with twice its loss
LINEAR_IN_ADVANTAGES = "GRPOTrainer._compute_loss linear in the advantages"
# The versions whose internals the names above were read from, and tested with (pyproject.toml pins them)
TESTED = {"trl": (trl.__version__, "1.16", "1.17"), "transformers": (transformers.__version__, "5.23", "6")}
# torch's LRScheduler keeps what get_last_lr() (and so Trainer's logged learning_rate) returns here
LAST_LR = "_last_lr"


class ModuleFunction:
    """A function TRL looks up in its module at call time: `replaced_by(f)` puts `f` there for one call of ours."""

    def __init__(self, module, name: str):
        self.module, self.name = module, name
        self.original = getattr(module, name, None)

    @contextlib.contextmanager
    def replaced_by(self, function):
        setattr(self.module, self.name, function)
        try:
            yield
        finally:
            setattr(self.module, self.name, self.original)


# Which positions TRL's fused LM head scores: the completion positions only where Triton runs, every position
# elsewhere (to spare Neuron recompilations). On CPU that is 2-3x the work (the prompts); under torch.compile the
# count of completion tokens would change the graph's shapes every batch.
SCORED_POSITIONS = ModuleFunction(trl_utils, "_use_triton")
# The console table of completions GRPOTrainer.log prints whenever log_completions is set (which also writes the
# completions Parquet at every log): ours prints every print_completions_every steps, without the extra columns.
COMPLETIONS_TABLE = ModuleFunction(trl_grpo_trainer, "print_prompt_completions_sample")


def check_internals() -> None:
    """Raise ImportError naming the first internal above that the installed TRL / transformers / torch lacks."""
    missing = [f"{name} >={low},<{high} (installed: {v})" for name, (v, low, high) in TESTED.items()
               if not Version(low) <= Version(v) < Version(high)]  # fmt: skip
    missing += [f"GRPOTrainer.{n} ({why})" for n, why in METHODS.items() if not hasattr(GRPOTrainer, n)]
    missing += [f"GRPOTrainer.{m}'s argument {n!r}" for m, names in PRIVATE_ARGUMENTS.items() for n in names
                if n not in signature(m).parameters]  # fmt: skip
    missing += [f"{seam.module.__name__}.{seam.name}" for seam in (SCORED_POSITIONS, COMPLETIONS_TABLE)
                if not callable(seam.original)]  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1)], lr=1.0), lambda step: 1.0)
    if not isinstance(getattr(scheduler, LAST_LR, None), list):
        missing.append(f"torch LRScheduler.{LAST_LR} (the logged learning rate after an LR cut)")
    if missing:
        raise ImportError(internals_error(missing[0]))


def internals_error(what: str) -> str:  # one wording for check_internals and check_trainer
    return (
        f"rookworld_trl relies on {what}, which trl {trl.__version__} / transformers {transformers.__version__} / "
        f"torch {torch.__version__} lack: install the versions pyproject.toml pins (bash scripts/setup.sh)"
    )


def check_trainer(trainer) -> None:
    """RuntimeError naming the first attribute of ATTRIBUTES / TRL_ATTRIBUTES a built GRPOTrainer lacks."""
    names = {**ATTRIBUTES, **TRL_ATTRIBUTES}
    missing = [f"self.{n} ({why})" for n, why in names.items() if n not in LATER and not hasattr(trainer, n)]
    if missing:
        raise RuntimeError(internals_error(missing[0]))


@functools.cache
def signature(method: str) -> inspect.Signature:
    """The signature of GRPOTrainer.<method> (none when TRL dropped it)."""
    return inspect.signature(getattr(GRPOTrainer, method, lambda: None))


def argument(method: str, name: str, trainer, args: tuple, kwargs: dict):
    """The argument `name` of TRL's call `trainer.<method>(*args, **kwargs)`, bound by its signature."""
    return signature(method).bind(trainer, *args, **kwargs).arguments[name]


check_internals()


def set_logged_lr(scheduler, optimizer) -> None:
    """After an LR cut: what the scheduler reports (and Trainer logs) is the optimizer's LR now."""
    setattr(scheduler, LAST_LR, [group["lr"] for group in optimizer.param_groups])


class VerifiedCheckpoints:
    """Trainer mixin: a checkpoint counts once its completion marker is written after every rank's files; a save
    that fails on I/O is one line. Hooks: `checkpoint_written(path)` (before the marker), `checkpoint_complete`."""

    def checkpoint_written(self, path: str) -> None:
        """More files for the checkpoint (main process), before its marker blesses them."""

    def checkpoint_complete(self, path: str) -> None:
        """The checkpoint is marked complete (main process)."""

    def load_weights(self, checkpoint: str) -> None:
        """The checkpoint's model weights into self.model (no optimizer, no state)."""
        self._load_from_checkpoint(checkpoint)

    def _save_checkpoint(self, model, trial):
        run_dir = self._get_output_dir(trial=trial)
        path = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        # left by a run resumed from an earlier step: its marker must not bless new files
        if self.args.should_save and os.path.isdir(path):
            shutil.rmtree(path)
        self.accelerator.wait_for_everyone()  # before any rank writes into it
        try:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank's files are written before the marker
            if self.args.should_save:
                self.checkpoint_written(path)
                checkpoints.mark_complete(path, self.state.global_step)
                self.checkpoint_complete(path)
        except Exception as e:  # a full disk surfaces as OSError, or RuntimeError from torch.save's writer
            error = checkpoints.save_error(e, f"saving {os.path.basename(path)}", path)
            if error is None:
                raise
            shutil.rmtree(path, ignore_errors=True)  # unmarked, so never resumed from; it only takes space
            shutil.rmtree(os.path.join(run_dir, f"{checkpoints.STABLE_DIR}.tmp"), ignore_errors=True)
            raise error from None

    def _issue_warnings_after_load(self, load_result):
        # GPT-2's lm_head.weight is wte: not stored, so reported missing although the model ties it itself
        tied = tied_parameter_names(self.model)
        missing = [k for k in load_result.missing_keys if k not in tied]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))


class GRPOInternals(VerifiedCheckpoints, GRPOTrainer):
    """GRPOTrainer with the TRL internals a GRPO run reads or patches that are no part of its step: accessors for
    TRL's state, the reference model's own device (`ref_device`), the positions TRL's scoring forward computes,
    and the completions table printed every `print_completions_every` steps. The step's own seams are
    overridden in grpo/trainer.py.
    """

    ref_device: torch.device | None = None
    compiled_scoring = False  # the model runs under torch.compile: score fixed shapes (every position)
    _table_step = -1  # the step whose completions table was printed last

    def __init__(self, *args, **kwargs):
        # rollout_func is experimental to TRL; ours (rollout.py) is tested against generate()
        warnings.filterwarnings("ignore", "You are using 'rollout_func'", UserWarning)
        # TRL says model_init_kwargs are ignored for a policy instance, but builds the reference with them
        with dropping("trl.trainer.grpo_trainer", "`model_init_kwargs` will be ignored"):
            super().__init__(*args, **kwargs)
        check_trainer(self)
        self.metrics = MetricLog(self._metrics["train"])  # TRL clears it in place after each log line
        # TRL 1.16 reads transformers' deprecated `is_gradient_checkpointing` at every generation
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)

    def scoring_logps(self, input_ids, attention_mask, logits_to_keep: int) -> torch.Tensor:
        """TRL's scoring forward of the policy, no grad: the (B, logits_to_keep) log-probs the loss trains on."""
        with torch.no_grad():
            return self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, logits_to_keep
            )[0]

    @property
    def micro_step(self) -> int:
        """Micro-batches trained so far (restored on resume)."""
        return self._step

    def drop_buffered_completions(self) -> None:
        """Generate afresh at the next micro-batch: the buffered ones came from weights now rolled back."""
        self._buffered_inputs = None

    def adopt_scheduler(self, scheduler) -> None:
        """Use `scheduler` as Trainer's own (it then rebuilds it on a second train(), as its own)."""
        self.lr_scheduler = scheduler
        self._created_lr_scheduler = True

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)  # Trainer calls it on resume, after the state
        if checkpoint is not None:
            self._step = self.state.global_step * self.args.gradient_accumulation_steps
            self.on_resume(checkpoint)

    def on_resume(self, checkpoint: str) -> None:
        """A resume has loaded the checkpoint's weights, optimizer, scheduler and TrainerState."""

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        call = signature("_get_per_token_logps_and_entropies").bind(self, *args, **kwargs).arguments
        del call["self"]
        # the prompt is all but the last logits_to_keep columns (shared_prefix.py computes it once per group)
        input_ids, keep = call["input_ids"], call["logits_to_keep"]
        # SCORED_POSITIONS: on CPU the completion positions only (the same figures for less work); under
        # torch.compile every position on every device (a new count of completion tokens recompiled the graph)
        compact = (
            False if self.compiled_scoring else True if input_ids.device.type in ("cpu", "mps") else None
        )
        with (
            shared_prefix.prompt_length(input_ids.size(1) - keep),
            contextlib.nullcontext()
            if compact is None  # TRL's own choice: compact where Triton runs
            else SCORED_POSITIONS.replaced_by(lambda *args, **kwargs: compact),
        ):
            return self._score_on_device(call)

    def _score_on_device(self, call: dict):
        # TRL calls this for the policy and the reference; only the latter may move
        model, input_ids = call["model"], call["input_ids"]
        if self.ref_device is None or model is not self.ref_model or input_ids.device == self.ref_device:
            return super()._get_per_token_logps_and_entropies(**call)
        home = input_ids.device

        def move(x, device=self.ref_device):
            return x.to(device) if torch.is_tensor(x) else x

        out = super()._get_per_token_logps_and_entropies(**{k: move(v) for k, v in call.items()})
        return tuple(move(o, home) for o in out)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        every, step = getattr(self.args, "print_completions_every", None), self.state.global_step
        # None: TRL's rhythm (every logging step); the end-of-train log repeats the last step
        every = every if every is not None else 1
        due = every > 0 and self.model.training and step % every == 0 and step != self._table_step
        self._table_step = step if due else self._table_step

        with (
            COMPLETIONS_TABLE.replaced_by(_table_without_extra if due else lambda *args, **kwargs: None),
            # TRL logs None for a figure with no sample this step (KL at beta 0, a task absent from the batch)
            dropping("transformers.integrations.integration_utils", 'log a value of "None"'),
        ):
            super().log(logs, start_time)


def _table_without_extra(*args, extra=None, **kwargs):
    # our reward components as extra columns squash the table to empty cells; Parquet and trackers keep them
    return COMPLETIONS_TABLE.original(*args, **kwargs)
