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
the one of B:; for A: it is continuous); decisive as dense, with half of the P: quality on B:, whose share also
follows B:'s expected-score loss up to 0.5 (grpo/rewards/policy.py QUALITY_WEIGHTS: a missed mate costs about what it
gives up in a game; A: continuous); binary 1/0.
A P: answer that parses but misses the fixed widths loses LAYOUT_PENALTY (0.2) at every level (binary: 0).
The true completion scores exactly 1.0 under every shaping.

    python -c "from rookworld_trl.grpo.rewards.functions import score_env; print(score_env(
        'A: rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1+e2e4+e2e4+',
        'rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0'))"
    python scripts/bench/bench_rewards.py     # throughput figures
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from rapidfuzz.distance import Levenshtein

from rookworld_trl.chess.engine import EnginePool
from rookworld_trl.chess.environment import env_truth, legal_best_move, parse_board, playable_position
from rookworld_trl.chess.formats import (
    EnvSample,
    parse_env_completion,
    parse_policy_prompt,
    task_of,
)
from rookworld_trl.chess.tactics import KINDS, solves
from rookworld_trl.grpo.rewards.policy import (
    PENALTY,
    POLICY_COMPONENTS,
    PolicyGrader,
    check_shaping,
    label_analysis,
    shape,
)
from rookworld_trl.grpo.rewards.watch import watch

logger = logging.getLogger(__name__)

FEN_CLOSE = 0.9  # env check: FEN similarity of one or two wrong squares

ENV_COMPONENTS = (
    "parsed", "fen_exact", "fen_valid", "fen_similarity", "placement", "side", "castling", "en_passant", "clocks",
    "reward_value", "terminated", "truncated",
)  # fmt: skip
INVALID_STATE_CAP = 0.4  # an A: next state that is no valid position scores at most "some checks"


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
        what = "no valid chess position" + (" or a finished game" if prefix == "policy" else "")
        logger.warning(
            f"{prefix} reward: {n} prompt(s) in this batch are {what}; they get no reward (None) and are "
            f"counted as {prefix}/invalid_prompts. Check the data with `rookworld data audit`."
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
            if task_of(prompts[i], task and task[i]) != "A":
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

    env_reward.shaping = shaping  # what RookWorldGRPOTrainer compares with the config's reward_shaping
    return env_reward


env_reward = make_env_reward()  # a plain function (graduated), as in trl.rewards
env_reward.ready = True  # RookWorldGRPOTrainer rebuilds it with the config's reward_shaping


# ------------------------------------------------------------------------------------- policy (P:)


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
        kind: list[str] | None = None,
        best: list[str] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **kwargs,
    ) -> list[float | None]:
        """P: reward of each completion, None for A: samples. The position is read from the prompt.

        Columns `moves`/`evals`/`limit` (optional): a label whose `limit` equals the pool's limit key
        stands in for the engine's analysis (a cache); any other label is ignored.
        """
        ours = [i for i in range(len(prompts)) if task_of(prompts[i], task and task[i]) == "P"]
        valid = {i: playable_position(prompts[i]) for i in ours}
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
        if log_metric is not None and mine:  # the reward-hacking watch (grpo/rewards/watch.py)
            for name, value in watch(fens, [completions[i] for i in mine]).items():
                log_metric(f"watch/{name}", value)
        if log_metric is not None and kind is not None and best is not None:  # tactics rows (grpo/tactics.py)
            for name, value in tactics_solved(fens, [completions[i] for i in mine], kind, best, mine).items():
                log_metric(name, value)
        return rewards

    policy_reward.grader = grader  # its memo and pool: field credit re-grades through it (policy_grader)
    policy_reward.shaping = shaping
    return policy_reward


def _ready_policy_reward() -> Callable:
    """`policy_reward`, ready to pass to TRL: make_policy_reward() (graduated, Stockfish at depth 8, one worker),
    built on its first call so that importing this module needs no Stockfish. RookWorldGRPOTrainer builds it
    anew with the config's reward_shaping; for another engine or shaping elsewhere, call make_policy_reward."""
    built: list[Callable] = []

    def policy_reward(prompts: list[str], completions: list[str], **kwargs) -> list[float | None]:
        """P: reward of each completion (None for A: samples), graded by Stockfish (make_policy_reward)."""
        if not built:
            built.append(make_policy_reward())
        return built[0](prompts, completions, **kwargs)

    policy_reward.ready, policy_reward.shaping = True, "graduated"
    return policy_reward


policy_reward = _ready_policy_reward()


def tactics_solved(fens, completions, kind, best, rows) -> dict[str, float]:
    """{"tactics/<kind>_solved": the share of this batch's samples on tactics rows of that kind whose B: solves
    it (chess/tactics.solves)}: how often sampling finds the deciding move. `rows`: each sample's batch row.

    >>> fen = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"
    >>> tactics_solved([fen, fen], [" a1a8 E: 999.99 B: a1a8", " h2h3 E: 0.4 B: h2h3"], ["mate1"], ["a1a8"], [0, 0])
    {'tactics/mate1_solved': 0.5}
    """
    solved: dict[str, list[float]] = {}
    for fen, completion, i in zip(fens, completions, rows, strict=True):
        if kind[i] in KINDS:
            board = parse_board(fen)
            right = solves(board, kind[i], legal_best_move(board, completion), best[i])
            solved.setdefault(kind[i], []).append(float(right))
    return {f"tactics/{k}_solved": sum(v) / len(v) for k, v in solved.items()}


def policy_grader(reward_funcs: Sequence[Callable]) -> PolicyGrader | None:
    """The PolicyGrader behind the policy reward among `reward_funcs` (None: no policy reward): field credit
    (grpo/credit.py) grades each P: answer's parts with it, from its memo, as the reward did."""
    return next(
        (f.grader for f in reward_funcs if isinstance(getattr(f, "grader", None), PolicyGrader)), None
    )


def policy_components(grader: PolicyGrader, prompts: Sequence[str], completions: Sequence[str]) -> list:
    """The policy reward's components of each sample (None: an A: sample or a P: prompt with no position)."""
    out: list[dict | None] = [None] * len(prompts)
    mine = [i for i, p in enumerate(prompts) if task_of(p) == "P" and playable_position(p) is not None]
    scored = grader.score([parse_policy_prompt(prompts[i]) for i in mine], [completions[i] for i in mine])
    for i, (_, parts) in zip(mine, scored, strict=True):
        out[i] = parts
    return out


# ------------------------------------------------------------------------------------------ plumbing


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
