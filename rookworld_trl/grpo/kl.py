"""Exact KL divergences between the policy and the reference over the whole vocabulary (kl_estimator forward,
reverse, symmetric; grpo/config.py kl_estimator), from the models' last hidden states.

TRL's fused LM head returns log-probs of the sampled tokens only, never the (B, T, V) logits. So the final
hidden states are tapped (HiddenTap: a forward hook on the backbone, public torch API) and the LM head is
applied here, over chunks of tokens: each chunk's policy logits are recomputed in backward (activation
checkpointing), so memory stays at one chunk of (tokens x vocabulary) whatever the batch.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rookworld_trl.model.loading import gpt2_backbone

CHUNK_FLOATS = 2**24  # logits per chunk (64 MiB in float32): tokens per chunk = CHUNK_FLOATS // vocabulary


def divergences(logp: torch.Tensor, logq: torch.Tensor, estimator: str) -> torch.Tensor:
    """(N, V) log-probs of the policy p and the reference q -> (N,) exact KL per row.

    reverse: KL(p || q) = sum p (log p - log q); forward: KL(q || p) = sum q (log q - log p); symmetric: their
    mean.
    """
    reverse = forward = None
    if estimator in ("reverse", "symmetric"):
        reverse = (logp.exp() * (logp - logq)).sum(-1)
    if estimator in ("forward", "symmetric"):
        forward = (logq.exp() * (logq - logp)).sum(-1)
    if estimator == "reverse":
        return reverse
    if estimator == "forward":
        return forward
    if estimator == "symmetric":
        return 0.5 * (reverse + forward)
    raise ValueError(f"kl_estimator {estimator!r} is not exact: expected forward, reverse or symmetric")


def head_log_probs(hidden: torch.Tensor, head: torch.nn.Module, temperature: float) -> torch.Tensor:
    """log softmax(head(hidden) / temperature), in float32 (TRL's log-probs are at the sampling temperature)."""
    weight, bias = head.weight, head.bias
    logits = F.linear(hidden.to(weight.dtype), weight, bias).float() / temperature
    return logits.log_softmax(-1)


def _chunk_kl(hidden, weight, bias, logq, estimator, temperature):
    logits = F.linear(hidden.to(weight.dtype), weight, bias).float() / temperature
    return divergences(logits.log_softmax(-1), logq, estimator)


def per_token_kl(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    ref_hidden: torch.Tensor,
    ref_head: torch.nn.Module,
    mask: torch.Tensor,
    estimator: str,
    temperature: float = 1.0,
) -> torch.Tensor:
    """(B, T) exact KL at every completion token where `mask` is set (0 elsewhere), differentiable in the policy.

    hidden / ref_hidden: (B, T, H) last hidden states that predict each completion token; head / ref_head: the
    LM heads (ref_head may sit on another device: its logits are computed there, without gradient).
    """
    keep = mask.bool()
    h, hr = hidden[keep], ref_hidden[keep]
    chunk = max(1, CHUNK_FLOATS // head.weight.shape[0])
    pieces = []
    for start in range(0, h.shape[0], chunk):
        with torch.no_grad():
            ref_device = ref_head.weight.device
            logq = head_log_probs(hr[start : start + chunk].to(ref_device), ref_head, temperature).to(
                h.device
            )
        piece = h[start : start + chunk]
        if torch.is_grad_enabled() and piece.requires_grad:
            pieces.append(
                checkpoint(
                    _chunk_kl,
                    piece,
                    head.weight,
                    head.bias,
                    logq,
                    estimator,
                    temperature,
                    use_reentrant=False,
                )
            )
        else:
            pieces.append(_chunk_kl(piece, head.weight, head.bias, logq, estimator, temperature))
    flat = torch.cat(pieces) if pieces else h.new_zeros(0, dtype=torch.float32)
    return torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device).masked_scatter(keep, flat)


def lm_head_of(model: torch.nn.Module) -> torch.nn.Module:
    """The output embeddings (through PEFT and DDP wrappers): what TRL's fused head applies to the backbone."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # PEFT
        inner = inner.get_base_model()
    return inner.get_output_embeddings()


class HiddenTap:
    """Records the backbone's last_hidden_state of every forward inside `recording()` (gradients kept)."""

    def __init__(self, model: torch.nn.Module):
        self.records: list[torch.Tensor] | None = None
        self.handle = gpt2_backbone(model).register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self.records is not None:
            self.records.append(output.last_hidden_state)

    @contextlib.contextmanager
    def recording(self):
        self.records = []
        try:
            yield self.records
        finally:
            self.records = None


def completion_hidden(records: list[torch.Tensor], completion_length: int) -> torch.Tensor:
    """The (B, T, H) hidden states that predict the T completion tokens, from recorded (chunks of) full rows."""
    hidden = torch.cat(records, dim=0)
    return hidden[:, -completion_length - 1 : -1]
