"""Verifiable chess rewards for GRPO on TRL: the A: (environment) reward and the P: (policy) reward.

Both follow TRL's reward-function convention `(prompts, completions, **kwargs) -> list[float | None]`:
a sample of the other task gets None (TRL skips it), dataset columns arrive as keyword arguments, and
every component is reported through TRL's `log_metric` (batch means, as `env/<name>` and `policy/<name>`)
and `log_extra` (one value per sample in the completions table) when the trainer passes them.

- `env_reward`: the truth comes from the prompt alone with python-chess (`environment.env_truth`).
- `policy_reward` (built by `make_policy_reward(pool)`): graded against Stockfish through an `EnginePool`.
  A dataset label counts only as a cache of the engine at the pool's own limit; it is never the judge.

Scale (docs/FORMATS.md): -0.3 unparseable; otherwise a shaping of the per-task checks and quality:
graduated (default) 0.2 format only / 0.4 some checks / 0.6 most / 0.8 near perfect / 1.0 all;
linear 0.2 + 0.8 x fraction of checks; continuous 0.2 + 0.8 x weighted smooth quality; dense as continuous,
with a P: quality that also grades the legality of every listed move (five verdicts per sample instead of
the one of B:; for A: it is continuous); binary 1/0.
A P: answer that parses but misses the fixed widths loses LAYOUT_PENALTY (0.2) at every level (binary: 0).
The true completion scores exactly 1.0 under every shaping.

    python -c "from rookworld_trl.rewards import score_env; print(score_env(
        'A: rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1+e2e4+e2e4+',
        'rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0'))"
    python scripts/bench_rewards.py     # throughput figures
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import chess
from rapidfuzz.distance import Levenshtein

from .engine import MATE_SCORE, EnginePool, MoveEval
from .environment import env_truth, legal_move, parse_board
from .formats import (
    EnvSample,
    FormatError,
    ParsedPolicy,
    parse_env_completion,
    parse_policy_completion,
    parse_policy_prompt,
    task_of,
)

LAYOUT_PENALTY = 0.2  # a P: answer that parses but is not laid out in the fixed widths
logger = logging.getLogger(__name__)

PENALTY = -0.3  # unparseable: mild, the seeds found -1.0 destabilised training
SHAPINGS = ("graduated", "linear", "continuous", "dense", "binary")
TOP_K = 5  # the P: format lists the engine's top 5 moves
WIN_K = 0.00368208  # lichess's centipawn -> expected score slope; saturates, so mates and +20 agree
BEST_ZERO_AT = 0.2  # best move: a loss of 0.2 expected score (~230 cp from equality; lichess: a mistake) is 0
EVAL_ZERO_AT = 0.2  # evaluation: an error of 0.2 expected score scores 0
EVAL_CLOSE = 0.75  # evals check: mean score >= 0.75, i.e. errors of ~0.05 expected score (~50 cp at equality)
FEN_CLOSE = 0.9  # env check: FEN similarity of one or two wrong squares
MEMO_SIZE = 200_000  # engine analyses kept in memory by a PolicyGrader (~1 kB each)

ENV_COMPONENTS = (
    "parsed", "fen_exact", "fen_valid", "fen_similarity", "placement", "side", "castling", "en_passant", "clocks",
    "reward_value", "terminated", "truncated",
)  # fmt: skip
INVALID_STATE_CAP = 0.4  # an A: next state that is no valid position scores at most "some checks"
POLICY_COMPONENTS = (
    "parsed", "well_formed", "layout", "best", "best_legal", "best_top5", "best_top1", "cp_loss", "legal_moves",
    "candidates", "evals",
)  # fmt: skip


# ------------------------------------------------------------------------------------------- shaping


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
    if shaping in ("continuous", "dense"):  # the callers pass dense's own quality
        return 0.2 + 0.8 * quality
    if shaping == "binary":
        return float(passed == 1)
    raise ValueError(f"unknown shaping {shaping!r}, expected one of {SHAPINGS}")


def check_shaping(shaping: str) -> str:
    if shaping not in SHAPINGS:
        raise ValueError(f"unknown shaping {shaping!r}, expected one of {SHAPINGS}")
    return shaping


def expected_score(cp: float) -> float:
    """Centipawns (side to move) -> expected score in (0, 1). A mate (+-100000) is 1 or 0."""
    return 1 / (1 + math.exp(-WIN_K * max(-MATE_SCORE, min(MATE_SCORE, cp))))


# -------------------------------------------------------------------------------- environment (A:)


def similarity(a: str, b: str) -> float:
    """Normalized Levenshtein similarity, 1 - distance / longer length (1.0 for two empty strings)."""
    return Levenshtein.normalized_similarity(a, b)


def score_env(
    prompt: str, completion: str, shaping: str = "graduated", truth: EnvSample | None = None
) -> tuple[float, dict[str, float]]:
    """(reward, components) of an A: completion; the truth follows from the prompt (python-chess).

    A malformed prompt raises (env_reward turns that into None); a malformed completion never does. A
    next state that is not a valid position (python-chess cannot read it, or no legal position: a missing
    king, nine pawns on a rank) scores at most INVALID_STATE_CAP, whatever its similarity to the truth.

    >>> prompt = "A: rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1+e2e4+e2e4+"
    >>> score_env(prompt, "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0")[0]
    1.0
    >>> score_env(prompt, "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR w KQkq - 0 1+0.001+0+0")[0]
    0.8
    """
    truth = truth or env_truth(prompt)
    parsed = parse_env_completion(completion)
    if not parsed.ok:
        return PENALTY, dict.fromkeys(ENV_COMPONENTS, 0.0)
    got, want = parsed.new_fen.split(), truth.new_fen.split()
    fen_similarity = similarity(parsed.new_fen, truth.new_fen)
    fields = {
        "placement": got[0] == want[0],
        "side": got[1] == want[1],
        "castling": got[2] == want[2],
        "en_passant": got[3] == want[3],
        "clocks": got[4:] == want[4:],
    }
    flags = {
        "reward_value": abs(parsed.reward - truth.reward) < 1e-6,
        "terminated": parsed.terminated == truth.terminated,
        "truncated": parsed.truncated == truth.truncated,
    }
    checks = {"fen_close": fen_similarity >= FEN_CLOSE, **fields, **flags}
    # Weights in tenths so that all-correct sums to exactly 1.0: the FEN is most of the task.
    field_mean = sum(fields.values()) / len(fields)
    quality = (3 * fen_similarity + 3 * field_mean + 2 * flags["reward_value"]) / 10
    quality += (flags["terminated"] + flags["truncated"]) / 10
    valid = position(parsed.new_fen) is not None
    components = {
        "parsed": 1.0,
        "fen_exact": float(parsed.new_fen == truth.new_fen),
        "fen_valid": float(valid),
    }
    components |= {"fen_similarity": fen_similarity, **{k: float(v) for k, v in (fields | flags).items()}}
    reward = shape(checks, quality, shaping)
    return (reward if valid else min(reward, INVALID_STATE_CAP)), components


def position(fen: str) -> str | None:
    """The canonical FEN of a valid position, else None (never raises)."""
    try:
        return parse_board(fen).fen()
    except ValueError:
        return None


def truth_or_none(prompt: str) -> EnvSample | None:
    """The A: truth of a prompt, or None when its position is not valid (never raises)."""
    try:
        return env_truth(prompt)
    except ValueError:
        return None


def count_invalid_prompts(prefix: str, n: int, of: int, log_metric) -> None:
    """Log how many of the task's `of` prompts in this batch were no valid position (as
    `<prefix>/invalid_prompts`); warn once per process the first time: their samples get None, TRL skips them."""
    if log_metric is not None and of:
        log_metric(f"{prefix}/invalid_prompts", float(n))
    if n and prefix not in _WARNED:
        _WARNED.add(prefix)
        logger.warning(
            f"{prefix} reward: {n} prompt(s) in this batch are no valid chess position; they get no reward "
            f"(None) and are counted as {prefix}/invalid_prompts. Check the data with `rookworld data audit`."
        )


_WARNED: set[str] = set()


def make_env_reward(*, shaping: str = "graduated", engine: EnginePool | None = None) -> Callable:
    """The A: reward function for TRL. `engine` is unused (python-chess is the truth); it keeps the
    factories of REWARD_FUNCS alike."""
    check_shaping(shaping)

    def env_reward(
        prompts: list[str],
        completions: list[str],
        task: list[str] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **kwargs,
    ) -> list[float | None]:
        """A: reward of each completion, None for P: samples. Dataset labels are not needed.

        >>> p = "A: rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1+e2e4+e2e4+"
        >>> env_reward([p, p, "P: 8/8 M:"], ["rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"
        ...     "+0.001+0+0", "no idea", " e2e4"])
        [1.0, -0.3, None]
        """
        truths: dict[str, EnvSample | None] = {}  # GRPO repeats each prompt num_generations times
        rewards, components, invalid = [], [], 0
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            if _task(prompts, task, i) != "A":
                rewards.append(None)
                components.append(None)
                continue
            if prompt not in truths:
                truths[prompt] = truth_or_none(prompt)
            if truths[prompt] is None:  # no valid position: nothing to judge against
                invalid += 1
                rewards.append(None)
                components.append(None)
                continue
            reward, parts = score_env(prompt, completion, shaping, truths[prompt])
            rewards.append(reward)
            components.append(parts)
        log_components("env", ENV_COMPONENTS, components, log_metric, log_extra)
        count_invalid_prompts("env", invalid, sum(c is not None for c in components) + invalid, log_metric)
        return rewards

    return env_reward


env_reward = make_env_reward()  # a plain function (graduated), as in trl.rewards


# ------------------------------------------------------------------------------------- policy (P:)


def score_policy(
    fen: str,
    completion: str | ParsedPolicy,
    analysis: Sequence[MoveEval],
    move_cps: Mapping[str, int | None] | None = None,
    shaping: str = "graduated",
) -> tuple[float, dict[str, float | None]]:
    """(reward, components) of a P: completion against the engine's analysis of `fen`.

    `analysis`: the engine's MultiPV (>= 5 lines, or every legal move), best first. `move_cps`: for
    written moves missing from `analysis`, the engine's eval (centipawns, side to move), None if illegal.
    A legal move missing from both is graded as the last analysed line: an upper bound, since the root
    search ranked it no better; for the same reason no eval in `move_cps` counts above that line.

    >>> fen = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"  # Ra8 mates; the other lines are made up
    >>> top = [MoveEval("a1a8", 99999), *(MoveEval(m, 40) for m in ("h2h3", "g2g3", "g1f1", "f2f3"))]
    >>> from rookworld_trl.formats import policy_completion
    >>> moves, evals = ["h2h3", "a1a8", "g2g3", "g1f1", "f2f3"], [0.4, 999.99, 0.4, 0.4, 0.4]
    >>> score_policy(fen, policy_completion(moves, evals, "a1a8"), top)[0]  # rendered with the widths
    1.0
    >>> score_policy(fen, policy_completion(moves, evals, "h2h3"), top)[0]
    0.8
    >>> score_policy(fen, " h2h3 a1a8 g2g3 g1f1 f2f3 E: 0.4 999.99 0.4 0.4 0.4 B: a1a8", top)[0]  # no widths
    0.8
    >>> score_policy(fen, " a1a8 E: 999.99 B: a1a8", top)[0], score_policy(fen, " a1a8 E: 999.99", top)[0]
    (0.2, -0.3)
    """
    parsed = completion if isinstance(completion, ParsedPolicy) else parse_policy_completion(completion)
    if not parsed.ok:  # graded without the analysis: callers need not search for it
        return PENALTY, {**dict.fromkeys(POLICY_COMPONENTS, 0.0), "cp_loss": None}
    if not analysis:
        raise ValueError(f"no engine analysis for {fen} (game over?)")
    if len(analysis) < TOP_K and len(analysis) != chess.Board(fen).legal_moves.count():
        raise ValueError(f"analysis of {fen} has {len(analysis)} lines for {TOP_K} expected moves")
    cps, top5, floor = {m.move: m.cp for m in analysis}, {m.move for m in analysis[:TOP_K]}, analysis[-1].cp
    cps |= {m: None if cp is None else min(cp, floor) for m, cp in (move_cps or {}).items() if m not in cps}
    board = None  # built only for a move nobody graded: a python-chess board costs more than the rest

    def cp_of(move: str) -> int | None:  # None: illegal
        nonlocal board
        if move in cps:
            return cps[move]
        board = board or chess.Board(fen)
        return None if legal_move(board, move) is None else floor

    moves, n_expected = parsed.moves, min(TOP_K, len(analysis))
    distinct = list(dict.fromkeys(moves))
    move_cp = {m: cp_of(m) for m in distinct}
    best_cp, top_cp = cp_of(parsed.best), analysis[0].cp
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
        # Distinct legal moves listed, out of at least n_expected: five legality verdicts per answer.
        "legal_moves": sum(cp is not None for cp in move_cp.values()) / max(len(moves), n_expected),
        # Out of at least n_expected, so that writing one good move does not earn full marks.
        "candidates": len(top5.intersection(distinct)) / max(len(moves), n_expected),
        "evals": eval_total / max(len(moves), len(parsed.evals), n_expected),
    }
    checks = {
        "well_formed": all(formats),
        **{k: components[k] == 1 for k in ("best_legal", "best_top5", "best_top1", "candidates")},
        "evals": components["evals"] >= EVAL_CLOSE,
    }
    # Tenths so that all-correct sums to exactly 1.0; the best move weighs most.
    if shaping == "dense":  # legality of every listed move and of B:, then the continuous quality of B:
        legal = 3 * components["legal_moves"] + 2 * components["best_legal"]
        quality = (legal + 3 * best + components["candidates"] + components["evals"]) / 10
    else:
        quality = (
            5 * best + 2 * components["candidates"] + 2 * components["evals"] + components["well_formed"]
        ) / 10
    components["layout"] = float(parsed.exact)
    reward = shape(checks, quality, shaping)
    if not parsed.exact:
        # The fixed widths (docs/FORMATS.md) cost at every level: a weak model's answers fail some other check
        # anyway, so inside a check they would carry no signal, sampling would drift in the padding, and
        # greedy output would lose the format (seen in the default GRPO run).
        reward = 0.0 if shaping == "binary" else round(reward - LAYOUT_PENALTY, 6)
    return reward, components


def best_move_score(top_cp: int, cp: int) -> float:
    """1.0 for the engine's top move, falling linearly in expected score to 0 at a loss of BEST_ZERO_AT.
    Mates are handled by the expected score: mate in 3 vs mate in 5, or vs +15, loses (almost) nothing.

    >>> best_move_score(30, 30), round(best_move_score(30, 0), 2), best_move_score(99997, 99995)
    (1.0, 0.86, 1.0)
    """
    return max(0.0, 1 - (expected_score(top_cp) - expected_score(cp)) / BEST_ZERO_AT)


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
    """A dataset label (top-k moves best first, evals in pawns) as an engine analysis, or None when it
    cannot be one: illegal or repeated moves, evals not best-first, fewer moves than the format asks."""
    if not moves or evals is None or len(moves) != len(evals) or not all(isinstance(m, str) for m in moves):
        return None
    try:
        cps = [round(float(e) * 100) for e in evals]
    except (TypeError, ValueError, OverflowError):  # None, text, inf, nan
        return None
    board = chess.Board(fen)
    if len(set(moves)) != len(moves) or any(legal_move(board, m) is None for m in moves):
        return None
    if cps != sorted(cps, reverse=True) or len(moves) != min(TOP_K, board.legal_moves.count()):
        return None
    return [MoveEval(m, cp) for m, cp in zip(moves, cps, strict=True)]


class PolicyGrader:
    """Scores batches of P: completions with an EnginePool, with an in-memory memo in front of it.

    Per batch, at most two rounds of engine work, each one `pool.analyse_many` call (parallel over the
    pool's workers, every position once): (1) the positions; (2) for each written legal move the root
    search did not list (it runs MultiPV 5), the position after it, analysed at the same limit and
    negated: the engine's own eval of that move, cached like any position.
    """

    def __init__(self, pool: EnginePool, shaping: str = "graduated", memo_size: int = MEMO_SIZE):
        if pool.multipv < TOP_K:
            raise ValueError(
                f"the policy reward needs an EnginePool with multipv >= {TOP_K}, got {pool.multipv}"
            )
        self.pool, self.shaping, self.memo_size = pool, check_shaping(shaping), memo_size
        self.memo: dict[str, list[MoveEval]] = {}  # fen -> the engine's analysis at pool.limit
        self.move_memo: dict[tuple[str, str], int | None] = {}  # (fen, move) -> its cp, None if illegal

    def analyses(self, fens: Sequence[str], labels: Sequence[list[MoveEval] | None] | None = None) -> list:
        """The engine's analysis of each FEN: memo, else a label at this limit, else the pool."""
        out: list[list[MoveEval] | None] = [self.memo.get(fen) for fen in fens]
        if labels is not None:
            out = [a if a is not None else label for a, label in zip(out, labels, strict=True)]
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
        found = dict(zip(children.values(), self.analyses(list(children.values())), strict=True))
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


def make_policy_reward(*, engine: EnginePool | None = None, shaping: str = "graduated") -> Callable:
    """The P: reward function for TRL, graded by `engine` (None: a default EnginePool(), depth 8, one
    worker, started on first use). Its memo lives as long as the returned function."""
    grader = PolicyGrader(engine if engine is not None else EnginePool(), shaping)
    limit_key = grader.pool.limit.key()

    def policy_reward(
        prompts: list[str],
        completions: list[str],
        task: list[str] | None = None,
        moves: list | None = None,
        evals: list | None = None,
        limit: list[str] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **kwargs,
    ) -> list[float | None]:
        """P: reward of each completion, None for A: samples. The position is read from the prompt.

        Columns `moves`/`evals`/`limit` (optional): a label whose `limit` equals the pool's limit key
        stands in for the engine's analysis (a cache); any other label is ignored.
        """
        ours = [i for i in range(len(prompts)) if _task(prompts, task, i) == "P"]
        valid = {i: _prompt_position(prompts[i]) for i in ours}
        mine = [i for i in ours if valid[i] is not None]  # the others get None: no position to judge
        fens = [parse_policy_prompt(prompts[i]) for i in mine]
        labels = None
        if moves is not None and evals is not None and limit is not None:
            labels = [
                label_analysis(f, moves[i], evals[i]) if limit[i] == limit_key else None
                for f, i in zip(fens, mine, strict=True)
            ]
        scored = grader.score(fens, [completions[i] for i in mine], labels)
        rewards: list[float | None] = [None] * len(prompts)
        components: list[dict | None] = [None] * len(prompts)
        for i, (reward, parts) in zip(mine, scored, strict=True):
            rewards[i], components[i] = reward, parts
        log_components("policy", POLICY_COMPONENTS, components, log_metric, log_extra)
        count_invalid_prompts("policy", len(ours) - len(mine), len(ours), log_metric)
        policy_reward.last_components = components  # per sample, for field credit (rookworld_trl/credit.py)
        return rewards

    policy_reward.grader = grader  # for tests and benchmarks: the memo and the pool's counters
    return policy_reward


# ------------------------------------------------------------------------------------------ plumbing


def _prompt_position(prompt: str) -> str | None:
    """The valid position of a P: prompt, else None (never raises)."""
    try:
        return position(parse_policy_prompt(prompt))
    except FormatError:
        return None


def _task(prompts: Sequence[str], task: Sequence[str] | None, i: int) -> str:
    """'P' or 'A': the `task` column when present, else read from the prompt."""
    return task[i] if task is not None and task[i] in ("P", "A") else task_of(prompts[i])


def log_components(
    prefix: str, names: Sequence[str], components: Sequence[dict | None], log_metric, log_extra
):
    """Batch means through TRL's `log_metric`, per-sample values (None: other task) through `log_extra`.
    Every column is logged every batch, even empty, so that TRL's completions table stays aligned."""
    if log_metric is not None:
        for name in names:
            values = [c[name] for c in components if c is not None and c[name] is not None]
            if values:
                log_metric(f"{prefix}/{name}", sum(values) / len(values))
    if log_extra is not None:
        for name in names:
            log_extra(f"{prefix}/{name}", [None if c is None else c[name] for c in components])


REWARD_FUNCS: dict[str, Callable[..., Callable]] = {
    "policy_reward": make_policy_reward,
    "env_reward": make_env_reward,
}


def get_reward_funcs(
    names: Sequence[str], *, engine: EnginePool | None = None, shaping: str = "graduated"
) -> list[Callable]:
    """Reward functions by registry name, in order; weight them with GRPOConfig.reward_weights.

    >>> [f.__name__ for f in get_reward_funcs(["env_reward"], shaping="linear")]
    ['env_reward']
    """
    unknown = [n for n in names if n not in REWARD_FUNCS]
    if unknown:
        raise ValueError(f"unknown reward function(s) {unknown}; known: {sorted(REWARD_FUNCS)}")
    return [REWARD_FUNCS[name](engine=engine, shaping=shaping) for name in names]
