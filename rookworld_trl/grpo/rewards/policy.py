"""Grading P: (policy) answers against Stockfish: `score_policy` for one answer, `PolicyGrader` for batches with a
memo in front of an EnginePool; first `shape`, the reward shaping both tasks share (docs/FORMATS.md).

Last, the reward-hacking watch: a rising P: reward can hide a policy that lists more moves (fillers, moves from
empty squares) while B: stays a blind pick among them. These figures, from text and python-chess alone, show it
the step it starts; the policy reward logs them every step as `watch/<name>`.

    from rookworld_trl.grpo.rewards.policy import watch
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

    python scripts/bench/bench_rewards.py     # throughput figures
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import chess

from rookworld_trl.chess.engine import MATE_SCORE, MULTIPV, EnginePool, MoveEval, expected_score
from rookworld_trl.chess.environment import ILLEGAL_KINDS, illegal_kind, legal_move
from rookworld_trl.chess.formats import ParsedPolicy, parse_policy_completion

LAYOUT_PENALTY = 0.2  # a P: answer that parses but is not laid out in the fixed widths
PENALTY = -0.3  # unparseable: mild, the seeds found -1.0 destabilised training
SHAPINGS = ("graduated", "linear", "continuous", "dense", "decisive", "precise", "binary")
BEST_ZERO_AT = 0.2  # best move: a loss of 0.2 expected score (~230 cp from equality; lichess: a mistake) is 0
EVAL_ZERO_AT = 0.2  # evaluation: an error of 0.2 expected score scores 0
EVAL_CLOSE = 0.75  # evals check: mean score >= 0.75, i.e. errors of ~0.05 expected score (~50 cp at equality)


def shape(checks: Mapping[str, bool], quality: float, shaping: str) -> float:
    """The reward of a parseable completion from its pass/fail checks and its smooth quality in [0, 1].

    >>> shape({"a": True, "b": True, "c": False}, 0.9, "graduated"), shape({"a": True}, 1.0, "binary")
    (0.6, 1.0)
    """
    passed = sum(checks.values()) / len(checks)
    if shaping == "graduated":
        if passed == 1:
            return 1.0  # perfect
        if passed >= 0.8:
            return 0.8  # near perfect
        return 0.6 if passed > 0.5 else 0.4 if passed > 0 else 0.2  # most / some / format only
    if shaping == "linear":
        return 0.2 + 0.8 * passed
    if shaping in ("continuous", "dense", "decisive", "precise"):  # the callers pass their own quality
        return 0.2 + 0.8 * quality
    if shaping == "binary":
        return float(passed == 1)
    raise ValueError(f"unknown shaping {shaping!r}, expected one of {SHAPINGS}")


def check_shaping(shaping: str) -> str:
    if shaping not in SHAPINGS:
        raise ValueError(f"unknown shaping {shaping!r}, expected one of {SHAPINGS}")
    return shaping


# ------------------------------------------------------------------------------------ grading P: answers


PRECISE_WEIGHTS = {"M": 0.25, "E": 0.15, "B": 0.6}  # the fields' shares of the "precise" quality
# The tenths of the "dense" and "decisive" qualities, by component (each in [0, 1]; all-correct sums to 1.0).
# decisive: B:'s share also follows its expected-score loss past 0.2 (`kept`), so that a move that gives up more
# (a missed mate) keeps costing about what it gives up; a legal B: that loses everything still beats an illegal one.
QUALITY_WEIGHTS = {
    "dense": {"legal_moves": 3, "best_legal": 2, "best": 3, "candidates": 1, "evals": 1},
    "decisive": {"legal_moves": 2, "best_legal": 1, "best": 2, "kept": 3, "candidates": 1, "evals": 1},
}
B_COMPONENTS = ("best_legal", "best", "kept")  # the components B: decides (field credit puts them on B:)
DECISIVE_ZERO_AT = 0.5  # kept: a loss of half a point (a won game drawn, a drawn one lost) keeps nothing
BAD_MOVE = -0.25  # the verdict of a listed move that is illegal, a repeat or one too many

MEMO_SIZE = 200_000  # engine analyses kept in memory by a PolicyGrader (~1 kB each)
POLICY_COMPONENTS = (
    "parsed", "well_formed", "layout", "best", "best_legal", "best_top5", "best_top1", "cp_loss", "legal_moves",
    "candidates", "evals", "evals_top5", "b_field", "b_loss",
)  # fmt: skip


def score_policy(
    fen: str,
    completion: str | ParsedPolicy,
    analysis: Sequence[MoveEval],
    move_cps: Mapping[str, int | None] | None = None,
    shaping: str = "graduated",
) -> tuple[float, dict[str, float | None]]:
    """(reward, components) of a P: completion against the engine's analysis of `fen` (MultiPV, best first).
    `move_cps`: the engine's evals (None: illegal) of written moves missing from `analysis`. A legal move missing
    from both is graded as the last analysed line, and no eval counts above it: the root search ranked it no better.

    >>> fen = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"  # Ra8 mates; the other lines are made up
    >>> top = [MoveEval("a1a8", 99999), *(MoveEval(m, 40) for m in ("h2h3", "g2g3", "g1f1", "f2f3"))]
    >>> from rookworld_trl.chess.formats import policy_completion
    >>> moves, evals = ["h2h3", "a1a8", "g2g3", "g1f1", "f2f3"], [0.4, 999.99, 0.4, 0.4, 0.4]
    >>> score_policy(fen, policy_completion(moves, evals, "a1a8"), top)[0]  # rendered with the widths
    1.0
    >>> score_policy(fen, policy_completion(moves, evals, "h2h3"), top)[0]
    0.8
    >>> score_policy(fen, " h2h3 a1a8 g2g3 g1f1 f2f3 E: 0.4 999.99 0.4 0.4 0.4 B: a1a8", top)[0]  # no widths
    0.8
    >>> score_policy(fen, " a1a8 E: 999.99 B: a1a8", top)[0], score_policy(fen, " a1a8 E: 999.99", top)[0]
    (0.2, -0.3)

    Under "decisive" B:'s share follows its expected-score loss: missing the mate (a loss of 0.46 here) costs
    0.38 of the reward (dense: 0.24), an illegal B: 0.48.

    >>> [round(score_policy(fen, policy_completion(moves, evals, b), top, shaping=s)[0], 2)
    ...  for s in ("dense", "decisive") for b in ("a1a8", "h2h3", "b2b3")]
    [1.0, 0.76, 0.6, 1.0, 0.62, 0.52]
    """
    parsed = completion if isinstance(completion, ParsedPolicy) else parse_policy_completion(completion)
    if not parsed.ok:  # graded without the analysis: callers need not search for it
        return PENALTY, {**dict.fromkeys(POLICY_COMPONENTS, 0.0), "cp_loss": None, "b_loss": None}
    if not analysis:
        raise ValueError(f"no engine analysis for {fen} (game over?)")
    if len(analysis) < MULTIPV and len(analysis) != chess.Board(fen).legal_moves.count():
        raise ValueError(f"analysis of {fen} has {len(analysis)} lines for {MULTIPV} expected moves")
    components, checks = _grade(parsed, analysis, _centipawns(fen, analysis, move_cps))
    reward = shape(checks, _quality(components, shaping), shaping)
    if not parsed.exact:
        # The fixed widths (docs/FORMATS.md) cost at every level: a weak model's answers fail some other check
        # anyway, so inside a check they would carry no signal, sampling would drift in the padding, and
        # greedy output would lose the format (seen in the default GRPO run).
        reward = 0.0 if shaping == "binary" else round(reward - LAYOUT_PENALTY, 6)
    return reward, components


def _centipawns(fen: str, analysis: Sequence[MoveEval], move_cps: Mapping[str, int | None] | None):
    """move -> the engine's eval of it (None: illegal), graded as score_policy says."""
    cps, floor = {m.move: m.cp for m in analysis}, analysis[-1].cp
    cps |= {m: None if cp is None else min(cp, floor) for m, cp in (move_cps or {}).items() if m not in cps}
    board = None  # built only for a move nobody graded: a python-chess board costs more than the rest

    def cp_of(move: str) -> int | None:
        nonlocal board
        if move in cps:
            return cps[move]
        board = board or chess.Board(fen)
        return None if legal_move(board, move) is None else floor

    return cp_of


def _grade(parsed: ParsedPolicy, analysis: Sequence[MoveEval], cp_of) -> tuple[dict, dict[str, bool]]:
    """(components, checks) of a parsed P: answer: see POLICY_COMPONENTS."""
    top5, top_cp = {m.move for m in analysis[:MULTIPV]}, analysis[0].cp
    moves, n_expected = parsed.moves, min(MULTIPV, len(analysis))
    distinct = list(dict.fromkeys(moves))
    move_cp = {m: cp_of(m) for m in distinct}
    best_cp = cp_of(parsed.best)
    best = 0.0 if best_cp is None else best_move_score(top_cp, best_cp)
    first_evals: dict[str, float] = {}  # a repeated move's eval is graded once, as first written
    for move, pawns in zip(moves, parsed.evals, strict=False):  # a move without an eval scores 0
        first_evals.setdefault(move, pawns)
    eval_total = sum(eval_score(e, move_cp[m]) for m, e in first_evals.items() if move_cp[m] is not None)
    formats = [
        len(moves) == n_expected,
        len(distinct) == len(moves),
        all(cp is not None for cp in move_cp.values()),
        len(parsed.evals) == len(moves),
        parsed.best in moves,
    ]
    components = {
        "parsed": 1.0,
        "well_formed": sum(formats) / len(formats),
        "best": best,
        "best_legal": float(best_cp is not None),
        "best_top5": float(parsed.best in top5),
        "best_top1": float(best_cp is not None and best_cp >= top_cp),
        "cp_loss": None if best_cp is None else float(min(1000, max(0, top_cp - best_cp))),
        # B:'s expected-score loss against the top move (None: B: illegal) and what a legal B: keeps of it
        "b_loss": None if best_cp is None else max(0.0, expected_score_loss(top_cp, best_cp)),
        # Distinct legal moves listed, out of at least n_expected: five legality verdicts per answer.
        "legal_moves": sum(cp is not None for cp in move_cp.values()) / max(len(moves), n_expected),
        # Out of at least n_expected, so that writing one good move does not earn full marks.
        "candidates": len(top5.intersection(distinct)) / max(len(moves), n_expected),
        "evals": eval_total / max(len(moves), len(parsed.evals), n_expected),
        # The evals of the engine's top moves only, out of n_expected: a filler's eval earns nothing either.
        "evals_top5": sum(eval_score(e, move_cp[m]) for m, e in first_evals.items() if m in top5)
        / n_expected,
    }
    checks = {
        "well_formed": all(formats),
        **{k: components[k] == 1 for k in ("best_legal", "best_top5", "best_top1", "candidates")},
        "evals": components["evals"] >= EVAL_CLOSE,
    }
    components["move_verdicts"] = move_verdicts(moves, move_cp, top5, n_expected)
    components["n_expected"] = n_expected  # the moves the format asks for here (fewer where fewer are legal)
    components["moves_score"] = max(-1.0, min(1.0, sum(components["move_verdicts"]) / n_expected))
    components["best_slot"] = moves.index(parsed.best) if parsed.best in moves else -1
    components["b_field"] = best_field(components, parsed)
    # B:'s choice, the credit of `choice_credit` (grpo/credit.py): B:'s value against a uniform pick among the
    # listed moves (b_choice) or against the best of them (b_regret: <= 0), each valued 0.4 legal + 0.6 quality.
    values = [
        0.0 if cp is None else 0.4 + 0.6 * best_move_score(top_cp, cp) for cp in (best_cp, *move_cp.values())
    ]
    b_value, *listed = values
    components["b_choice"] = b_value - (sum(listed) / len(listed) if listed else 0.0)
    components["b_regret"] = min(0.0, b_value - max(listed, default=0.0))
    components["layout"] = float(parsed.exact)
    components["kept"] = 0.0 if best_cp is None else max(0.0, 1 - components["b_loss"] / DECISIVE_ZERO_AT)
    return components, checks


def _quality(c: dict, shaping: str) -> float:
    """The answer's quality in [0, 1] under `shaping`; tenths, so that all-correct sums to exactly 1.0."""
    if shaping == "precise":  # in [-0.25, 1]: M: 0.25 x the mean verdict over the expected slots (precision,
        # never count), E: 0.15 x the accuracy of the evals of listed top-5 moves, B: 0.6 x B:'s own (best_field)
        w = PRECISE_WEIGHTS
        return w["M"] * c["moves_score"] + w["E"] * c["evals_top5"] + w["B"] * c["b_field"]
    if shaping in QUALITY_WEIGHTS:  # dense, decisive
        return sum(w * c[name] for name, w in QUALITY_WEIGHTS[shaping].items()) / 10
    return (5 * c["best"] + 2 * c["candidates"] + 2 * c["evals"] + c["well_formed"]) / 10  # B: weighs most


def move_verdicts(
    moves: Sequence[str], move_cp: Mapping[str, int | None], top5: set[str], n_expected: int = MULTIPV
) -> list[float]:
    """Each written move's verdict, in the order written: +1 one of the engine's top 5, 0 another legal move,
    BAD_MOVE for one illegal, repeated or past the n_expected-th: a quarter of a top move's worth, so that listing
    a likely candidate still pays (at -1 a weak policy's lists shrank to one move).

    >>> move_verdicts(["e2e4", "h2h3", "e2e4", "e2e5"], {"e2e4": 30, "h2h3": -10, "e2e5": None}, {"e2e4"})
    [1.0, 0.0, -0.25, -0.25]
    """
    out, seen = [], set()
    for i, move in enumerate(moves):
        if i >= n_expected or move in seen or move_cp[move] is None:
            out.append(BAD_MOVE)
        else:
            out.append(1.0 if move in top5 else 0.0)
        seen.add(move)
    return out


def best_field(components: Mapping, parsed: ParsedPolicy) -> float:
    """B:'s own verdict in [0, 1]: 0.4 legal + 0.4 engine quality + 0.2 B: is the listed move with the top E:."""
    evals = dict(zip(parsed.moves, parsed.evals, strict=False))
    consistent = bool(evals) and evals.get(parsed.best) == max(evals.values())  # ties: any top one
    return 0.4 * components["best_legal"] + 0.4 * components["best"] + 0.2 * consistent


def best_move_score(top_cp: int, cp: int) -> float:
    """1.0 for the engine's top move, falling linearly in expected score to 0 at a loss of BEST_ZERO_AT (mate in
    3 vs mate in 5 loses almost nothing).

    >>> best_move_score(30, 30), round(best_move_score(30, 0), 2), best_move_score(99997, 99995)
    (1.0, 0.86, 1.0)
    """
    return max(0.0, 1 - expected_score_loss(top_cp, cp) / BEST_ZERO_AT)


def expected_score_loss(top_cp: int, cp: int) -> float:
    """The expected score a move with the engine's eval `cp` gives up against the top move's `top_cp`.

    >>> round(expected_score_loss(30, 0), 4), expected_score_loss(99997, 99995)
    (0.0276, 0.0)
    """
    return expected_score(top_cp) - expected_score(cp)


def best_move_loss(fen: str, parsed: ParsedPolicy, analysis: Sequence[MoveEval], move_cps=None) -> float:
    """B:'s expected-score loss against the engine's top move, B: graded as score_policy grades it; an
    unparseable answer or an illegal or missing B: counts as the worst, 1.0, so writing less cannot improve it.

    >>> fen = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"
    >>> top = [MoveEval("a1a8", 99999), *(MoveEval(m, 40) for m in ("h2h3", "g2g3", "g1f1", "f2f3"))]
    >>> [round(best_move_loss(fen, parse_policy_completion(f" a1a8 E: 999.99 B: {b}"), top), 3)
    ...  for b in ("a1a8", "h2h3", "a1a2", "a1h8")]
    [0.0, 0.463, 0.463, 1.0]
    """
    if not parsed.ok or not parsed.best:
        return 1.0
    cp = _centipawns(fen, analysis, move_cps)(parsed.best)
    return 1.0 if cp is None else expected_score_loss(analysis[0].cp, cp)


def eval_score(pawns: float, cp: int) -> float:
    """1.0 for the engine's eval, falling linearly in expected score to 0 at an error of EVAL_ZERO_AT.

    >>> eval_score(0.3, 30), eval_score(999.97, 99990), round(eval_score(-0.3, 30), 2), eval_score(0.0, 99999)
    (1.0, 1.0, 0.72, 0.0)
    """
    written = round(max(-MATE_SCORE, min(MATE_SCORE, pawns * 100)))  # pawns as written -> exact cp
    return max(0.0, 1 - abs(expected_score(written) - expected_score(cp)) / EVAL_ZERO_AT)


def label_analysis(
    fen: str, moves: Sequence[str] | None, evals: Sequence[float] | None
) -> list[MoveEval] | None:
    """A dataset label (top-k moves best first, evals in pawns) as an engine analysis, or None when it cannot be."""
    if not moves or evals is None or len(moves) != len(evals) or not all(isinstance(m, str) for m in moves):
        return None
    try:
        cps = [round(float(e) * 100) for e in evals]
    except (TypeError, ValueError, OverflowError):  # None, text, inf, nan
        return None
    board = chess.Board(fen)
    if len(set(moves)) != len(moves) or any(legal_move(board, m) is None for m in moves):
        return None
    if cps != sorted(cps, reverse=True) or len(moves) != min(MULTIPV, board.legal_moves.count()):
        return None
    return [MoveEval(m, cp) for m, cp in zip(moves, cps, strict=True)]


class PolicyGrader:
    """Scores batches of P: completions with an EnginePool, with an in-memory memo in front of it. Per batch at
    most two `pool.analyse_many` calls: the positions, then the position after each written legal move the root
    search did not list, searched for its best line only (MultiPV 1) and negated: the engine's eval of that move.
    """

    def __init__(self, pool: EnginePool, shaping: str = "graduated", memo_size: int = MEMO_SIZE):
        if pool.multipv < MULTIPV:
            raise ValueError(
                f"the policy reward needs an EnginePool with multipv >= {MULTIPV}, got {pool.multipv}"
            )
        self.pool, self.shaping, self.memo_size = pool, check_shaping(shaping), memo_size
        self.memo: dict[str, list[MoveEval]] = {}  # fen -> the engine's analysis at pool.limit
        self.move_memo: dict[tuple[str, str], int | None] = {}  # (fen, move) -> its cp, None if illegal

    def analyses(self, fens: Sequence[str], labels: Sequence[list[MoveEval] | None] | None = None) -> list:
        """The engine's analysis of each FEN: memo, else a label at this limit, else the pool."""
        out: list[list[MoveEval] | None] = [self.memo.get(fen) for fen in fens]
        for i, label in enumerate(labels or []):
            if out[i] is None and label is not None:  # memoised too: field credit grades again without labels
                out[i] = self.memo[fens[i]] = label
        todo = [i for i, a in enumerate(out) if a is None]
        for i, analysis in zip(todo, self.pool.analyse_many([fens[i] for i in todo]), strict=True):
            out[i] = self.memo[fens[i]] = analysis
        return out

    def move_cps(self, fens: Sequence[str], analyses: Sequence, parsed: Sequence[ParsedPolicy]) -> list[dict]:
        """Per sample, {move: engine cp, None if illegal} of the moves written but not in its analysis."""
        wanted = []  # per sample: the moves written (M: and B:) that its analysis does not list
        for analysis, p in zip(analyses, parsed, strict=True):
            listed = {a.move for a in analysis}
            moves = dict.fromkeys([*p.moves, p.best]) if p.ok else {}  # unparseable: -0.3, no search
            wanted.append([m for m in moves if m not in listed])
        children: dict[tuple[str, str], str] = {}  # (fen, move) -> the position after it, to search
        for fen, moves in zip(fens, wanted, strict=True):
            board = None
            for move in moves:
                if (fen, move) in self.move_memo or (fen, move) in children:
                    continue
                board = board or chess.Board(fen)
                if (legal := legal_move(board, move)) is None:
                    self.move_memo[fen, move] = None
                    continue
                board.push(legal)
                if board.is_game_over():  # the pool has nothing to say about a finished game
                    self.move_memo[fen, move] = MATE_SCORE - 1 if board.is_checkmate() else 0
                else:
                    children[fen, move] = board.fen()
                board.pop()
        searched = self.pool.analyse_many(list(children.values()), multipv=1)
        found = dict(zip(children.values(), searched, strict=True))
        for key, child in children.items():
            self.move_memo[key] = -found[child][0].cp  # the opponent's best reply, from our side
        return [{m: self.move_memo[fen, m] for m in moves} for fen, moves in zip(fens, wanted, strict=True)]

    def score(self, fens: Sequence[str], completions: Sequence[str], labels=None) -> list[tuple[float, dict]]:
        """(reward, components) for each (fen, completion); `labels` as in `analyses`."""
        if len(self.memo) + len(self.move_memo) > self.memo_size:  # crude bound for long runs
            self.memo.clear()
            self.move_memo.clear()
        parsed = [parse_policy_completion(c) for c in completions]
        ok = [i for i, p in enumerate(parsed) if p.ok]  # an unparseable answer scores -0.3 without a search
        fens_ok = [fens[i] for i in ok]
        analyses = self.analyses(fens_ok, None if labels is None else [labels[i] for i in ok])
        graded = iter(zip(analyses, self.move_cps(fens_ok, analyses, [parsed[i] for i in ok]), strict=True))
        out = []
        for fen, p in zip(fens, parsed, strict=True):
            analysis, cps = next(graded) if p.ok else ([], None)
            out.append(score_policy(fen, p, analysis, cps, self.shaping))
        return out


# ------------------------------------------------------------------------ the reward-hacking watch

ERROR_KINDS = tuple(k for k in ILLEGAL_KINDS if k != "no_move")  # a listed move always parses as UCI
NAMES = ("precision", "distinct", "b_legal", "selection", "b_best_e", *(f"err_{k}" for k in ERROR_KINDS),
         "first_share")  # fmt: skip


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
