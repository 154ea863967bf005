"""The project's own sampler for GPT-2 (transformers' GPT2LMHeadModel, the model TRL trains): what
`generation.generate_completions` and GRPO's rollouts (rookworld_trl/grpo/rollout.py) run.

    from rookworld_trl.model.decoding import sample
    from rookworld_trl.model.sampling import Decoding, Sampling
    decoding = Decoding(max_new_tokens=80, sampling=Sampling(temperature=0.4), eos_token_ids=[0], pad_token_id=0)
    out = sample(model, [[ids of prompt 1], [ids of prompt 2]], decoding)    # or its fields as keywords
    out.completion_ids, out.logprobs      # per row: tokens up to and with the first EOS; their log-probs

How it is fast, and why it computes what transformers' generate() computes:
  - it calls the model's own modules (ln_1, c_attn, c_proj, mlp, ...), so it always sees the current weights,
    LoRA adapters and the fused GELU, and adds nothing to them (GPT-2's math: rookworld_trl/model/reference_gpt2.py);
    when they are transformers' own with no hooks, their ops on their tensors directly, read at each call
    (the same arithmetic, bit for bit);
  - one prefill per distinct prompt, its keys and values kept once and read by every row that samples from
    that prompt (GRPO's K samples of a group): a query of a group's K rows against its prompt is one matmul,
    and the new tokens' keys and values are laid out by (prompt, head, row), so no step copies them;
  - on CPU, rows with the same prompt and the same tokens so far run the model once for all of them (each
    draws its own token), and rows that are done run nothing (`branch`);
  - the keys and values of new tokens go into a cache preallocated for max_new_tokens, written in place
    (on CPU in memory reused from call to call, in transparent huge pages where the OS has them); positions
    count real tokens only (left padding), as generate() does; the views a step reads are made once per call;
  - sampling: temperature, top-k, top-p and min-p with transformers' formulas in its order, then one draw
    from the softmax by inverse CDF (15x cheaper than torch.multinomial on CPU); rows that are done emit
    padding, a group whose rows are all done leaves the batch (not a CUDA graph's), and decoding stops once
    every row has emitted an EOS;
  - log-probs of the sampled tokens under temperature scaling only (log_softmax(logits / T)): what TRL's
    scoring forward computes for the same tokens;
  - on CUDA the one-token step is a CUDA graph (captured at each call, so it reads that moment's weights),
    optionally under bf16 autocast, and the all-done check waits for the GPU every few steps only.
Dropout is not applied (GRPO turns it off; evals run in eval mode). GPT-2 variants that reference_gpt2
refuses (other activations or attention scalings) are refused here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from rookworld_trl.model.kv_cache import KVCache, Layout
from rookworld_trl.model.reference_gpt2 import GPTConfig, attention_mask_4d, position_ids
from rookworld_trl.model.sampling import Decoding, decoding_of, next_tokens

SYNC_EVERY = 8  # CUDA: decode steps between checks that every row is done (each check waits for the GPU)


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
    """One completion per row of prompt_ids (rows may repeat a prompt: they share its prefill), decoded as
    `decoding` (model/sampling.py's Decoding) says, or as its fields given as keywords say.

    On CUDA, `cuda_graph` replays a captured decode step; `autocast_dtype` (e.g. torch.bfloat16) runs the
    model's matmuls in that dtype (sampling and log-probs stay fp32).
    """
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
    slot's row among them (its logits' row).

    Slots with the same prompt and the same tokens so far have the same next-token distribution: one of
    them, their representative, runs the model, and each draws its own token from its logits. Slots that
    drew different tokens branch: each new class of (representative, token) is represented by its first
    slot, which takes a copy of the old representative's keys/values if it was not that slot. Slots that
    are done run nothing. (A few dozen slots: Python's dict does this in a fraction of torch.unique's time.)"""
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
