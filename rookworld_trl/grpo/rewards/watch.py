"""The reward-hacking watch: what a batch of P: answers does with its move list, from text and python-chess alone.

A rising P: reward can hide a policy that lists more moves (fillers, moves from empty squares) while B: stays
a blind pick among them. These figures show it the step it starts; the policy reward logs them every step
as `watch/<name>` (TRL's `log_metric`), the report charts them and the run summary prints them.

    from rookworld_trl.grpo.rewards.watch import watch
    watch(fens, completions)   # {"precision": 0.55, "distinct": 4.1, "b_legal": 0.58, ...}

- precision: distinct legal moves / distinct moves listed (per answer, then the mean)
- distinct: distinct moves listed per answer
- b_legal: B: is a legal move
- selection: on answers whose list mixes legal and illegal moves, B: legal minus a uniform pick among the
  distinct listed moves (0: B: chooses at chance; 1 - precision at most)
- b_best_e: B: is the listed move with the highest E: (always so in the data)
- err_<kind>: the share of distinct listed moves that are illegal for that reason (chess/environment.py's
  illegal_kind: empty_square, opponent_piece, king_in_check, blocked, geometry, noncanonical)
- first_share: the share of the batch's positions where some answer opens with the batch's most common first
  move (a filler opens answers to many positions; a group agreeing on one position counts once)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import chess

from rookworld_trl.chess.environment import ILLEGAL_KINDS, illegal_kind, legal_move
from rookworld_trl.chess.formats import ParsedPolicy, parse_policy_completion

ERROR_KINDS = tuple(k for k in ILLEGAL_KINDS if k != "no_move")  # a listed move always parses as UCI
NAMES = (
    "precision",
    "distinct",
    "b_legal",
    "selection",
    "b_best_e",
    *(f"err_{k}" for k in ERROR_KINDS),
    "first_share",
)


def answer_figures(fen: str, parsed: ParsedPolicy) -> dict[str, float | None]:
    """The watch's figures of one parsed P: answer (None: not applicable to this answer)."""
    board = chess.Board(fen)
    distinct = list(dict.fromkeys(parsed.moves))
    kinds = [illegal_kind(board, m) for m in distinct]
    legal = [k is None for k in kinds]
    b_legal = parsed.best is not None and legal_move(board, parsed.best) is not None
    mixed = 0 < sum(legal) < len(legal)
    evals = dict(zip(parsed.moves, parsed.evals, strict=False))
    out: dict[str, float | None] = {
        "precision": sum(legal) / len(legal) if distinct else None,
        "distinct": float(len(distinct)),
        "b_legal": float(b_legal),
        "selection": float(b_legal) - sum(legal) / len(legal) if mixed else None,
        "b_best_e": float(evals.get(parsed.best) == max(evals.values())) if evals else None,  # ties: any
    }
    for kind in ERROR_KINDS:
        out[f"err_{kind}"] = sum(k == kind for k in kinds) / len(kinds) if distinct else None
    return out


def watch(fens: Sequence[str], completions: Sequence[str]) -> dict[str, float]:
    """Batch means of the watch's figures over the P: answers that parse (figures with no answer are left out).

    >>> fen = chess.STARTING_FEN
    >>> w = watch([fen, fen], [" e2e4 e3e4 E: 0.3 0.2 B: e3e4", " e2e4 h2h3 E: 0.3 0.1 B: e2e4"])
    >>> w["precision"], w["distinct"], w["b_legal"], w["selection"], w["b_best_e"], w["first_share"]
    (0.75, 2.0, 0.5, -0.5, 0.5, 1.0)
    """
    rows, firsts = [], set()
    for fen, text in zip(fens, completions, strict=True):
        parsed = parse_policy_completion(text)
        if parsed.moves:
            firsts.add((fen, parsed.moves[0]))
        if parsed.ok:
            rows.append(answer_figures(fen, parsed))
    out = {}
    for name in NAMES[:-1]:
        values = [r[name] for r in rows if r[name] is not None]
        if values:
            out[name] = sum(values) / len(values)
    if firsts:
        opening = Counter(move for _, move in firsts).most_common(1)[0][1]
        out["first_share"] = opening / len({fen for fen, _ in firsts})
    return out
