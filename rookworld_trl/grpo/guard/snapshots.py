"""Host-memory snapshots of the trainable weights + optimizer state: the rollback target of a bad step.

    from rookworld_trl.grpo.guard.snapshots import Snapshots
    snapshots = Snapshots(); snapshots.take(model, optimizer, step, beta=0.01)
    target = snapshots.rollback_target(past_last_update=False); target.restore(model, optimizer)

Two are kept: a step's KL measures the weights the previous update made, so a KL blow-up rolls back past that
update, to the older one; every other fault is the current update's or batch's. Their memory is reused from
snapshot to snapshot (allocated once per run). Under FSDP2 (accelerate_configs/fsdp2.yaml) parameters and
optimizer state are DTensors: each rank keeps a host copy of its own shard and restores it in place.
"""

from __future__ import annotations

import copy

import torch
from torch.distributed.tensor import DTensor


def local_shard(t):
    """This rank's shard of an FSDP2 parameter or optimizer state (a DTensor); any other tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def like_live(saved, live):
    """A snapshot's optimizer state (host copies of this rank's shards) in the form of the live state: a
    DTensor on the live one's device and mesh wherever the live state holds one (FSDP2), else as saved."""
    if isinstance(live, DTensor) and torch.is_tensor(saved):
        return DTensor.from_local(saved.to(live.device), live.device_mesh, live.placements, run_check=False,
                                  shape=live.shape, stride=live.stride())  # fmt: skip
    if isinstance(saved, dict) and isinstance(live, dict):
        return {k: like_live(v, live.get(k)) for k, v in saved.items()}
    if isinstance(saved, (list, tuple)) and isinstance(live, (list, tuple)) and len(saved) == len(live):
        return type(saved)(like_live(v, w) for v, w in zip(saved, live, strict=True))
    return saved


def copy_to_host(src, dst=None):
    """A host copy of a (nested) state dict, written into `dst` (an earlier copy of the same structure) when its
    tensors fit, so that memory is allocated once per run; pinned and asynchronous from a GPU (the copy is
    queued before the next update on the same stream, so it reads the weights as they are now).

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
    """Trainable weights + optimizer state (+ any extra scalars) of a healthy step, kept in host memory.

    Only trainable parameters are copied: frozen ones (a PEFT base model) are never updated, so cannot go bad.
    `reuse`: an older Snapshot whose memory this one takes over (no allocation per snapshot).
    """

    def __init__(self, model: torch.nn.Module, optimizer, step: int, extra: dict | None = None, reuse=None):
        self.step = step
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.params = copy_to_host(trainable, reuse.params if reuse else None)
        self.optimizer = copy_to_host(optimizer.state_dict(), reuse.optimizer if reuse else None)
        self.extra = dict(extra or {})

    @torch.no_grad()
    def restore(self, model: torch.nn.Module, optimizer) -> None:
        """The weights and optimizer state back as they were; the optimizer's LRs included (the caller keeps
        the schedule's if it wants them)."""
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

    def start(self, model, optimizer, step: int, **extra) -> None:
        """The first snapshot of a train() call (after a resume has loaded weights and optimizer): no older one."""
        self.take(model, optimizer, step, **extra)
        self.older = None

    def rollback_target(self, past_last_update: bool) -> Snapshot:
        """The snapshot to restore; `past_last_update`: the newest holds the update that broke the policy (KL),
        so the older one is taken when there is one. Either way no older one is left (it may be bad too)."""
        if past_last_update and self.older is not None:
            self.newest = self.older
        self.older = None
        return self.newest
