"""GRPO scoring with shared prompts: GPT-2's backbone runs each distinct prompt once for its group.

While TRL's scoring runs (`prompt_length` set by trl_compat), the backbone computes the prompt part once per
distinct prompt and the completion part per row, reading the prompt's keys and values; each row gets its
prompt's hidden states through an index, whose backward sums the group's gradients. The output is the usual
`last_hidden_state`, so TRL's fused LM head and log-probs are unchanged. 8 samples of a ~70-token prompt with
~45-token completions: about half the scoring FLOPs (`python scripts/bench/bench_step.py`).

    shared_prefix_scoring: true    # GRPO config field (default); false: TRL's forward over every row

It steps aside (TRL's forward runs) when no prompt repeats, under torch.compile, activation checkpointing or
active dropout, and for other inputs than token ids.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from transformers import GPT2Model
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from rookworld_trl.model.decoding import after_attention, qkv
from rookworld_trl.model.loading import gpt2_backbone
from rookworld_trl.model.reference_gpt2 import attention_mask_4d

_PROMPT_LENGTH: contextvars.ContextVar[int | None] = contextvars.ContextVar("prompt_length", default=None)


@contextlib.contextmanager
def prompt_length(n: int | None):
    """Inside the block, forwards of patched backbones treat the first n columns as the prompt."""
    token = _PROMPT_LENGTH.set(n)
    try:
        yield
    finally:
        _PROMPT_LENGTH.reset(token)


def use_shared_prefix(model: torch.nn.Module) -> None:
    """Patch the GPT2Model inside `model` (through PEFT/DDP wrappers) to share prompts while `prompt_length`
    is set; other calls run its own forward."""
    backbone = gpt2_backbone(model, required=False)
    if backbone is None:
        raise ValueError(f"shared_prefix_scoring needs a GPT-2, not {type(model).__name__}")
    original = backbone.forward

    def forward(input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        P = _PROMPT_LENGTH.get()
        if P is not None and _eligible(backbone, input_ids, attention_mask, position_ids, kwargs):
            hidden = shared_forward(backbone, input_ids, attention_mask, position_ids, P)
            if hidden is not None:
                return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden)
        return original(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )

    backbone.forward = forward  # an instance attribute: Module.__call__ (and its hooks) calls it


def _eligible(backbone, input_ids, attention_mask, position_ids, kwargs) -> bool:
    dropout = backbone.training and any(
        isinstance(m, torch.nn.Dropout) and m.p > 0 for m in backbone.modules()
    )
    unsupported = {k for k, v in kwargs.items() if v is not None and k not in ("use_cache", "return_dict")}
    return (
        input_ids is not None
        and attention_mask is not None
        and position_ids is not None  # modeling.use_padding_aware_positions supplies them
        and not unsupported
        and not dropout
        and not backbone.gradient_checkpointing
        and not torch.compiler.is_compiling()
    )


def _qkv(block, x, n_head):
    """q, k, v of x (B, T, C) in a GPT-2 block, each (B, H, T, D)."""
    B, T, C = x.shape
    return (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in qkv(block, x).split(C, dim=-1))


def _rest(block, x, y):
    """The block after attention, from y (B, H, T, D)."""
    return after_attention(block, x, y.transpose(1, 2).reshape(x.shape))


def shared_forward(backbone: GPT2Model, ids, mask, positions, P: int) -> torch.Tensor | None:
    """last_hidden_state (B, L, C) of rows whose first P columns repeat; None when none repeats."""
    B, L = ids.shape
    prompts = torch.cat([ids[:, :P], mask[:, :P].to(ids.dtype)], dim=1)
    _, group = torch.unique(prompts, dim=0, return_inverse=True)  # (B,): each row's distinct prompt
    U = int(group.max()) + 1
    if U == B:
        return None
    rows = torch.arange(B, device=ids.device)
    # one row per prompt
    first = torch.full((U,), B, device=ids.device).scatter_reduce(0, group, rows, "amin")
    wte, wpe, H = backbone.wte, backbone.wpe, backbone.config.n_head
    xp = wte(ids[first, :P]) + wpe(positions[first, :P])
    xc = wte(ids[:, P:]) + wpe(positions[:, P:])
    prompt_mask = attention_mask_4d(mask[first, :P], P)  # (U, 1, P, P): causal, no left padding
    # (B, 1, C, L): the prompt's real tokens and the causal past
    completion_mask = attention_mask_4d(mask, L - P)
    for block in backbone.h:
        qp, kp, vp = _qkv(block, xp, H)
        qc, kc, vc = _qkv(block, xc, H)
        yp = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=prompt_mask)
        keys, values = torch.cat([kp[group], kc], dim=2), torch.cat([vp[group], vc], dim=2)
        yc = F.scaled_dot_product_attention(qc, keys, values, attn_mask=completion_mask)
        xp, xc = _rest(block, xp, yp), _rest(block, xc, yc)
    return torch.cat([backbone.ln_f(xp)[group], backbone.ln_f(xc)], dim=1)
