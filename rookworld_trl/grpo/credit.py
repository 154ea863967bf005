"""Field-level credit for P: completions: each field of the answer gets the advantage of its own reward.

GRPO gives every token of a completion the same advantage. A P: answer is ~40 tokens in three fields
(docs/FORMATS.md): the moves after `M:`, the evaluations after `E:` and the best move after `B:`. Whether `B:` is
legal is decided by its ~4 tokens, yet with one sequence advantage the ~36 others (evaluation digits that
differ between samples for reasons unrelated to B:) are pushed up or down with it, which is noise. Here each
field's tokens get the group-normalized advantage of that field's own verdict:

    M: distinct legal moves listed and their overlap with the engine's top 5 (legal_moves, candidates)
    E: the evaluations' accuracy (evals)
    B: the best move: legal, and its expected-score loss (best_legal, best)

each minus the layout penalty when the answer misses the fixed widths, and PENALTY for an answer that does not
parse. A: samples keep TRL's sequence advantage. Switched on by `field_credit: true` in a GRPO recipe; the
trainer hands TRL (B, T) advantages, which TRL's loss accepts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rookworld_trl.rewards.shaping import LAYOUT_PENALTY, PENALTY

FIELDS = ("M", "E", "B")  # token field index 0, 1, 2 in completion order


def field_rewards(components: dict | None) -> tuple[float, float, float] | None:
    """(M, E, B) rewards of one P: sample from its policy-reward components; None for an A: sample.

    >>> field_rewards({"parsed": 1.0, "layout": 1.0, "legal_moves": 1.0, "candidates": 1.0, "evals": 1.0,
    ...                "best_legal": 1.0, "best": 1.0})
    (1.0, 1.0, 1.0)
    """
    if components is None:
        return None
    if not components["parsed"]:
        return PENALTY, PENALTY, PENALTY
    slip = LAYOUT_PENALTY * (1 - components["layout"])
    moves = 0.5 * components["legal_moves"] + 0.5 * components["candidates"]
    best = 0.5 * components["best_legal"] + 0.5 * components["best"]
    return moves - slip, components["evals"] - slip, best - slip


def token_fields(texts: Sequence[str]) -> list[int]:
    """The field (0 M, 1 E, 2 B) of each token of one completion, given the tokens' decoded texts.

    A token belongs to the field its last character falls in (" B" is the B: field's); the fields start at
    the completion, at "E:" and at "B:" (a missing marker: the field is empty).

    >>> token_fields([" e2e4", " ", "E:", " 0.3", " B", ":", " e2e4", "<eos>"])
    [0, 0, 1, 1, 2, 2, 2, 2]
    """
    text = "".join(texts)
    e_at = text.find(" E:") + 1 or len(text)
    b_at = text.find(" B:") + 1 or len(text)
    fields, start = [], 0
    for piece in texts:
        start += len(piece)
        last = start - 1
        fields.append(0 if last < e_at else 1 if last < b_at else 2)
    return fields


def group_advantages(rewards: torch.Tensor, num_generations: int, scale: bool = True) -> torch.Tensor:
    """(N, F) rewards -> (N, F) advantages: minus the group mean per column, over the group std if `scale`
    (as TRL's scale_rewards 'group'); NaN rows (A: samples) stay NaN."""
    grouped = rewards.view(-1, num_generations, rewards.shape[-1])
    mean = grouped.nanmean(dim=1, keepdim=True)
    centred = grouped - mean
    if scale:
        n = (~grouped.isnan()).sum(dim=1, keepdim=True).clamp(min=2)
        std = (centred.nan_to_num() ** 2).sum(dim=1, keepdim=True).div(n - 1).sqrt()
        centred = centred / (std + 1e-4)
    return centred.view_as(rewards)


def per_token_advantages(
    sequence: torch.Tensor, field_adv: torch.Tensor, fields: torch.Tensor
) -> torch.Tensor:
    """(B,) sequence advantages, (B, 3) field advantages (NaN rows: keep the sequence one), (B, T) token
    fields -> (B, T) advantages."""
    per_token = field_adv.gather(1, fields)
    keep = field_adv.isnan().any(dim=1, keepdim=True)
    return torch.where(keep, sequence.unsqueeze(1).expand_as(per_token), per_token)
