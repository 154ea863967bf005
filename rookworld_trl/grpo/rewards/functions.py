"""Verifiable chess rewards for GRPO on TRL: the A: (environment) reward and the P: (policy) reward.

Both follow TRL's reward-function convention `(prompts, completions, **kwargs) -> list[float | None]`:
a sample of the other task gets None (TRL skips it), dataset columns arrive as keyword arguments, and
every component is reported through TRL's `log_metric` (batch means, as `env/<name>` and `policy/<name>`)
and `log_extra` (one value per sample in the completions table) when the trainer passes them.

- `env_reward`: the truth comes from the prompt alone with python-chess.
- `policy_reward` (`make_policy_reward(pool)`): graded against Stockfish; a dataset label counts only as a cache.

Scale (docs/FORMATS.md): -0.3 unparseable, else a shaping of the checks and quality in [0.2, 1.0]
(grpo/rewards/policy.py `shape`); the true completion scores exactly 1.0 under every shaping.

    python -c "from rookworld_trl.grpo.rewards.functions import score_env; print(score_env(
        'A: rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1+e2e4+e2e4+',
        'rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0'))"
    python scripts/bench/bench_rewards.py     # throughput figures

Your own reward function is named by its dotted path in `reward_funcs` and checked as TRL will call it
(`f(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns)`): UserError, one line:

    from rookworld_trl.grpo.rewards.functions import import_reward
    func = import_reward("examples.my_reward.b_gives_check")
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
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
from rookworld_trl.common.errors import UserError, did_you_mean
from rookworld_trl.grpo.rewards.policy import (
    PENALTY,
    POLICY_COMPONENTS,
    PolicyGrader,
    check_shaping,
    label_analysis,
    shape,
    watch,
)

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

    A malformed prompt raises (env_reward turns that into None); a malformed completion never does. A next
    state that is no valid position (a missing king, nine pawns) scores at most INVALID_STATE_CAP.

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
    try:  # a valid position (python-chess reads it, a legal one)
        valid = bool(parse_board(parsed.new_fen).fen())
    except ValueError:
        valid = False
    components = {
        "parsed": 1.0,
        "fen_exact": float(parsed.new_fen == truth.new_fen),
        "fen_valid": float(valid),
    }
    components |= {"fen_similarity": fen_similarity, **{k: float(v) for k, v in (fields | flags).items()}}
    reward = shape(checks, quality, shaping)
    return (reward if valid else min(reward, INVALID_STATE_CAP)), components


def count_invalid_prompts(prefix: str, n: int, of: int, log_metric) -> None:
    """Log `<prefix>/invalid_prompts` (of the task's `of` prompts); warn once per process."""
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
    """The A: reward function for TRL; `engine` is unused (it keeps the factories of REWARD_FUNCS alike)."""
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
        rewards: list[float | None] = [None] * len(prompts)
        components: list[dict | None] = [None] * len(prompts)
        invalid = 0
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            if task_of(prompt, task and task[i]) != "A":
                continue
            if prompt not in truths:  # None: no valid position
                truths[prompt] = None
                with contextlib.suppress(ValueError):
                    truths[prompt] = env_truth(prompt)
            if truths[prompt] is None:  # no valid position: nothing to judge against
                invalid += 1
                continue
            rewards[i], components[i] = score_env(prompt, completion, shaping, truths[prompt])
        log_components("env", ENV_COMPONENTS, components, log_metric, log_extra)
        count_invalid_prompts("env", invalid, sum(c is not None for c in components) + invalid, log_metric)
        return rewards

    env_reward.shaping = shaping  # what RookWorldGRPOTrainer compares with the config's reward_shaping
    return env_reward


env_reward = make_env_reward()  # a plain function (graduated), as in trl.rewards
env_reward.ready = True  # RookWorldGRPOTrainer rebuilds it with the config's reward_shaping


# ------------------------------------------------------------------------------------- policy (P:)


def make_policy_reward(*, engine: EnginePool | None = None, shaping: str = "graduated") -> Callable:
    """The P: reward function for TRL, graded by `engine` (None: a default EnginePool(), started on first use)."""
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
        if log_metric is not None and mine:  # the reward-hacking watch (grpo/rewards/policy.py)
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
    """`policy_reward`, ready to pass to TRL: make_policy_reward(), built on its first call (importing needs no
    Stockfish)."""
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
    """{"tactics/<kind>_solved": the share of samples on tactics rows of that kind whose B: solves it}.
    `rows`: each sample's batch row.

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
    """The PolicyGrader behind the policy reward among `reward_funcs` (None: no policy reward)."""
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
    """Batch means through `log_metric`, per-sample values through `log_extra` (every column: the table aligns)."""
    for name in names:
        values = [c[name] for c in components if c is not None and c[name] is not None]
        if log_metric is not None and values:
            log_metric(f"{prefix}/{name}", sum(values) / len(values))
        if log_extra is not None:
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


# ------------------------------------------------------------------------------- your own reward functions

SIGNATURE = "def NAME(prompts, completions, **kwargs)"  # returns a float (or None) per completion
# what TRL 1.16's GRPOTrainer passes every reward function, besides each dataset column
TRL_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state")


def is_own(name: str) -> bool:
    """Whether a reward_funcs entry is a path ('pkg.mod.func' or 'pkg.mod:func') rather than a registry name."""
    return "." in name or ":" in name


def import_reward(path: str):
    """The function at a dotted path (or 'module:function'), checked as TRL will call it; UserError otherwise."""
    module, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    if "/" in path or os.sep in path or attr == "py" or module.endswith(".py"):  # a file, not a function
        dotted = (path if attr == "py" else module).removesuffix(".py").replace(os.sep, ".").replace("/", ".")
        raise UserError(
            f"reward function {path!r}: name the function by its dotted path, not the file: "
            f"{dotted}.{'FUNCTION' if attr == 'py' else attr}, run from the folder that holds "
            f"{dotted.split('.')[0]}{'/' if '.' in dotted else '.py'} (or add that folder to PYTHONPATH)"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        func = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        top = (e.name or module).split(".")[0]
        raise UserError(
            f"reward function {path!r}: no module named {e.name or module!r} here ({os.getcwd()}) or on "
            f"PYTHONPATH; run from the folder that holds {top}.py (or {top}/), or add that folder to PYTHONPATH"
        ) from None
    except AttributeError:
        raise UserError(
            f"reward function {path!r}: module {module!r} has no {attr!r}; check the name after the last dot"
        ) from None
    except SyntaxError as e:
        where = f"{e.filename}:{e.lineno}" if e.filename else module
        raise UserError(f"reward function {path!r}: {where}: syntax error ({e.msg}); fix that line") from None
    except Exception as e:  # the module raised while importing: its own bug, in one line
        raise UserError(
            f"reward function {path!r}: importing {module!r} raised {type(e).__name__}: {e}; fix the module"
        ) from None
    check_signature(path, func)
    return func


def check_signature(path: str, func) -> None:
    """UserError when TRL could not call `func` with its keywords (TRL_KEYWORDS and the dataset's columns)."""
    if not callable(func):
        raise UserError(
            f"reward function {path!r} is not callable (it is the {type(func).__name__} {func!r}); name a "
            f"function: {SIGNATURE.replace('NAME', path.rpartition('.')[2])}"
        )
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin or C function without a signature: TRL will tell
        return
    # without **kwargs TRL's other keywords (completion_ids, trainer_state, the columns) raise a TypeError; a
    # required positional-only argument cannot be given by keyword at all (other required names may be columns)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if not takes_any or positional:
        shown = f"({', '.join(str(p) for p in params.values())})"
        name = getattr(func, "__name__", path.rpartition(".")[2])
        raise UserError(
            f"reward function {path!r} takes {shown}, but TRL calls it with the keywords prompts, completions "
            f"and each dataset column: define it as `{SIGNATURE.replace('NAME', name)}`, returning a float (or "
            "None) per completion (examples/my_reward.py)"
        )


def check_reward_names(names, weights=None, field_credit: bool = False) -> None:
    """UserError unless each reward_funcs entry is a registry name or a function TRL can call; check_reward_counts."""
    names = list(names or [])
    for name in names:
        if is_own(name):
            import_reward(name)
        elif name not in REWARD_FUNCS:
            raise UserError(
                f"reward_funcs: unknown reward function {name!r}{did_you_mean(name, set(REWARD_FUNCS), prefix='')}; "
                f"the built-in ones are {', '.join(REWARD_FUNCS)}, or name your own by its dotted path "
                "(my_module.my_reward; examples/my_reward.py)"
            )
    check_reward_counts(names, weights, field_credit and "policy_reward" not in names)


def check_reward_counts(names, weights=None, credit_without_policy: bool = False) -> None:
    """UserError unless there is one weight per reward function and, for field credit, a policy reward."""
    if weights is not None and len(weights) != len(names):
        raise UserError(
            f"reward_weights has {len(weights)} entries for {len(names)} reward_funcs ({', '.join(names)}): "
            "give one weight per function, in the same order"
        )
    if credit_without_policy:
        raise UserError(
            "field_credit: true needs policy_reward among reward_funcs (it reads its components): add "
            "policy_reward, or set field_credit false"
        )


def name_of(func) -> str:
    """A reward entry's name as TRL logs it (a string as given, a function's __name__)."""
    return func if isinstance(func, str) else getattr(func, "__name__", type(func).__name__)


def resolve_rewards(funcs, shaping: str = "graduated", engine=None, weights=None, field_credit=False) -> list:
    """The reward functions a trainer is given, as TRL will call them: a name or dotted path becomes its
    function, the ready built-ins are built with `shaping` (and `engine`), every function is checked. A built-in
    made with another shaping is a UserError; a hub reward model ('owner/name') or a model is left to TRL."""

    funcs = [funcs] if isinstance(funcs, str) or callable(funcs) else list(funcs)
    out = []
    for func in funcs:
        if isinstance(func, str) and "/" in func and not is_own(func):
            out.append(func)  # TRL loads it as a reward model
        elif isinstance(func, str) and func in REWARD_FUNCS:
            out.append(REWARD_FUNCS[func](engine=engine, shaping=shaping))
        elif isinstance(func, str):
            check_reward_names([func])  # an unknown name: UserError with the built-in ones
            out.append(import_reward(func))
        elif hasattr(func, "forward") and hasattr(func, "config"):
            out.append(func)  # a reward model (PreTrainedModel): TRL calls it with token ids, not keywords
        elif getattr(func, "ready", False):
            out.append(REWARD_FUNCS[func.__name__](engine=engine, shaping=shaping))
        else:
            check_signature(name_of(func), func)
            built = getattr(func, "shaping", None)
            if built is not None and built != shaping and func.__name__ in REWARD_FUNCS:
                raise UserError(
                    f"reward_shaping is {shaping!r} but the {func.__name__} passed in was built with shaping "
                    f"{built!r}, which is what it applies: pass the ready {func.__name__} (it takes "
                    f"reward_shaping), or build it with make_{func.__name__}(shaping={shaping!r})"
                )
            out.append(func)
    check_reward_counts([name_of(f) for f in out], weights, field_credit and policy_grader(out) is None)
    return out
