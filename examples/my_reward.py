"""Your own reward function, added to GRPO by its dotted path (TRL's reward_funcs convention).

    rookworld train --reward_funcs policy_reward env_reward examples.my_reward.b_gives_check \
        --reward_weights 1.0 1.0 0.2

or in a recipe (a copy of recipes/grpo_tiny_cpu.yaml):

    reward_funcs: [policy_reward, env_reward, examples.my_reward.b_gives_check]
    reward_weights: [1.0, 1.0, 0.2]

Run it from the folder that holds examples/ (the repository), or put that folder on PYTHONPATH: the stage
imports `examples.my_reward` and takes `b_gives_check` from it. A reward function gets TRL's arguments:
`prompts`, `completions` (strings) and every dataset column as a keyword (`task`, ...), and returns one float
per completion, or None where it does not apply (TRL leaves None out of that function's share). Its mean
is logged as `rewards/b_gives_check/mean` in metrics.jsonl and the console's TensorBoard logs.
"""

from __future__ import annotations

import chess

from rookworld_trl.chess.formats import FormatError, parse_policy_completion, parse_policy_prompt


def b_gives_check(prompts: list[str], completions: list[str], **kwargs) -> list[float | None]:
    """1.0 when a P: answer's best move (B:) is legal and gives check, 0.0 when it does not; None for A:."""
    return [_gives_check(prompt, completion) for prompt, completion in zip(prompts, completions, strict=True)]


def _gives_check(prompt: str, completion: str) -> float | None:
    try:
        board = chess.Board(parse_policy_prompt(prompt))
    except (FormatError, ValueError):  # an A: prompt (or no position): not this reward's task
        return None
    best = parse_policy_completion(completion).best
    try:
        move = chess.Move.from_uci(best or "")
    except ValueError:  # no B: move, or not UCI
        return 0.0
    return float(move in board.legal_moves and board.gives_check(move))
