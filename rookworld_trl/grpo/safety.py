"""The GRPO safety features (used by rookworld_trl/grpo/trainer.py): adaptive KL, the KL guard, rollback of non-finite
or diverged steps.

- StepGuard: a TrainerCallback that judges each optimizer step of RookWorldGRPOTrainer (see its docstring);
- divergence: the thresholds past which a finite step still counts as diverged (SPIKE, WEIGHT_JUMP, ...);
- adapt_beta: the adaptive KL controller rule;
- Snapshot: a host-memory copy of the last healthy trainable weights + optimizer, the NaN rollback target
  (its memory reused from snapshot to snapshot);
- all_finite / grads_finite / drop_grads: cheap non-finite checks and "skip this optimizer step";
- scale_lr: cut the learning rate persistently (optimizer groups and scheduler base LRs);
- save_batch: dump an offending batch to disk for debugging;
- memory_metrics: peak CPU RSS and CUDA allocation for the logs.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import resource
import sys

import torch
from transformers import TrainerCallback

from rookworld_trl.training.trl_compat import set_logged_lr

logger = logging.getLogger(__name__)

# Divergence: finite numbers that no healthy step produces. Each threshold is orders of magnitude past normal,
# so that noise never triggers a rollback (each costs a step and halves the LR).
SPIKE = 1e3  # loss or gradient norm this many times the median of the last healthy steps ...
SPIKE_FLOOR = {"loss": 0.1, "gradient norm": 1.0}  # ... and the median taken at least this (early steps ~0)
SPIKE_HISTORY = 20  # healthy steps the medians are taken over; judged once 5 are in
WEIGHT_JUMP = (
    10.0  # weight norm grown this many times in one update (lr 1e3: ~1e4x; lr 5e-2 on a new model: ~3x)
)
WEIGHT_LIMIT = (
    1e6  # largest |weight|: trained LMs stay below ~1e2; lr 1e30 leaves 1e30, which overflows sampling
)
KL_DIVERGED = (
    10.0  # KL this many times kl_stop in one step: the previous update broke the policy, roll it back
)


def adapt_beta(
    beta: float, kl: float, target: float, horizon: int, beta_min: float, beta_max: float
) -> float:
    """One step of the adaptive KL rule: a dead band of x1.5 around the target, outside it a geometric change.

    `horizon` steps of KL persistently outside the band double (or halve) beta: slow enough that one noisy
    step moves it little, fast enough to react within a few dozen steps.

    >>> adapt_beta(0.01, kl=1.0, target=0.1, horizon=1, beta_min=1e-4, beta_max=1.0)
    0.02
    >>> adapt_beta(0.01, kl=0.1, target=0.1, horizon=1, beta_min=1e-4, beta_max=1.0)
    0.01
    >>> adapt_beta(0.01, kl=0.01, target=0.1, horizon=1, beta_min=1e-4, beta_max=1.0)
    0.005
    """
    factor = 2.0 ** (1.0 / horizon)
    if kl > 1.5 * target:
        beta = beta * factor
    elif kl < target / 1.5:
        beta = beta / factor
    return float(min(max(beta, beta_min), beta_max))


def _copy_to_host(src, dst=None):
    """A host copy of a (nested) state dict, written into `dst` (an earlier copy of the same structure) when its
    tensors fit, so that memory is allocated once per run; pinned and asynchronous from a GPU (the copy is
    queued before the next update on the same stream, so it reads the weights as they are now)."""
    if torch.is_tensor(src):
        src = src.detach()
        if dst is None or not torch.is_tensor(dst) or dst.shape != src.shape or dst.dtype != src.dtype:
            dst = torch.empty(src.shape, dtype=src.dtype, pin_memory=src.is_cuda)
        return dst.copy_(src, non_blocking=src.is_cuda)
    if isinstance(src, dict):
        old = dst if isinstance(dst, dict) else {}
        return {k: _copy_to_host(v, old.get(k)) for k, v in src.items()}
    if isinstance(src, (list, tuple)):
        old = dst if isinstance(dst, (list, tuple)) and len(dst) == len(src) else [None] * len(src)
        return type(src)(_copy_to_host(v, o) for v, o in zip(src, old, strict=True))
    return src


class Snapshot:
    """Trainable weights + optimizer state (+ any extra scalars) of a healthy step, kept in host memory.

    Only trainable parameters are copied: frozen ones (a PEFT base model) are never updated, so cannot go bad.
    `reuse`: an older Snapshot whose memory this one takes over (no allocation per snapshot).
    """

    def __init__(self, model: torch.nn.Module, optimizer, step: int, extra: dict | None = None, reuse=None):
        self.step = step
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.params = _copy_to_host(trainable, reuse.params if reuse else None)
        self.optimizer = _copy_to_host(optimizer.state_dict(), reuse.optimizer if reuse else None)
        self.extra = dict(extra or {})

    @torch.no_grad()
    def restore(self, model: torch.nn.Module, optimizer) -> None:
        for name, param in model.named_parameters():
            if name in self.params:
                param.copy_(self.params[name])
        # a copy: on CPU torch would adopt these very tensors as the live state, which a later snapshot reuses
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))


def all_finite(tensors) -> bool:
    """True when every tensor is finite: the largest |value| over all of them, one fused pass, one host sync."""
    return math.isfinite(max_abs(tensors))


def optimizer_params(optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def grads_finite(optimizer) -> bool:
    return all_finite([p.grad for p in optimizer_params(optimizer)])


def total_norm(tensors) -> float:
    """L2 norm over all tensors (inf or nan when any is non-finite); torch's fused per-tensor norms, one sync."""
    tensors = [t.detach() for t in tensors if t is not None]
    return float(torch.nn.utils.get_total_norm(tensors, 2.0)) if tensors else 0.0


def max_abs(tensors) -> float:
    """Largest |value| over all tensors (nan when any holds a nan), like total_norm."""
    tensors = [t.detach() for t in tensors if t is not None and t.numel()]
    return float(torch.nn.utils.get_total_norm(tensors, float("inf"))) if tensors else 0.0


def spike(value: float, history: list[float], floor: float) -> float | None:
    """value / median(history) when that exceeds SPIKE (history of at least 5 values, median at least floor)."""
    if len(history) < 5:
        return None
    ratio = value / max(sorted(history)[len(history) // 2], floor)
    return ratio if ratio > SPIKE else None


def drop_grads(optimizer) -> None:
    """Set every gradient to None: torch optimizers skip such parameters, so the coming step is a no-op."""
    for p in optimizer_params(optimizer):
        p.grad = None


def scale_lr(optimizer, scheduler, factor: float) -> None:
    """Multiply the learning rate by factor for the rest of the run.

    LambdaLR (every Trainer schedule) recomputes lr = base_lr * lambda(step) at each step, so the base LRs are
    scaled too; they live in the scheduler's state dict, so the cut also survives a resume.
    """
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        set_logged_lr(scheduler, optimizer)


def save_batch(micro_batches: list, path: str, **info) -> str:
    """torch.save the micro-batches of an optimizer step (tensors moved to CPU) plus context. Only tensors,
    numbers and strings: read it back with `torch.load(path, weights_only=True)`, never a full unpickle."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    batches = _copy_to_host(list(micro_batches))
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the copies from a GPU are asynchronous
    torch.save({**info, "micro_batches": batches}, path)
    return path


def memory_metrics() -> dict[str, float]:
    """Peak host RSS (GiB) and, with CUDA, peak allocated GPU memory on this process's device (GiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_gib = rss / 2**30 if sys.platform == "darwin" else rss / 2**20
    out = {"memory/cpu_peak_rss_gib": rss_gib}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["memory/cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


class StepGuard(TrainerCallback):
    """Adaptive KL, the KL guard and rollback of bad steps, at the Trainer loop's optimizer-step boundary.

    The trainer reports each micro-batch (record_inputs from compute_loss, record_step from training_step).
    A step is bad when it is non-finite (loss, gradient, weights) or diverged though finite: a loss or gradient
    norm SPIKE times the recent median, the weight norm grown WEIGHT_JUMP times by one update, any |weight|
    above WEIGHT_LIMIT, or KL above KL_DIVERGED x kl_stop. on_pre_optimizer_step judges what the forward and
    backward measured and drops the gradients of a bad step, so the optimizer step is a no-op; on_step_end
    judges the updated weights. A bad step rolls back to a snapshot taken before the bad update (weights +
    optimizer), cuts the LR and saves the batch; a healthy one runs the KL guard and the beta update and may
    take a new snapshot. `halt_reason` says why it stopped.

    Two snapshots are kept: a step's KL measures the weights the previous update made, so KL divergence rolls
    back past that update, to the older snapshot (and the KL guard then stops the run, as above kl_stop);
    every other fault is the current update's or batch's.

    What it uses of the trainer (trl_compat.GRPOSeams): model, optimizer, lr_scheduler, accelerator, state,
    `beta` (which it controls), log_metric() and drop_buffered_completions().
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.halt_reason: str | None = None
        self.healthy = True  # last step good with KL below kl_warn: its checkpoint may become stable
        self.nan_recoveries = 0  # rollbacks in the whole run
        self._retries = 0  # consecutive rollbacks
        self._kl: list[float] = []  # KL of each micro-batch of the current optimizer step
        self._loss = 0.0  # |loss| summed over the micro-batches of the current optimizer step
        self._inputs: list[dict] = []  # the micro-batches of the current optimizer step
        self._bad: str | None = None  # what went wrong: "loss" (non-finite), ..., or "diverged: why"
        self._measured: dict[str, float] = {}  # loss and gradient norm of the current optimizer step
        self._grad_norm: float | None = None  # reported by the trainer's clipping, before the clip
        self._blame_previous = False  # the bad step is the previous update's (KL): roll back past it
        self._norm_before = 0.0  # weight norm before the current update
        self._history: dict[str, list[float]] = {"loss": [], "gradient norm": []}  # of healthy steps
        self._kl_warned = False
        self._snapshot: Snapshot | None = None  # the newest healthy state
        self._older: Snapshot | None = None  # the one before it

    def record_inputs(self, inputs: dict) -> None:
        self._inputs.append(inputs)  # a reference, kept until the step ends, to save it if it goes bad

    def record_step(self, loss: torch.Tensor, kl_values: list[float]) -> None:
        self._kl.extend(kl_values)
        if self._bad is None and not torch.isfinite(loss).all():
            self._bad = "loss"
        else:
            self._loss += float(loss.detach().abs().sum())

    def record_grad_norm(self, norm) -> None:
        """The gradient norm before clipping (Trainer clips before on_pre_optimizer_step, which sees the clipped)."""
        if norm is not None:
            self._grad_norm = float(norm)

    def take_snapshot(self) -> None:
        t = self.trainer
        older, self._older = self._older, self._snapshot
        self._snapshot = Snapshot(t.model, t.optimizer, t.state.global_step, {"beta": t.beta}, reuse=older)

    def _trainable(self) -> list[torch.Tensor]:
        return [p for p in self.trainer.model.parameters() if p.requires_grad]

    def on_train_begin(self, args, state, control, **kwargs):
        self.take_snapshot()  # after a resume has loaded weights and optimizer
        self._older = None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        optimizer = self.trainer.optimizer
        if self._bad is None and not grads_finite(optimizer):
            self._bad = "gradient"
        kl = sum(self._kl) / len(self._kl) if self._kl else None
        if self._bad is None and kl is not None and kl > KL_DIVERGED * args.kl_stop:
            self._bad = f"diverged: KL {kl:.4g} > {KL_DIVERGED:g} x kl_stop {args.kl_stop}"
            self._blame_previous = True
        if self._bad is None:
            grad_norm = self._grad_norm
            if grad_norm is None:  # no clipping (max_grad_norm 0): measure it here
                grad_norm = total_norm([p.grad for p in optimizer_params(optimizer)])
            measured = {"loss": self._loss, "gradient norm": grad_norm}
            for name, value in measured.items():
                ratio = spike(value, self._history[name], SPIKE_FLOOR[name])
                if ratio is not None and self._bad is None:
                    self._bad = f"diverged: {name} {value:.4g} is {ratio:.3g}x the median of recent steps"
            self._measured = measured
        if self._bad is not None:
            drop_grads(optimizer)
        else:
            self._norm_before = total_norm(self._trainable())

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        if self._bad is None:
            self._bad = self._judge_weights()
        kl = sum(self._kl) / len(self._kl) if self._kl else None
        if self._bad is not None:
            self._recover(args, state, control)
            if (
                self._blame_previous
            ):  # KL far past kl_stop: the KL guard still stops, with the weights from before
                self._kl_guard(kl, args, state, control)
        else:
            self._retries = 0
            for name, value in self._measured.items():
                self._history[name] = (self._history[name] + [value])[-SPIKE_HISTORY:]
            self.healthy = kl is None or kl <= args.kl_warn
            if kl is not None:
                self._kl_guard(kl, args, state, control)
                if args.adaptive_kl:
                    t.beta = adapt_beta(
                        t.beta, kl, args.kl_target, args.kl_horizon, args.beta_min, args.beta_max
                    )
            if self.healthy and state.global_step % args.nan_snapshot_steps == 0:
                self.take_snapshot()
        t.log_metric("beta", t.beta)
        t.log_metric("nan_recoveries", self.nan_recoveries)
        for name, value in memory_metrics().items():
            t.log_metric(name, value)
        self._kl, self._inputs, self._bad, self._loss, self._blame_previous = [], [], None, 0.0, False
        self._measured, self._grad_norm = {}, None

    def _judge_weights(self) -> str | None:
        """What is wrong with the weights the update just made, or None."""
        weights = self._trainable()
        largest = max_abs(weights)
        if not math.isfinite(largest):
            return "weights after the update"
        if largest > WEIGHT_LIMIT:
            return f"diverged: a weight reached {largest:.3g} (limit {WEIGHT_LIMIT:g})"
        norm = total_norm(weights)
        if self._norm_before > 0 and norm > WEIGHT_JUMP * self._norm_before:
            return f"diverged: one update grew the weight norm {norm / self._norm_before:.3g}x"
        return None

    def _kl_guard(self, kl: float, args, state, control) -> None:
        if kl > args.kl_stop:
            rolled = f" (rolled back to step {self._snapshot.step} first)" if self._blame_previous else ""
            self.halt_reason = (
                f"KL guard: KL {kl:.4g} > kl_stop {args.kl_stop} at step {state.global_step}; the policy ran "
                f"away from the reference{rolled}. A checkpoint was saved in {args.output_dir}. Lower learning_rate, "
                "raise beta (or set adaptive_kl: true), or raise kl_stop; resume with "
                "--resume_from_checkpoint stable."
            )
            logger.error(self.halt_reason)
            control.should_save = True  # Trainer saves right after on_step_end, then the loop ends
            control.should_training_stop = True
        elif kl > args.kl_warn and not self._kl_warned:
            logger.warning(
                f"KL {kl:.4g} > kl_warn {args.kl_warn} at step {state.global_step} (kl_stop {args.kl_stop})"
            )
        self._kl_warned = kl > args.kl_warn

    def _recover(self, args, state, control) -> None:
        """Roll back to a snapshot taken before the bad update, cut the LR, save the batch."""
        t, step = self.trainer, state.global_step
        self._retries += 1
        self.nan_recoveries += 1
        self.healthy = False
        name = f"step-{step}-rank{t.accelerator.process_index}.pt"
        path = save_batch(
            self._inputs,
            os.path.join(args.output_dir, "nan_batches", name),
            reason=self._bad,
            global_step=step,
        )
        if self._blame_previous and self._older is not None:
            self._snapshot = self._older  # the newest snapshot holds the update that broke the policy
        self._older = None
        lrs = [group["lr"] for group in t.optimizer.param_groups]
        self._snapshot.restore(t.model, t.optimizer)
        for group, lr in zip(t.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr  # the schedule keeps its course; only the cut below changes it
        scale_lr(t.optimizer, t.lr_scheduler, args.nan_lr_factor)
        t.beta = self._snapshot.extra["beta"]
        t.drop_buffered_completions()  # TRL's buffered completions and old log-probs came from the bad weights
        what = self._bad if self._bad.startswith("diverged") else f"non-finite {self._bad}"
        logger.warning(
            f"{what} at step {step}: update skipped, weights + optimizer restored from step "
            f"{self._snapshot.step}, LR x{args.nan_lr_factor}, batch saved to {path}"
        )
        if self._retries > args.nan_max_retries:
            self.halt_reason = (
                f"NaN/Inf recovery gave up: {self._retries} bad steps in a row (last at step {step}: {what}); "
                f"weights are those of step {self._snapshot.step}. Inspect {os.path.dirname(path)}, lower "
                "learning_rate or max_grad_norm, or raise nan_max_retries."
            )
            logger.error(self.halt_reason)
            control.should_training_stop = True
