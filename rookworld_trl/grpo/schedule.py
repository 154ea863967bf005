"""The "warmup_cosine_linear" LR schedule of GRPO recipes (`lr_schedule: warmup_cosine_linear`): RookWorldGRPOTrainer
builds a LambdaLR of it in `create_scheduler`.
"""

from __future__ import annotations

import math


def warmup_cosine_linear(
    step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1, final_decay_ratio: float = 0.1
) -> float:
    """LR multiplier: 0 -> 1 linear over warmup, cosine 1 -> min_ratio, then linear min_ratio -> 0 at the end.

    The final linear leg lands exactly on zero, which a cosine alone reaches only with a zero floor.

    >>> [round(warmup_cosine_linear(s, 2, 20), 2) for s in (0, 1, 2, 10, 18, 19, 20)]
    [0.0, 0.5, 1.0, 0.55, 0.1, 0.05, 0.0]
    """
    decay_start = max(warmup_steps, total_steps - round(final_decay_ratio * total_steps))
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if step < decay_start:
        progress = (step - warmup_steps) / max(1, decay_start - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    floor = min_ratio if decay_start > warmup_steps else 1.0
    return max(0.0, floor * (total_steps - step) / max(1, total_steps - decay_start))
