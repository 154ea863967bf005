"""The sampler's key/value cache (model/decoding.py decodes over it): prompt groups and their slots (`Layout`), and
the keys and values of the distinct prompts and of every slot's new tokens (`KVCache`), preallocated for
max_new_tokens and written in place; on CPU in memory reused from call to call, in transparent huge pages
where the OS has them.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import weakref

import torch

# torch's CPU bmm runs a plain loop, ~3x slower than MKL's, for matrices of fewer multiply-adds than this
NAIVE_BMM = 400
HUGE_PAGE = 2 << 20  # bytes (x86-64, and arm64 with 4 KiB pages)


def left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every row right-aligned."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


class Layout:
    """Where each row decodes: prompt groups (U distinct prompts) x `width` slots each. Row r is slot
    slot[r]; slots no row uses (groups of unequal size) decode too and are thrown away."""

    def __init__(self, prompt_ids: list[list[int]], pad_id: int, device):
        distinct = list(dict.fromkeys(map(tuple, prompt_ids)))
        group = {p: i for i, p in enumerate(distinct)}
        taken = [0] * len(distinct)
        rows = []
        for p in prompt_ids:
            rows.append((group[tuple(p)], taken[group[tuple(p)]]))
            taken[group[tuple(p)]] += 1
        self.width = max(taken)
        self.slot = [g * self.width + j for g, j in rows]
        self.ids, self.mask = left_pad([list(p) for p in distinct], pad_id, device)
        used = torch.zeros(len(distinct) * self.width, dtype=torch.bool)
        used[self.slot] = True
        self.unused = (~used).to(device)


class KVCache:
    """Keys and values (layer, 0 keys / 1 values, ...) of the distinct prompts, (U*H rows, position, D), and
    of the new tokens of every slot, (U*H rows, slot of the group, position, D), S = U * width slots; additive
    masks (0 or -inf) for the prompts' padding and the new-token columns not yet written (a CUDA graph reads
    them all); the step's queries, (U, H, width, D)."""

    def __init__(self, n_layer, layout: Layout, n_head, head_dim, max_new, dtype, device, owner):
        U, P = layout.ids.shape
        G, H, D = layout.width, n_head, head_dim
        pad = torch.zeros(U, P, dtype=dtype, device=device).masked_fill_(layout.mask == 0, -float("inf"))
        self.prompt_bias = pad.repeat_interleave(H, dim=0)[:, None, :]  # (U*H, 1, P)
        shapes = (n_layer, 2, U * H, P, D), (n_layer, 2, U * H, G, max_new, D)
        # a step reads the first max(end, floor) new-token columns, the unwritten ones masked, so those must be
        # finite: on CPU enough columns for MKL's bmm, zeroed (the rest of this reused memory is never read
        # before it is written); a CUDA graph reads every column (end = max_new)
        if device.type == "cpu":
            self.prompt, self.new = _reused(owner, shapes, dtype)
            self.floor = min(max_new, -(-NAIVE_BMM // D))
            self.new[..., : self.floor, :].zero_()
        else:
            self.prompt = torch.empty(shapes[0], dtype=dtype, device=device)
            self.new, self.floor = torch.zeros(shapes[1], dtype=dtype, device=device), 1
        self.unwritten = torch.full((1, 1, max_new), -float("inf"), dtype=dtype, device=device)
        # each step's queries by (group, head, slot); slots that do not run keep stale, finite ones
        self.queries = torch.zeros(U, H, G, D, dtype=dtype, device=device)
        self.kinds = torch.arange(2, device=device).view(1, 2, 1)  # index of keys / values in `new`
        self.groups, self.width, self.n_head = U, G, H
        # slot (u, g), head h -> row (u, h, g) of the queries and outputs (and, times max_new, of `new`)
        heads = self.group_rows(torch.arange(U, device=device)).view(U, 1, H)
        self.slot_rows = (heads * G + torch.arange(G, device=device).view(1, G, 1)).view(U * G, H)
        self._views()

    def _views(self) -> None:
        """Per layer, the views a step reads (made once, not in every step): the prompts' keys transposed
        (U*H, D, P) and values (U*H, P, D); the new tokens' keys/values flat (2, U*H*G*max_new, D) for the
        writes, and by row (U*H*G, max_new, D) for the reads; the queries flat, by group and by row."""
        U, G, H, D = self.groups, self.width, self.n_head, self.new.size(-1)
        self.prompt_keys = [k.transpose(1, 2) for k in self.prompt[:, 0]]
        self.prompt_values = list(self.prompt[:, 1])
        self.new_flat = [new.view(2, -1, D) for new in self.new]
        self.new_keys = [new[0].view(U * H * G, -1, D) for new in self.new]
        self.new_values = [new[1].view(U * H * G, -1, D) for new in self.new]
        queries = self.queries[:U]
        self.query_flat, self.query_groups = queries.view(-1, D), queries.view(U * H, G, D)
        self.query_rows = queries.view(U * H * G, 1, D)

    def group_rows(self, groups: torch.Tensor) -> torch.Tensor:
        """The rows (group, head) of these groups."""
        return (groups[:, None] * self.n_head + torch.arange(self.n_head, device=groups.device)).flatten()

    def keep(self, groups: torch.Tensor, columns: int) -> torch.Tensor:
        """Keep only these prompt groups (ascending; the first `columns` new-token columns of their slots);
        the ones past the new end move into the places of the groups dropped before it. Returns the slots
        kept in their new order, by their old numbers."""
        n = len(groups)
        order = torch.arange(n, device=groups.device)
        stay = torch.zeros(n, dtype=torch.bool, device=groups.device)
        stay[groups[groups < n]] = True
        holes, moving = order[~stay], groups[groups >= n]
        order[holes] = moving
        if len(moving):
            target, source = self.group_rows(holes), self.group_rows(moving)
            self.prompt[:, :, target] = self.prompt[:, :, source]
            self.prompt_bias[target] = self.prompt_bias[source]
            self.new[:, :, target, :, :columns] = self.new[:, :, source, :, :columns]
        rows = n * self.n_head
        self.prompt, self.prompt_bias = self.prompt[:, :, :rows], self.prompt_bias[:rows]
        self.new, self.groups = self.new[:, :, :rows], n
        self._views()
        return (order[:, None] * self.width + torch.arange(self.width, device=groups.device)).flatten()

    def copy(self, source: torch.Tensor, target: torch.Tensor, columns: int) -> None:
        """Slots `target` take the first `columns` new-token keys/values of slots `source`."""
        new = self.new.flatten(2, 3)
        new[:, :, self.slot_rows[target].flatten(), :columns] = new[
            :, :, self.slot_rows[source].flatten(), :columns
        ]


_REUSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> memory of its last cache


def _reused(owner, shapes, dtype) -> list[torch.Tensor]:
    """Uninitialised CPU tensors of these shapes in memory kept with `owner` from call to call: the OS's
    first-touch page faults are paid once, and the memory is in huge pages where the OS has them."""
    sizes = [math.prod(shape) for shape in shapes]
    n, memory = sum(sizes), _REUSED.get(owner)
    if memory is None or memory.numel() < n or memory.dtype != dtype:
        memory = _REUSED[owner] = _huge_pages(n, dtype)
    return [part.view(shape) for part, shape in zip(memory[:n].split(sizes), shapes, strict=True)]


def _huge_pages(n: int, dtype) -> torch.Tensor:
    """n uninitialised elements in memory advised for transparent huge pages (Linux; elsewhere torch.empty).
    Why: a decode step reads thousands of short rows spread over the cache (10 KiB apart); with 4 KiB pages
    most of those reads also miss the TLB."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(n, dtype=dtype)
    memory = mmap.mmap(-1, n * dtype.itemsize + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # transparent huge pages switched off: plain pages
        memory.madvise(mmap.MADV_HUGEPAGE)
    raw = torch.frombuffer(memory, dtype=torch.uint8)  # keeps `memory` alive
    start = -raw.data_ptr() % HUGE_PAGE
    return raw[start : start + n * dtype.itemsize].view(dtype)
