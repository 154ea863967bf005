"""The step guard: StepGuard (a TrainerCallback, at the bottom) judges each optimizer step, rolls back a bad one
and stops a run that cannot go on. A step is bad when it is non-finite (loss, gradient, weights) or diverged
(the thresholds below). A bad step is rolled back to a host snapshot of the trainable weights + optimizer state,
the LR is cut and its micro-batches are saved to output_dir/nan_batches/. It also runs adaptive beta and the KL
guard (grpo/kl.py).

    from rookworld_trl.grpo.guard import Snapshots
    snapshots = Snapshots(); snapshots.take(model, optimizer, step, beta=0.01)
    target = snapshots.rollback_target(past_last_update=False); target.restore(model, optimizer)

Two snapshots are kept: a step's KL measures the weights the previous update made, so a KL blow-up rolls back past
that update, to the older one. Under FSDP2 each rank keeps a host copy of its own shards and restores them in place.
"""

from __future__ import annotations

import copy
import logging
import math
import os

import torch
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from rookworld_trl.grpo.kl import adapt_beta, kl_guard
from rookworld_trl.training.metrics_log import memory_metrics
from rookworld_trl.training.trl_compat import set_logged_lr

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- snapshots


def local_shard(t):
    """This rank's shard of an FSDP2 parameter or optimizer state (a DTensor); any other tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def like_live(saved, live):
    """A snapshot's optimizer state (host copies of this rank's shards) in the form of the live state (FSDP2)."""
    if isinstance(live, DTensor) and torch.is_tensor(saved):
        return DTensor.from_local(saved.to(live.device), live.device_mesh, live.placements, run_check=False,
                                  shape=live.shape, stride=live.stride())  # fmt: skip
    if isinstance(saved, dict) and isinstance(live, dict):
        return {k: like_live(v, live.get(k)) for k, v in saved.items()}
    if isinstance(saved, (list, tuple)) and isinstance(live, (list, tuple)) and len(saved) == len(live):
        return type(saved)(like_live(v, w) for v, w in zip(saved, live, strict=True))
    return saved


def copy_to_host(src, dst=None):
    """A host copy of a (nested) state dict, written into `dst` (an earlier copy) when its tensors fit, so that
    memory is allocated once per run; pinned and asynchronous from a GPU (queued before the next update).

    >>> copy_to_host({"w": torch.ones(2), "n": 3, "l": [torch.zeros(1)]})
    {'w': tensor([1., 1.]), 'n': 3, 'l': [tensor([0.])]}
    """
    if torch.is_tensor(src):
        src = local_shard(src).detach()
        if dst is None or not torch.is_tensor(dst) or dst.shape != src.shape or dst.dtype != src.dtype:
            dst = torch.empty(src.shape, dtype=src.dtype, pin_memory=src.is_cuda)
        return dst.copy_(src, non_blocking=src.is_cuda)
    if isinstance(src, dict):
        old = dst if isinstance(dst, dict) else {}
        return {k: copy_to_host(v, old.get(k)) for k, v in src.items()}
    if isinstance(src, (list, tuple)):
        old = dst if isinstance(dst, (list, tuple)) and len(dst) == len(src) else [None] * len(src)
        return type(src)(copy_to_host(v, o) for v, o in zip(src, old, strict=True))
    return src


class Snapshot:
    """A healthy step's trainable weights + optimizer state (+ extras) in host memory, reusing `reuse`'s memory."""

    def __init__(self, model: torch.nn.Module, optimizer, step: int, extra: dict | None = None, reuse=None):
        self.step = step
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.params = copy_to_host(trainable, reuse.params if reuse else None)
        self.optimizer = copy_to_host(optimizer.state_dict(), reuse.optimizer if reuse else None)
        self.extra = dict(extra or {})

    @torch.no_grad()
    def restore(self, model: torch.nn.Module, optimizer) -> None:
        """The weights and optimizer state back as they were, the optimizer's LRs included."""
        for name, param in model.named_parameters():
            if name in self.params:
                local_shard(param).copy_(self.params[name])
        # a copy: on CPU torch would adopt these very tensors as the live state, which a later snapshot reuses
        optimizer.load_state_dict(like_live(copy.deepcopy(self.optimizer), optimizer.state_dict()))


class Snapshots:
    """The newest healthy snapshot and the one before it."""

    def __init__(self):
        self.newest: Snapshot | None = None
        self.older: Snapshot | None = None

    def take(self, model, optimizer, step: int, **extra) -> None:
        reuse, self.older = self.older, self.newest
        self.newest = Snapshot(model, optimizer, step, extra, reuse=reuse)

    def rollback_target(self, past_last_update: bool) -> Snapshot:
        """The snapshot to restore, the older one when `past_last_update` (KL); none older is left (it may be bad)."""
        if past_last_update and self.older is not None:
            self.newest = self.older
        self.older = None
        return self.newest


# ----------------------------------------------------------------------------- faults

# Divergence: finite numbers that no healthy step produces. Each threshold is orders of magnitude past normal,
# so that noise never triggers a rollback (each costs a step and halves the LR).
SPIKE = 1e3  # loss or gradient norm this many times the median of the last healthy steps ...
SPIKE_FLOOR = {"loss": 0.1, "gradient norm": 1.0}  # ... and the median taken at least this (early steps ~0)
SPIKE_HISTORY = 20  # healthy steps the medians are taken over; judged once 5 are in
# weight norm grown this many times in one update (lr 1e3: ~1e4x; lr 5e-2 on a new model: ~3x)
WEIGHT_JUMP = 10.0
# largest |weight|: trained LMs stay below ~1e2; lr 1e30 leaves 1e30, which overflows sampling
WEIGHT_LIMIT = 1e6
# KL this many times kl_stop in one step: the previous update broke the policy, roll it back
KL_DIVERGED = 10.0


def optimizer_params(optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def total_norm(tensors) -> float:
    """L2 norm over all tensors (inf or nan when any is non-finite); torch's fused per-tensor norms, one sync.

    >>> total_norm([torch.tensor([3.0]), torch.tensor([4.0]), None])
    5.0
    """
    tensors = [t.detach() for t in tensors if t is not None]
    return float(torch.nn.utils.get_total_norm(tensors, 2.0)) if tensors else 0.0


def max_abs(tensors) -> float:
    """Largest |value| over all tensors (nan when any holds a nan), like total_norm.

    >>> max_abs([torch.tensor([1.0, -7.0]), torch.tensor([2.0])])
    7.0
    """
    tensors = [t.detach() for t in tensors if t is not None and t.numel()]
    return float(torch.nn.utils.get_total_norm(tensors, float("inf"))) if tensors else 0.0


def all_finite(tensors) -> bool:
    """True when every tensor is finite: the largest |value| over all of them, one fused pass, one host sync.

    >>> all_finite([torch.ones(3)]), all_finite([torch.tensor([1.0, float("inf")])])
    (True, False)
    """
    return math.isfinite(max_abs(tensors))


def spike(value: float, history: list[float], floor: float) -> float | None:
    """value / median(history) when that exceeds SPIKE (history of at least 5 values, median at least floor).

    >>> spike(2000.0, [1.0] * 5, 0.1), spike(500.0, [1.0] * 5, 0.1), spike(2000.0, [1.0] * 4, 0.1)
    (2000.0, None, None)
    """
    if len(history) < 5:
        return None
    ratio = value / max(sorted(history)[len(history) // 2], floor)
    return ratio if ratio > SPIKE else None


def across_ranks(values: list[float], op: str = "sum") -> list[float]:
    """`values` reduced element-wise over the ranks ("sum" or "max") in one all-reduce; on one process they come
    back untouched (not even a float64 round trip: single-process runs stay bit-identical).


    >>> across_ranks([1.5, float("inf")], "max")
    [1.5, inf]
    """
    dist = torch.distributed
    if world_size() == 1:
        return list(values)
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        device = torch.device("cuda", torch.cuda.current_device())
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor.tolist()


def world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# A micro-batch's tensors in the order a GRPO step makes them (key -> the name the console and metrics use):
# the advantages come last, since the importance-sampling ratio is multiplied into them.
# The first one non-finite on the tokens that count names the cause of a bad step.
BATCH_QUANTITIES = (
    ("sampling_per_token_logps", "sampler log-probs"),
    ("old_per_token_logps", "old log-probs"),
    ("ref_per_token_logps", "reference log-probs"),
    ("importance_sampling_ratio", "importance sampling ratio"),
    ("advantages", "advantages"),
)


def finite_where(tensor: torch.Tensor, mask: torch.Tensor) -> bool:
    """True when `tensor` is finite wherever `mask` (B, T) counts; a (B,) or (B, 1) tensor counts per row.

    >>> finite_where(torch.tensor([[1.0, float("nan")]]), torch.tensor([[1, 0]]))
    True
    """
    tensor = tensor.detach().float()
    if tensor.shape != mask.shape:  # per sequence: its rows with at least one counted token
        return bool(torch.isfinite(tensor.reshape(len(mask), -1)[mask.sum(-1) > 0]).all())
    return bool(torch.isfinite(tensor[mask.bool()]).all())


def first_non_finite_input(rewards: torch.Tensor | None, batches: list[dict]) -> str | None:
    """The first non-finite quantity that went into a step's loss: the rewards (only +-inf: NaN marks a skipped
    row), then each micro-batch's BATCH_QUANTITIES on its completion tokens.

    >>> first_non_finite_input(torch.tensor([[1.0, float("inf")]]), [])
    'rewards'
    """
    if rewards is not None and torch.isinf(rewards).any():
        return "rewards"
    for key, name in BATCH_QUANTITIES:
        for batch in batches:
            if batch.get(key) is not None and not finite_where(batch[key], batch["completion_mask"]):
                return name
    return None


def first_non_finite_policy_term(logps: torch.Tensor, batch: dict) -> str | None:
    """The first non-finite term the loss builds from the policy's (recomputed) log-probs of a micro-batch.

    >>> batch = {"completion_mask": torch.ones(1, 2), "old_per_token_logps": torch.tensor([[-1.0, -1e4]])}
    >>> first_non_finite_policy_term(torch.tensor([[-1.0, -1.0]]), batch)
    'policy/old ratio'
    """
    mask = batch["completion_mask"]
    if not finite_where(logps, mask):
        return "policy log-probs"
    terms = (
        ("old_per_token_logps", "policy/old ratio", 1.0),
        ("ref_per_token_logps", "KL to the reference", -1.0),
    )
    for key, name, sign in terms:
        if batch.get(key) is not None and not finite_where(torch.exp(sign * (logps - batch[key])), mask):
            return name
    return None


def first_non_finite_grad(named_parameters) -> str | None:
    """'gradient of NAME': the last parameter (nearest the output) with a non-finite gradient, where it entered."""
    named = [(name, p.grad) for name, p in named_parameters if p.grad is not None]
    if all_finite([grad for _, grad in named]):  # one fused pass: the common case costs one host sync
        return None
    bad = [name for name, grad in named if not all_finite([grad])]
    return f"gradient of {bad[-1]}" + (f" (and {len(bad) - 1} parameters before it)" if len(bad) > 1 else "")


def save_batch(micro_batches: list, path: str, **info) -> str:
    """torch.save the micro-batches of a step plus context; read with `torch.load(path, weights_only=True)`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    batches = copy_to_host(list(micro_batches))
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the copies from a GPU are asynchronous
    torch.save({**info, "micro_batches": batches}, path)
    return path


def roll_back(snapshot: Snapshot, model, optimizer, scheduler, lr_factor: float) -> None:
    """Weights + optimizer from `snapshot`, the schedule's current LRs kept, then cut by lr_factor for the rest
    of the run: the base LRs too, as LambdaLR recomputes lr = base_lr * lambda(step) (they survive a resume)."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    snapshot.restore(model, optimizer)
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr * lr_factor  # the schedule keeps its course; only the cut changes it
        if "initial_lr" in group:
            group["initial_lr"] *= lr_factor
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * lr_factor for lr in scheduler.base_lrs]
        set_logged_lr(scheduler, optimizer)


class StepFaults:
    """What the micro-batches of one optimizer step reported, and the verdict on it: `bad` (None: good) and
    `blame_previous` (the fault is the previous update's: KL). Under DDP every verdict is the ranks' common one,
    so that the ranks' weights never part."""

    def __init__(self):
        self.history: dict[str, list[float]] = {"loss": [], "gradient norm": []}  # of healthy steps
        self.reset()

    def reset(self) -> None:
        """A new optimizer step."""
        self.kl: list[float] = []  # KL of each micro-batch
        self.loss = 0.0  # |loss| summed over the micro-batches
        self.inputs: list[dict] = []  # the micro-batches, kept to save them if the step goes bad
        self.bad: str | None = None
        self.cause: str | None = None  # a non-finite step: the first quantity that went non-finite
        self.grad_cause: str | None = None  # the parameter whose gradient went non-finite, before clipping
        self.measured: dict[str, float] = {}  # loss and gradient norm
        self.grad_norm: float | None = None  # reported by the trainer's clipping, before the clip
        self.blame_previous = False
        self.norm_before = 0.0  # weight norm before the update
        self.agreed_kl: float | None = None  # the ranks' mean KL, once judge_update has reduced it

    def record_step(self, loss: torch.Tensor, kl_values: list[float]) -> None:
        self.kl.extend(kl_values)
        if self.bad is None and not torch.isfinite(loss).all():
            self.bad = self.cause = "loss"
        else:
            self.loss += float(loss.detach().abs().sum())

    def record_grads(self, named_parameters) -> None:
        """Before clipping (which spreads one NaN to every gradient): where a non-finite gradient entered."""
        if self.cause is None:
            self.grad_cause = first_non_finite_grad(named_parameters)

    def record_grad_norm(self, norm) -> None:
        """The gradient norm before clipping (Trainer clips before on_pre_optimizer_step, which sees the clipped)."""
        if norm is not None:
            self.grad_norm = float(norm)

    def mean_kl(self) -> float | None:
        """The step's KL: the mean over the ranks once judge_update has run, before that this rank's own."""
        if self.agreed_kl is not None:
            return self.agreed_kl
        return sum(self.kl) / len(self.kl) if self.kl else None

    def _agree(self, reason: str | None) -> None:
        """Make `bad` (and `blame_previous`) the ranks' common verdict; a collective."""
        if world_size() == 1:
            return
        bad_elsewhere, blame = across_ranks([float(self.bad is not None), float(self.blame_previous)], "max")
        if self.bad is None and bad_elsewhere:
            self.bad = reason or "diverged on another rank"
        self.blame_previous = bool(blame)

    def judge_update(self, optimizer, trainable: list[torch.Tensor], kl_stop: float, named=()) -> None:
        """Before the optimizer step: a bad step's gradients are dropped, so the step is a no-op."""
        if self.bad is None and not all_finite([p.grad for p in optimizer_params(optimizer)]):
            self.bad = "gradient"
            self.cause = self.grad_cause or first_non_finite_grad(named) or "gradient"
        loss, kl = self.loss, self.mean_kl()
        grad_norm = 0.0
        if self.bad is None:
            grad_norm = self.grad_norm
            if grad_norm is None:  # no clipping (max_grad_norm 0): measure it here
                grad_norm = total_norm([p.grad for p in optimizer_params(optimizer)])
        ranks = world_size()
        if ranks > 1:  # the ranks' loss and KL sums and bad flags, and their largest gradient norm
            local = [loss, sum(self.kl), len(self.kl), float(self.bad is not None)]
            loss, kl_sum, kl_count, bad_ranks = across_ranks(local, "sum")
            grad_norm = across_ranks([grad_norm], "max")[0]
            loss = loss / ranks
            kl = self.agreed_kl = kl_sum / kl_count if kl_count else None
            if self.bad is None and bad_ranks:
                self.bad = "loss or gradient on another rank"
        if self.bad is None and kl is not None and kl > KL_DIVERGED * kl_stop:
            self.bad = f"diverged: KL {kl:.4g} > {KL_DIVERGED:g} x kl_stop {kl_stop}"
            self.blame_previous = True
        if self.bad is None:
            self.measured = {"loss": loss, "gradient norm": grad_norm}
            for name, value in self.measured.items():
                ratio = spike(value, self.history[name], SPIKE_FLOOR[name])
                if ratio is not None and self.bad is None:
                    self.bad = f"diverged: {name} {value:.4g} is {ratio:.3g}x the median of recent steps"
        if self.bad is None:
            self.norm_before = total_norm(trainable)
        else:  # torch optimizers skip a parameter without a gradient: the coming step is a no-op
            for p in optimizer_params(optimizer):
                p.grad = None

    def judge_weights(self, trainable: list[torch.Tensor]) -> None:
        """After the optimizer step: what is wrong with the weights the update just made, on any rank."""

        largest = max_abs(trainable) if self.bad is None else 0.0
        if not math.isfinite(largest):
            self.bad = "weights after the update"
        elif largest > WEIGHT_LIMIT:
            self.bad = f"diverged: a weight reached {largest:.3g} (limit {WEIGHT_LIMIT:g})"
        elif self.bad is None and self.norm_before > 0:
            norm = total_norm(trainable)
            if norm > WEIGHT_JUMP * self.norm_before:
                self.bad = f"diverged: one update grew the weight norm {norm / self.norm_before:.3g}x"
        self._agree("diverged: bad weights after the update on another rank")

    def accept(self) -> None:
        """A good step: its loss and gradient norm join the history the spikes are measured against."""
        for name, value in self.measured.items():
            self.history[name] = (self.history[name] + [value])[-SPIKE_HISTORY:]


# ----------------------------------------------------------------------------- the guard


class StepGuard(TrainerCallback):
    """Judges each optimizer step of RookWorldGRPOTrainer (before it, then its new weights): a bad step rolls
    back, cuts the LR and saves the batch; a healthy one runs the KL guard and adaptive beta and may take a
    snapshot. It writes the trainer's `run`; `halt_reason` says why it stopped the run."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.faults = StepFaults()  # the trainer reports each micro-batch to it
        self.snapshots = Snapshots()
        self.halt_reason: str | None = None
        self._retries = 0  # consecutive rollbacks
        self._warned = False  # KL above kl_warn at the last check: warn once per excursion
        self.scored_rewards = None  # (N, F) of the generation batch the coming steps train on

    def _trainable(self) -> list:
        return [p for p in self.trainer.model.parameters() if p.requires_grad]

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer  # after a resume has loaded weights and optimizer; no older snapshot
        self.snapshots.take(t.model, t.optimizer, t.state.global_step, beta=t.run.beta)
        self.snapshots.older = None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        faults, model = self.faults, self.trainer.model
        faults.judge_update(self.trainer.optimizer, self._trainable(), args.kl_stop, model.named_parameters())
        if faults.cause is not None:  # non-finite on this rank: name what went first, upstream of the loss
            faults.cause = self.explain() or faults.cause

    def explain(self) -> str | None:
        """The first non-finite quantity upstream of the loss; None: the loss or a gradient was the first."""
        t, batches = self.trainer, self.faults.inputs
        found = first_non_finite_input(self.scored_rewards, batches)
        for batch in batches if found is None else ():
            ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
            mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
            found = first_non_finite_policy_term(
                t.scoring_logps(ids, mask, batch["completion_ids"].size(1)), batch
            )
            if found is not None:
                break
        return found

    def on_step_end(self, args, state, control, **kwargs):
        t, faults, run = self.trainer, self.faults, self.trainer.run
        faults.judge_weights(self._trainable())
        kl = faults.mean_kl()
        if faults.bad is not None:
            self._recover(args, state, control)
            # KL far past kl_stop: the KL guard still stops, with the weights from before
            if faults.blame_previous:
                self._kl_guard(kl, args, state, control, rolled_back_to=self.snapshots.newest.step)
        else:
            self._retries = 0
            faults.accept()
            run.healthy = kl is None or kl <= args.kl_warn
            if kl is not None:
                self._kl_guard(kl, args, state, control)
                if args.adaptive_kl:
                    run.beta = adapt_beta(
                        run.beta, kl, args.kl_target, args.kl_horizon, args.beta_min, args.beta_max
                    )
            if run.healthy and state.global_step % args.nan_snapshot_steps == 0:
                self.snapshots.take(t.model, t.optimizer, state.global_step, beta=run.beta)
        t.metrics.add("beta", run.beta)
        t.metrics.add("nan_recoveries", run.nan_recoveries)
        for name, value in memory_metrics().items():
            t.metrics.add(name, value)
        faults.reset()

    def _kl_guard(self, kl, args, state, control, rolled_back_to=None) -> None:
        halt = kl_guard(kl, args, state.global_step, args.output_dir, self._warned, rolled_back_to)
        self._warned = kl > args.kl_warn
        if halt:
            self.halt_reason = halt
            control.should_save = True  # Trainer saves right after on_step_end, then the loop ends
            control.should_training_stop = True

    def _recover(self, args, state, control) -> None:
        """Roll back to a snapshot taken before the bad update, cut the LR, save the batch."""
        t, step, bad, cause = self.trainer, state.global_step, self.faults.bad, self.faults.cause
        self._retries += 1
        t.run.nan_recoveries += 1
        t.run.healthy = False
        name = os.path.join(
            args.output_dir, "nan_batches", f"step-{step}-rank{t.accelerator.process_index}.pt"
        )
        path = save_batch(self.faults.inputs, name, reason=bad, cause=cause or "", global_step=step)
        snapshot = self.snapshots.rollback_target(past_last_update=self.faults.blame_previous)
        roll_back(snapshot, t.model, t.optimizer, t.lr_scheduler, args.nan_lr_factor)
        t.run.beta = float(snapshot.extra["beta"])
        t.drop_buffered_completions()  # TRL's buffered completions and old log-probs came from the bad weights
        what = bad if bad.startswith("diverged") else f"non-finite {bad} (first non-finite: {cause})"
        if cause is not None:  # one metric per kind: a gradient's parameter is named in the line below
            t.metrics.add(f"guard/non_finite/{cause.split(' of ')[0]}", 1.0)
        logger.warning(
            f"{what} at step {step}: update skipped, weights + optimizer restored from step "
            f"{snapshot.step}, LR x{args.nan_lr_factor}, batch saved to {path}"
        )
        if self._retries > args.nan_max_retries:
            self.halt_reason = (
                f"NaN/Inf recovery gave up: {self._retries} bad steps in a row (last at step {step}: {what}); "
                f"weights are those of step {snapshot.step}. Inspect {os.path.dirname(path)}, lower "
                "learning_rate or max_grad_norm, or raise nan_max_retries."
            )
            logger.error(self.halt_reason)
            control.should_training_stop = True
