"""A small, readable pure-PyTorch GPT-2 that loads transformers' GPT2LMHeadModel weights, and the checks that both
compute the same thing (`parity_checks`: logits at real positions of a left-padded batch, our KV cache against our
full forward, greedy generation), so a transformers upgrade that changes them shows up here, not as a worse run.

    rookworld parity jrahn/RookWorld-LM-124M            # or a local model directory (stages/eval/parity.py)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# HF GPT-2 uses Conv1D layers that store weights as (in, out); nn.Linear stores (out, in).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    layer_norm_epsilon: float = 1e-5

    @classmethod
    def from_hf(cls, hf) -> GPTConfig:
        """From a transformers GPT2Config; refuses the variants this small model does not implement."""
        problems = []
        if hf.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            problems.append(f"activation_function={hf.activation_function!r} (only the tanh GELU)")
        if hf.n_inner not in (None, 4 * hf.n_embd):
            problems.append(f"n_inner={hf.n_inner} (only 4 * n_embd)")
        if not hf.scale_attn_weights or hf.scale_attn_by_inverse_layer_idx:
            problems.append("non-standard attention scaling")
        if hf.add_cross_attention or not hf.tie_word_embeddings:
            problems.append("cross attention or untied lm_head")
        if problems:
            raise ValueError("unsupported GPT-2 config: " + "; ".join(problems))
        return cls(hf.vocab_size, hf.n_positions, hf.n_layer, hf.n_head, hf.n_embd, hf.layer_norm_epsilon)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, mask, past=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if past is not None:  # keys and values of the tokens seen in earlier calls
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale 1/sqrt(head_dim), as GPT-2
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's "gelu_new"


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, mask, past=None):
        a, kv = self.attn(self.ln_1(x), mask, past)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions count real tokens only (0 on left padding), so a left-padded prompt starts at 0 like an unpadded
    one, as transformers' generate() makes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def attention_mask_4d(attention_mask: torch.Tensor, T: int) -> torch.Tensor:
    """Boolean (B, 1, T, S) mask for the last T of S tokens: causal, and no attention to padding. Each token
    attends to itself: a left-pad query has no real key, and softmax of nothing is NaN (pad outputs go unused)."""
    S = attention_mask.size(1)
    q = torch.arange(S - T, S, device=attention_mask.device)[:, None]
    k = torch.arange(S, device=attention_mask.device)[None, :]
    keep = (k <= q) & attention_mask.bool()[:, None, None, :]
    return keep | (k == q)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.n_positions, config.n_embd),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2

    def forward(self, input_ids, attention_mask=None, past=None):
        """Logits (B, T, vocab) for input_ids (B, T), and the KV cache (one (k, v) per layer); attention_mask
        (B, past_len + T) covers the cached tokens (`past`, the previous call's cache) too."""
        B, T = input_ids.shape
        past_len = 0 if past is None else past[0][0].size(2)
        if attention_mask is None:
            attention_mask = torch.ones(B, past_len + T, dtype=torch.long, device=input_ids.device)
        pos = position_ids(attention_mask)[:, past_len:]
        mask = attention_mask_4d(attention_mask, T)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(pos)
        cache = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, mask, None if past is None else past[i])
            cache.append(kv)
        return self.lm_head(self.transformer.ln_f(x)), cache

    @torch.no_grad()
    def generate_greedy(self, input_ids, attention_mask, max_new_tokens, eos_token_id=None):
        """Greedy decoding of a left-padded batch with the KV cache: prompt + new tokens, as transformers'
        generate(do_sample=False, pad_token_id=eos) (a row past its eos emits eos; all done: stop)."""
        logits, past = self(input_ids, attention_mask)
        done = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
        for step in range(max_new_tokens):
            token = logits[:, -1].argmax(-1)
            if eos_token_id is not None:
                token = token.masked_fill(done, eos_token_id)
                done |= token == eos_token_id
            input_ids = torch.cat([input_ids, token[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            if step == max_new_tokens - 1 or bool(done.all()):
                break
            logits, past = self(token[:, None], attention_mask, past)
        return input_ids


def from_hf(model_or_state_dict, config=None) -> GPT:
    """Our GPT with the weights of a transformers GPT2LMHeadModel, or of its state dict plus a config
    (a GPTConfig or a transformers GPT2Config)."""
    if isinstance(model_or_state_dict, nn.Module):
        config = config if config is not None else model_or_state_dict.config
        state_dict = model_or_state_dict.state_dict()
    else:
        state_dict = model_or_state_dict
    if config is None:
        raise ValueError("from_hf needs a config when given a state dict")
    if not isinstance(config, GPTConfig):
        config = GPTConfig.from_hf(config)
    ours = {}
    for key, value in state_dict.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old checkpoints carry the causal mask as a buffer; we build masks on the fly
        ours[key] = value.t() if key.endswith(CONV1D_WEIGHTS) else value
    ours.setdefault("lm_head.weight", ours["transformer.wte.weight"])  # tied weights may be saved once
    model = GPT(config)
    model.load_state_dict(ours, strict=True)
    return model


def parity_checks(hf_model, ref: GPT, input_ids, attention_mask, max_new_tokens: int, eos_token_id: int):
    """[(check, max |diff| or count of differing tokens)] for logits, KV cache, and greedy generation."""
    real = attention_mask.bool()
    with torch.no_grad():
        # transformers' forward numbers positions 0..T-1 including the padding unless told otherwise
        # (generate() does pass cumsum positions), so give it the same position ids we use.
        hf_logits = hf_model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)
        ).logits
        ref_logits, _ = ref(input_ids, attention_mask)
        logits_diff = (hf_logits - ref_logits).abs()[real].max().item()

        split = input_ids.size(1) // 2  # prefill half, then one token at a time through the cache
        steps, past = [], None
        for start, end in [(0, split)] + [(t, t + 1) for t in range(split, input_ids.size(1))]:
            logits, past = ref(input_ids[:, start:end], attention_mask[:, :end], past)
            steps.append(logits)
        cache_diff = (torch.cat(steps, dim=1) - ref_logits).abs()[real].max().item()

    hf_tokens = hf_model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                  eos_token_id=[eos_token_id], pad_token_id=eos_token_id, do_sample=False)  # fmt: skip
    ref_tokens = ref.generate_greedy(input_ids, attention_mask, max_new_tokens, eos_token_id)
    if hf_tokens.shape == ref_tokens.shape:
        token_diff = int((hf_tokens != ref_tokens).sum())
    else:
        token_diff = abs(hf_tokens.size(1) - ref_tokens.size(1)) * hf_tokens.size(0)
    return [
        ("logits: transformers vs ours", logits_diff),
        ("logits: our KV cache vs full", cache_diff),
        ("greedy tokens: generate vs ours", token_diff),
    ]
