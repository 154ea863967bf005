"""The project's own sampler for GPT-2 (transformers' GPT2LMHeadModel, the model TRL trains): what
`generation.generate_completions` and GRPO's rollouts (rookworld_trl/grpo/rollout.py) run.

    from rookworld_trl.model.decoding import Decoding, Sampling, sample
    decoding = Decoding(max_new_tokens=80, sampling=Sampling(temperature=0.4), eos_token_ids=[0], pad_token_id=0)
    out = sample(model, [[ids of prompt 1], [ids of prompt 2]], decoding)    # or its fields as keywords
    out.completion_ids, out.logprobs      # per row: tokens up to and with the first EOS; their log-probs

How it is fast, and why it computes what transformers' generate() computes:
  - it calls the model's own modules (so it sees the current weights, LoRA adapters and the fused GELU;
    GPT-2's math: model/reference_gpt2.py), or, when they are transformers' own with no hooks, their ops on
    their tensors directly (the same arithmetic, bit for bit);
  - one prefill per distinct prompt, its keys and values read by every row that samples from it (GRPO's K
    samples of a group: one matmul), new tokens' keys and values laid out by (prompt, head, row), never copied;
  - on CPU, rows with the same prompt and tokens so far run the model once (each draws its own token), and
    rows that are done run nothing (`branch`);
  - new keys and values go into a cache preallocated for max_new_tokens (on CPU reused from call to call, in
    transparent huge pages); positions count real tokens only (left padding), as generate() does;
  - sampling: transformers' temperature, top-k, top-p and min-p in its order, then one inverse-CDF draw (15x
    cheaper than torch.multinomial on CPU); done rows emit padding, all-done groups leave the batch;
  - log-probs of the sampled tokens under temperature only (log_softmax(logits / T)), as TRL's scorer;
  - on CUDA the one-token step is a CUDA graph captured at each call (it reads that moment's weights),
    optionally under bf16 autocast; the all-done check waits for the GPU every few steps only.
Dropout is not applied (GRPO turns it off; evals run in eval mode). GPT-2 variants that reference_gpt2
refuses (other activations or attention scalings) are refused here too.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from rookworld_trl.model.reference_gpt2 import GPTConfig, attention_mask_4d, position_ids

SYNC_EVERY = 8  # CUDA: decode steps between checks that every row is done (each check waits for the GPU)
# torch's CPU bmm runs a plain loop, ~3x slower than MKL's, for matrices of fewer multiply-adds than this
NAIVE_BMM = 400
HUGE_PAGE = 2 << 20  # bytes (x86-64, and arm64 with 4 KiB pages)


# ----------------------------------------------------------------------------- picking the next token


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: greedy (do_sample False) or sampled after transformers' warpers."""

    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    min_p: float | None = None


@dataclass(frozen=True)
class Decoding:
    """One decode call's settings; autocast_dtype: the model's matmuls (None: the weights' own; sampling and
    log-probs stay fp32)."""

    max_new_tokens: int
    sampling: Sampling
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    autocast_dtype: torch.dtype | None = None

    def __post_init__(self):
        object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))  # a list may be given

    def generate_kwargs(self) -> dict:
        """As generate() keywords, every sampling setting explicit (else the generation config's, top_k 50).

        >>> Decoding(8, Sampling(do_sample=False), [0], 0).generate_kwargs()
        {'max_new_tokens': 8, 'eos_token_id': [0], 'pad_token_id': 0, 'do_sample': False}
        """
        s = self.sampling
        picking = {"do_sample": False}
        if s.do_sample:
            picking = dict(
                do_sample=True, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p
            )
        return dict(max_new_tokens=self.max_new_tokens, eos_token_id=list(self.eos_token_ids),
                    pad_token_id=self.pad_token_id, **picking)  # fmt: skip


def decoding_of(decoding: Decoding | None, fields: dict) -> Decoding:
    """`decoding`, or a Decoding of its fields given as keywords: the sampler's calls may name either."""
    if decoding is None:
        return Decoding(**fields)
    if fields:
        raise TypeError(f"a Decoding and its fields {sorted(fields)} given together: give one")
    return decoding


def warp(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """transformers' sampling warpers, in its order: temperature, top-k, top-p, min-p."""
    scores = logits / s.temperature if s.temperature != 1.0 else logits
    if s.top_k:
        kth = torch.topk(scores, min(s.top_k, scores.size(-1)), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if s.top_p < 1.0:
        ascending, order = torch.sort(scores, descending=False)
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1 - s.top_p)
        drop[..., -1:] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
    if s.min_p is not None:
        probs = scores.softmax(dim=-1)
        scores = scores.masked_fill(probs < s.min_p * probs.amax(dim=-1, keepdim=True), -float("inf"))
    return scores


def draw(probs: torch.Tensor, row_of: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of probs (B, V), or with `row_of` one per row b of probs[row_of[b]], by inverse CDF:
    the first token whose cumulative probability exceeds a uniform draw (a token of probability 0 never is)."""
    cdf = probs.cumsum(dim=-1)
    cdf = cdf if row_of is None else cdf.index_select(0, row_of)  # 4x faster than cdf[row_of] on CPU
    u = torch.rand(cdf.size(0), 1, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_(max=cdf.size(-1) - 1)


def next_tokens(
    logits: torch.Tensor, s: Sampling, row_of: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B,), their log-probs (B,)) from last-position logits (B, V); with `row_of` (B,), row b draws
    its own token from logits[row_of[b]] (rows that share a distribution, each with its own draw)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()

    def picked(values, tokens):
        return values.gather(-1, tokens[:, None])[:, 0] if row_of is None else values[row_of, tokens]

    if not s.do_sample:
        tokens = logits.argmax(dim=-1)
        tokens = tokens if row_of is None else tokens[row_of]
        return tokens, picked(logits.log_softmax(dim=-1), tokens)
    scaled = logits / s.temperature
    if not s.top_k and s.top_p >= 1.0 and s.min_p is None:
        # softmax, then the log of the drawn ones: exp() of a log_softmax is 6x slower on CPU (its many
        # large negative inputs leave the vectorised path)
        probs = scaled.softmax(dim=-1)
        tokens = draw(probs, row_of)
        return tokens, picked(probs, tokens).log()
    tokens = draw(warp(logits, s).softmax(dim=-1), row_of)
    return tokens, picked(scaled.log_softmax(dim=-1), tokens)


# ----------------------------------------------------------------------------- the key/value cache


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
    """Keys and values (layer, 0 keys / 1 values, ...) of the distinct prompts, (U*H, position, D), and of the
    new tokens of every slot, (U*H, slot of the group, position, D); additive masks (0 or -inf) for the prompts'
    padding and the unwritten new-token columns (a CUDA graph reads them all); the step's queries."""

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
        """Per layer, the views a step reads, made once per call, not per step."""
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


@dataclass
class Completions:
    completion_ids: list[list[int]]  # per row: new tokens up to and with the first EOS (or max_new_tokens)
    logprobs: list[list[float]]  # per row: log_softmax(logits / temperature) at each of those tokens


def gpt2_parts(model):
    """(GPT2Model, lm_head) inside `model` (a GPT2LMHeadModel, possibly inside PEFT/DDP wrappers)."""
    from transformers import GPT2LMHeadModel

    lm = next((m for m in model.modules() if isinstance(m, GPT2LMHeadModel)), None)
    if lm is None:
        raise ValueError(
            f"the rookworld generation backend runs GPT-2 only, not {type(model).__name__}: set "
            "generation_backend: transformers"
        )
    GPTConfig.from_hf(lm.config)  # raises on GPT-2 variants whose math this backend does not implement
    return lm.transformer, lm.lm_head


# ----------------------------------------------------------------------------- the model over a cache


def qkv(block, x: torch.Tensor) -> torch.Tensor:
    """q, k, v of x (..., C) in a GPT-2 block, side by side (..., 3C)."""
    return block.attn.c_attn(block.ln_1(x))


def after_attention(block, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The rest of a GPT-2 block: attention output y (..., C) through c_proj into the residual, then the MLP."""
    x = x + block.attn.c_proj(y)
    return x + block.mlp(block.ln_2(x))


class Weights(NamedTuple):
    """A plain GPT-2 block's tensors (see `_plain`), read once per call: a decode step then runs their ops
    directly, without the modules' Python layers or attribute look-ups (the same arithmetic, bit for bit)."""

    ln_1: tuple  # (normalized_shape, weight, bias, eps)
    c_attn: tuple  # (bias, weight): Conv1D's weight is (in, out), so x @ weight + bias is one addmm
    c_proj: tuple
    ln_2: tuple
    c_fc: tuple
    mlp_proj: tuple

    @classmethod
    def of(cls, block) -> Weights:
        def norm(m):
            return m.normalized_shape, m.weight, m.bias, m.eps

        attn, mlp = block.attn, block.mlp
        linears = (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)
        c_attn, c_proj, c_fc, mlp_proj = ((m.bias, m.weight) for m in linears)
        return cls(norm(block.ln_1), c_attn, c_proj, norm(block.ln_2), c_fc, mlp_proj)


def _direct_qkv(w: Weights, x: torch.Tensor) -> torch.Tensor:
    """qkv() of x (B, C) by a plain block's ops."""
    bias, weight = w.c_attn
    return torch.addmm(bias, torch.layer_norm(x, *w.ln_1), weight)


def _direct_after_attention(w: Weights, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """after_attention() of x, y (B, C) by a plain block's ops (dropout, which the sampler never applies, aside)."""
    (proj_bias, proj), (fc_bias, fc), (out_bias, out) = w.c_proj, w.c_fc, w.mlp_proj
    # out of place, as after_attention(): under autocast addmm's output is bf16 and an in-place add would
    # round the residual stream to bf16, while the scorer (TRL's forward) keeps it in the weights' dtype
    x = x + torch.addmm(proj_bias, y, proj)
    h = F.gelu(torch.addmm(fc_bias, torch.layer_norm(x, *w.ln_2), fc), approximate="tanh")
    return x + torch.addmm(out_bias, h, out)


def _plain(block) -> bool:
    """Whether a block holds transformers' own GPT-2 modules with no hooks (no LoRA, no wrappers): then the
    decoder may run their ops directly (a decode step is ~150 small ops: their Python layers cost ~4%)."""
    from transformers.activations import GELUTanh
    from transformers.pytorch_utils import Conv1D

    attn, mlp = block.attn, block.mlp
    norms, linears = (block.ln_1, block.ln_2), (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)
    parts = (block, attn, mlp, *norms, *linears, mlp.act)
    return (
        all(type(m) is torch.nn.LayerNorm for m in norms)
        and all(type(m) is Conv1D for m in linears)
        and type(mlp.act) is GELUTanh
        and not any(m._forward_hooks or m._forward_pre_hooks for m in parts)
    )


class Decoder:
    """Prefill and one-token steps of a GPT-2 over a KVCache (see the module docstring)."""

    def __init__(self, model):
        self.transformer, self.lm_head = gpt2_parts(model)
        config = self.transformer.config
        self.n_head, self.n_layer, self.n_positions = config.n_head, config.n_layer, config.n_positions
        self.head_dim = config.n_embd // config.n_head
        blocks = list(self.transformer.h)
        if all(_plain(block) for block in blocks):
            self.blocks = [Weights.of(block) for block in blocks]
            self.qkv, self.after_attention = _direct_qkv, _direct_after_attention
        else:
            self.blocks, self.qkv, self.after_attention = blocks, qkv, after_attention

    def _logits(self, x):
        return self.lm_head(self.transformer.ln_f(x))

    def prefill(self, layout: Layout, cache: KVCache) -> torch.Tensor:
        """Run the distinct prompts, keep their keys/values in the cache; next-token logits of each prompt."""
        (U, P), H, D = layout.ids.shape, self.n_head, self.head_dim
        mask = attention_mask_4d(layout.mask, P)
        x = self.transformer.wte(layout.ids) + self.transformer.wpe(position_ids(layout.mask))
        for i, block in enumerate(self.transformer.h):
            q, k, v = (t.view(U, P, H, D).transpose(1, 2) for t in qkv(block, x).split(H * D, dim=-1))
            cache.prompt[i, 0].view(U, H, P, D).copy_(k)
            cache.prompt[i, 1].view(U, H, P, D).copy_(v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale 1/sqrt(head_dim), as GPT-2
            x = after_attention(block, x, y.transpose(1, 2).reshape(U, P, H * D))
        return self._logits(x[:, -1])

    def step(self, tokens, positions, at, cache: KVCache, end: int, slots=None) -> torch.Tensor:
        """Logits (R, V) after feeding tokens (R,) at positions (R,) to `slots` (R,; None: every slot, in
        order), their keys/values written into new-token column `at` (a 1-element long tensor); attention
        reads the first `end` new-token columns, at least `cache.floor` (a CUDA graph: all), the unwritten ones
        masked. Attention runs for every slot of the groups (a group's rows share its prompt's matmuls; the
        outputs of the slots not in `slots` are dropped), the rest of the model for `slots` only."""
        U, G, H, D = cache.groups, cache.width, self.n_head, self.head_dim
        R, C, scale = tokens.size(0), H * D, D**-0.5
        end = max(end, cache.floor)
        rows = cache.slot_rows[: U * G] if slots is None else cache.slot_rows.index_select(0, slots)  # (R, H)
        written = (rows * cache.new.size(-2) + at)[:, None]  # (R, 1, H), with cache.kinds (1, 2, 1)
        flat_rows, unwritten, P = rows.view(-1), cache.unwritten[..., :end], cache.prompt_bias.size(-1)
        cache.unwritten.index_fill_(2, at, 0.0)
        x = self.transformer.wte(tokens) + self.transformer.wpe(positions)  # (R, C)
        for i, block in enumerate(self.blocks):
            projected = self.qkv(block, x).view(R, 3, H, D)  # q, k, v
            cache.new_flat[i].index_put_((cache.kinds, written), projected[:, 1:])
            cache.query_flat.index_put_((rows,), projected[:, 0])
            # a group's queries (U*H, G, D) against its shared prompt (one matmul for its G slots) and each
            # slot's against its own new tokens, scaled as GPT-2 does
            to_prompt = torch.baddbmm(
                cache.prompt_bias, cache.query_groups, cache.prompt_keys[i], alpha=scale
            )
            keys = cache.new_keys[i][:, :end].transpose(1, 2)
            to_new = torch.baddbmm(unwritten, cache.query_rows, keys, alpha=scale).view(U * H, G, end)
            p_prompt, p_new = torch.cat([to_prompt, to_new], dim=-1).softmax(dim=-1).split([P, end], dim=-1)
            y = torch.bmm(p_new.reshape(U * H * G, 1, end), cache.new_values[i][:, :end]).view(U * H, G, D)
            y = torch.baddbmm(y, p_prompt, cache.prompt_values[i]).view(-1, D)  # (U*H*G, D)
            x = self.after_attention(block, x, y.index_select(0, flat_rows).view(R, C))
        return self._logits(x)


class GraphStep:
    """CUDA: Decoder.step over all new-token columns, captured as a CUDA graph and replayed per token
    (the hundreds of small kernel launches of a step become one). Inputs go through static buffers."""

    def __init__(self, decoder: Decoder, cache: KVCache, slots: int, autocast_dtype):
        device = cache.new.device
        self.tokens = torch.zeros(slots, dtype=torch.long, device=device)
        self.positions = torch.zeros(slots, dtype=torch.long, device=device)
        self.at = torch.zeros(1, dtype=torch.long, device=device)
        end = cache.new.size(-2)

        def run():
            with autocast(device, autocast_dtype):
                return decoder.step(self.tokens, self.positions, self.at, cache, end).float()

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run()  # warm-up outside the graph (lazy initialisations, cuBLAS workspaces)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = run()
        cache.unwritten.fill_(-float("inf"))  # warm-up and capture wrote column 0; the first step rewrites it

    def __call__(self, tokens, positions, at) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.at.copy_(at)
        self.graph.replay()
        return self.logits


def autocast(device: torch.device, dtype):
    return torch.autocast(
        device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False
    )


# ----------------------------------------------------------------------------- the loop


@torch.inference_mode()
def sample(
    model, prompt_ids: list[list[int]], decoding: Decoding | None = None, *, cuda_graph: bool = True, **fields
) -> Completions:
    """One completion per row of prompt_ids (repeated prompts share their prefill), decoded as `decoding` or
    its fields as keywords say; on CUDA, `cuda_graph` replays a captured decode step."""
    d = decoding_of(decoding, fields)
    max_new_tokens, pad_token_id, autocast_dtype = d.max_new_tokens, d.pad_token_id, d.autocast_dtype
    if not prompt_ids or max_new_tokens < 1:
        return Completions([[] for _ in prompt_ids], [[] for _ in prompt_ids])
    decoder = Decoder(model)
    layout, cache, logits = _prefill(decoder, prompt_ids, max_new_tokens, pad_token_id, autocast_dtype)
    device = layout.ids.device
    graph = None
    if cuda_graph and device.type == "cuda":
        graph = GraphStep(decoder, cache, len(layout.unused), autocast_dtype)
    eos = torch.tensor(d.eos_token_ids, device=device)
    positions = layout.mask.sum(dim=1).repeat_interleave(layout.width)  # the first new token's position
    slots = len(layout.unused)
    tokens_out = torch.full((slots, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    logps_dtype = torch.promote_types(cache.new.dtype, torch.float32)
    logps_out = torch.zeros(slots, max_new_tokens, dtype=logps_dtype, device=device)
    live = torch.arange(slots, device=device)  # the slots still decoding (groups that are done drop out)
    done = layout.unused.clone()
    at = torch.zeros(1, dtype=torch.long, device=device)
    every = SYNC_EVERY if device.type == "cuda" else 1
    branching = graph is None and device.type == "cpu"  # the bookkeeping waits for the device each step
    row_of = live // layout.width  # slot -> its row of logits: the prefill's are per prompt
    rep = row_of * layout.width  # slot -> the slot that runs the model for it (see `branch`)
    steps = max_new_tokens
    for t in range(max_new_tokens):
        tokens, logps = next_tokens(logits, d.sampling, row_of)
        tokens.masked_fill_(done, pad_token_id)  # rows that are done emit padding, as generate() does
        tokens_out[live, t] = tokens
        logps_out[live, t] = logps
        done |= torch.isin(tokens, eos)
        check = t % every == every - 1
        if t == max_new_tokens - 1 or (check and bool(done.all())):
            steps = t + 1
            break
        if graph is not None:
            logits, row_of = graph(tokens, positions, at), None
        else:
            if check:  # drop the groups that are done: less work per step
                rep, done, (tokens, positions, live) = _drop_done(
                    cache, t, rep, done, tokens, positions, live
                )
            runs = row_of = None
            running = tokens, positions
            if branching:
                rep, runs, row_of = branch(rep, tokens, done, cache, t)
                running = tokens[runs], positions[runs]
            with autocast(device, autocast_dtype):
                logits = decoder.step(*running, at, cache, t + 1, slots=runs)
        positions += 1
        at += 1
    slot = torch.tensor(layout.slot, device=device)
    tokens_out, logps_out = tokens_out[slot, :steps].tolist(), logps_out[slot, :steps].tolist()
    return cut_at_eos(tokens_out, logps_out, set(d.eos_token_ids))


def _prefill(decoder: Decoder, prompt_ids, max_new_tokens: int, pad_token_id: int, autocast_dtype):
    """(layout, cache, logits): the distinct prompts laid out, their keys/values cached, and each prompt's
    next-token logits."""
    weight = next(decoder.transformer.parameters())
    layout = Layout(prompt_ids, pad_token_id, weight.device)
    if layout.ids.size(1) + max_new_tokens > decoder.n_positions:
        raise ValueError(
            f"a prompt of {layout.ids.size(1)} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
            f"{decoder.n_positions} positions: lower max_new_tokens or shorten the prompts"
        )
    dtype = autocast_dtype or weight.dtype
    shape = (decoder.n_layer, layout, decoder.n_head, decoder.head_dim, max_new_tokens)
    cache = KVCache(*shape, dtype, weight.device, decoder.transformer)
    with autocast(weight.device, autocast_dtype):
        return layout, cache, decoder.prefill(layout, cache)


def _drop_done(cache: KVCache, t: int, rep: torch.Tensor, done: torch.Tensor, *per_slot: torch.Tensor):
    """(rep, done, per_slot) for the slots of the groups not yet done, the cache shrunk to them."""
    group_done = done.view(cache.groups, cache.width).all(dim=1)
    if not bool(group_done.any()):
        return rep, done, per_slot
    kept = cache.keep(group_done.logical_not().nonzero()[:, 0], t)
    number = torch.zeros_like(rep).index_copy_(0, kept, torch.arange(len(kept), device=rep.device))
    # a slot's representative is in its group: kept with it
    return number[rep[kept]], done[kept], tuple(x[kept] for x in per_slot)


def branch(rep: torch.Tensor, tokens: torch.Tensor, done: torch.Tensor, cache: KVCache, t: int):
    """(rep, runs, row_of): which slot runs the model for each slot, the slots that run (ascending), and each
    slot's row among them.

    Slots with the same prompt and tokens so far share a distribution: their representative runs the model,
    each draws its own token. Slots that drew different tokens branch: each new (representative, token) class
    is run by its first slot, which copies the old representative's keys/values. Done slots run nothing.
    (A few dozen slots: Python's dict does this in a fraction of torch.unique's time.)"""
    old = rep.tolist()
    new, first = list(old), {}
    for slot, (r, token, finished) in enumerate(zip(old, tokens.tolist(), done.tolist(), strict=True)):
        if not finished:
            new[slot] = first.setdefault((r, token), slot)
    runs = list(first.values())  # ascending: each class enters at its first slot
    moved = [slot for slot in runs if old[slot] != slot]
    if t and moved:
        cache.copy(torch.tensor([old[slot] for slot in moved]), torch.tensor(moved), columns=t)
    row = {slot: i for i, slot in enumerate(runs)}
    row_of = [row.get(r, 0) for r in new]  # a finished slot's row is any: its token is padding
    return torch.tensor(new), torch.tensor(runs), torch.tensor(row_of)


def cut_at_eos(tokens: list[list[int]], logps: list[list[float]], eos: set[int]) -> Completions:
    """Each row up to and with its first EOS."""
    ids_out, logps_out = [], []
    for row, lp in zip(tokens, logps, strict=True):
        end = next((i + 1 for i, tok in enumerate(row) if tok in eos), len(row))
        ids_out.append(row[:end])
        logps_out.append(lp[:end])
    return Completions(ids_out, logps_out)
