"""Render and parse the RookWorld `P:` (policy) and `A:` (environment) lines of docs/FORMATS.md, in one place:

    P: <FEN ljust 90>M: <moves ljust 30>E: <evals ljust 40>B: <best>
    A: <FEN>+<move>+<history>+<new FEN>+<reward>+<terminated>+<truncated>

Rendering is exact. `parse_line` is strict (data files: raises `FormatError`); `parse_policy_completion` /
`parse_env_completion` are tolerant (model output) and never raise: what they read, and the fields that failed.

    python -c "from rookworld_trl.chess.formats import *; print(split_prompt_completion(render_policy(
        'rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1', ['e2e4'], [0.3], 'e2e4')))"
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import chess

EOS = "<|endoftext|>"
FEN_WIDTH, MOVES_WIDTH, EVALS_WIDTH = 90, 30, 40
HISTORY_PLIES = 10  # A: history keeps the last 10 half-moves, the move itself included
POLICY_PREFIX, ENV_PREFIX = "P: ", "A: "
UCI_RE = re.compile(r"^[a-h][1-8][a-h][1-8][qrbn]?$")

# A: reward values (docs/FORMATS.md): legal move and the game goes on, a win by mate, a draw, an illegal move.
REWARD_LEGAL, REWARD_WIN, REWARD_DRAW, REWARD_ILLEGAL = 0.001, 1.0, 0.5, -1.0


class FormatError(ValueError):
    """A line that is not a valid P: or A: sample; the message is "<task>: <field>: <problem>"."""

    @property
    def field(self) -> str:
        """The "<task>: <field>" part of the message (e.g. "P: evals")."""
        parts = str(self).split(": ")
        return ": ".join(parts[:2]) if parts[0] in ("P", "A") and len(parts) > 2 else parts[0]

    @property
    def reason(self) -> str:
        """The message without the quoted text it cites (FENs, moves): lines count together by reason, e.g.
        "A: fen: invalid position …: no black king"."""
        marker = re.compile(r"'[PAMEB]:'")  # field markers such as 'M:' stay
        return re.sub(r"'[^']*'", lambda m: m[0] if marker.fullmatch(m[0]) else "…", str(self))


@dataclass(frozen=True)
class PolicySample:
    """One P: sample. `moves` and `evals` are in the order they are written (shuffled on purpose)."""

    fen: str
    moves: tuple[str, ...]
    evals: tuple[float, ...]
    best: str


@dataclass(frozen=True)
class EnvSample:
    """One A: sample: `history` are the last up-to-10 half-moves, oldest first, `move` included."""

    fen: str
    move: str
    history: tuple[str, ...]
    new_fen: str
    reward: float
    terminated: bool
    truncated: bool


# ---------------------------------------------------------------------------------------------- render


def format_number(x: float) -> str:
    """Numbers are written as Python `str(float)`: 0.3, -1.25, 0.0, 999.97, 0.001."""
    return str(float(x))


def position_key(fen: str) -> str:
    """The position part of a FEN (board, side, castling, en passant): the same position, any clocks."""
    return " ".join(fen.split()[:4])


def policy_prompt(fen: str, width: int = FEN_WIDTH) -> str:
    """The P: prompt ends with `M:` so the completion starts with a space (token-boundary safe). `width`: the
    FEN field's width, a property of the data (90 as the generator writes it, 89 in some published files)."""
    return POLICY_PREFIX + fen.ljust(width) + "M:"


def prompt_fen_width(prompt: str) -> int | None:
    """The FEN field width a P: prompt was written with; None when its FEN fills the field (no padding)."""
    body = prompt[len(POLICY_PREFIX) : -len("M:")]
    return len(body) if prompt.startswith(POLICY_PREFIX) and body.endswith(" ") else None


def fen_widths(prompts: Iterable[str]) -> Counter:
    """How many P: prompts among `prompts` are padded to each FEN field width."""
    return Counter(w for prompt in prompts if (w := prompt_fen_width(prompt)))


def fen_width_of(prompts: Iterable[str]) -> int | None:
    """The most common FEN width of the padded P: prompts among `prompts` (None: none is padded)."""
    counts = fen_widths(prompts)
    return counts.most_common(1)[0][0] if counts else None


def policy_completion(moves: Sequence[str], evals: Sequence[float], best: str) -> str:
    """Everything after `M:`; the widths are those of the full line (docs/FORMATS.md)."""
    evals_text = " ".join(format_number(e) for e in evals)
    return " " + " ".join(moves).ljust(MOVES_WIDTH) + "E: " + evals_text.ljust(EVALS_WIDTH) + "B: " + best


def render_policy(
    fen: str, moves: Sequence[str], evals: Sequence[float], best: str, rng: random.Random | None = None
) -> str:
    """The full P: line. With `rng`, moves and their evals are shuffled together (docs/FORMATS.md)."""
    if len(moves) != len(evals):
        raise FormatError(f"P: evals: {len(moves)} moves but {len(evals)} evals for {fen}")
    if best not in moves:
        raise FormatError(f"P: best: best move {best} is not among the moves {list(moves)} for {fen}")
    pairs = list(zip(moves, evals, strict=True))
    if rng is not None:
        rng.shuffle(pairs)
    return policy_prompt(fen) + policy_completion([m for m, _ in pairs], [e for _, e in pairs], best)


def env_prompt(fen: str, move: str, history: Sequence[str]) -> str:
    return ENV_PREFIX + fen + "+" + move + "+" + " ".join(history) + "+"


def env_completion(new_fen: str, reward: float, terminated: bool, truncated: bool) -> str:
    return f"{new_fen}+{format_number(reward)}+{int(terminated)}+{int(truncated)}"


def render_env(sample: EnvSample) -> str:
    """The full A: line."""
    return env_prompt(sample.fen, sample.move, sample.history) + env_completion(
        sample.new_fen, sample.reward, sample.terminated, sample.truncated
    )


def render(sample: PolicySample | EnvSample) -> str:
    """The full line of either sample (P: moves in the order stored)."""
    if isinstance(sample, EnvSample):
        return render_env(sample)
    return render_policy(sample.fen, sample.moves, sample.evals, sample.best)


# ----------------------------------------------------------------------------------- strict line parse


def task_of(text: str, column: str | None = None) -> str:
    """'P' or 'A' for a line or prompt (A: lines may lack their prefix in the published data); a dataset's
    `task` column, when given as 'P' or 'A', is taken as it is."""
    if column in ("P", "A"):
        return column
    return "P" if text.lstrip().startswith("P:") else "A"


def normalize_line(line: str) -> str:
    """Strip whitespace and EOS; add the `A: ` prefix the published data sometimes omits."""
    line = strip_eos(line).strip("\r\n")
    if not line.startswith(("P:", "A:")) and line.count("+") >= 6:
        line = ENV_PREFIX + line
    return line


def split_prompt_completion(line: str) -> tuple[str, str]:
    """Split a full line at the documented point: after `M:` (P:) or after the third `+` (A:)."""
    line = normalize_line(line)
    if line.startswith("P:"):
        cut = line.find("M:")
        if cut < 0:
            raise FormatError("P: moves: the line has no 'M:' field")
        return line[: cut + 2], line[cut + 2 :]
    if line.startswith("A:"):
        parts = line.split("+")
        if len(parts) < 4:
            raise FormatError("A: fields: fewer than 3 '+' separators")
        prompt = "+".join(parts[:3]) + "+"
        return prompt, line[len(prompt) :]
    raise FormatError("line: starts with neither 'P:' nor 'A:' and is not an A: line without prefix")


# FENs python-chess surely reads (its set_fen), checked without building a board: eight rows of pieces and
# digits, one space between fields, canonical castling and en-passant fields; the row sums are checked apart.
PLAIN_FEN_RE = re.compile(
    r"((?:[1-8pnbrqkPNBRQK]{1,8}/){7}[1-8pnbrqkPNBRQK]{1,8}) [wb] (?:-|KQ?k?q?|Qk?q?|kq?|q) (?:-|[a-h][1-8]) [0-9]+ [0-9]+"
)
TWO_DIGITS_RE = re.compile(r"[1-8][1-8]")
EMPTY_SQUARES = str.maketrans({str(n): "1" * n for n in range(2, 9)})  # a row's digits as that many squares


def plain_fen(fen: str) -> bool:
    """True only for a FEN that python-chess reads without error (a subset of those: the rest go to it). A board
    is the load's cost: this check is ~10x cheaper than building one."""
    match = PLAIN_FEN_RE.fullmatch(fen)
    if match is None or TWO_DIGITS_RE.search(match[1]):
        return False
    return all(len(row) == 8 for row in match[1].translate(EMPTY_SQUARES).split("/"))


def check_fen_syntax(fen: str, where: str) -> None:
    """FormatError unless python-chess can read the FEN (whether the position is legal is the audit's job)."""
    if plain_fen(fen):
        return
    try:
        chess.Board(fen)
    except ValueError as e:
        raise FormatError(f"{where}: {e}") from None


def parse_line(line: str) -> PolicySample | EnvSample:
    """Strictly parse a full P: or A: line; raise FormatError naming the failing field."""
    prompt, completion = split_prompt_completion(line)
    if prompt.startswith("P:"):
        fen = parse_policy_prompt(prompt)
        check_fen_syntax(fen, "P: fen")
        parsed = parse_policy_completion(completion)
        if parsed.errors:
            field_name, why = next(iter(parsed.errors.items()))
            raise FormatError(f"P: {field_name}: {why}")
        if len(parsed.moves) != len(parsed.evals):
            raise FormatError(f"P: evals: {len(parsed.moves)} moves but {len(parsed.evals)} evals")
        return PolicySample(fen, tuple(parsed.moves), tuple(parsed.evals), parsed.best)
    fen, move, history = parse_env_prompt(prompt)
    check_fen_syntax(fen, "A: fen")
    parsed = parse_env_completion(completion)
    if parsed.errors:
        field_name, why = next(iter(parsed.errors.items()))
        raise FormatError(f"A: {field_name}: {why}")
    check_fen_syntax(parsed.new_fen, "A: new_fen")
    return EnvSample(fen, move, history, parsed.new_fen, parsed.reward, parsed.terminated, parsed.truncated)


def parse_policy_prompt(prompt: str) -> str:
    """The FEN of a P: prompt (`P: <FEN padded>M:`)."""
    body = prompt.strip()
    if not body.startswith("P:"):
        raise FormatError("P: prompt: does not start with 'P:'")
    fen = body[2:].removesuffix("M:").strip()
    if len(fen.split()) != 6:
        raise FormatError(f"P: fen: expected 6 FEN fields, got {fen!r}")
    return fen


def parse_env_prompt(prompt: str) -> tuple[str, str, tuple[str, ...]]:
    """(fen, move, history) of an A: prompt (`A: FEN+move+history+`); the prefix may be missing."""
    body = prompt.strip()
    body = body[2:].lstrip() if body.startswith("A:") else body
    parts = body.split("+")
    if len(parts) < 3:
        raise FormatError("A: prompt: needs 'FEN+move+history+'")
    fen, move, history = parts[0].strip(), parts[1].strip(), tuple(parts[2].split())
    if len(fen.split()) != 6:
        raise FormatError(f"A: fen: expected 6 FEN fields, got {fen!r}")
    if not move:
        raise FormatError("A: move: empty")
    return fen, move, history


# ------------------------------------------------------------------------------ tolerant model parsing


def strip_eos(text: str) -> str:
    """Cut at the first end-of-text token (a model may go on after it)."""
    return text.split(EOS, 1)[0]


@dataclass
class Parsed:
    errors: dict[str, str] = field(default_factory=dict)  # field -> why it failed

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class ParsedPolicy(Parsed):
    """What could be read from a P: completion. A field that failed is empty/None and named in `errors`."""

    moves: list[str] = field(default_factory=list)
    evals: list[float] = field(default_factory=list)
    best: str | None = None
    exact: bool = False  # laid out exactly as the renderer writes what it says: widths, spaces, numbers


@dataclass
class ParsedEnv(Parsed):
    """What could be read from an A: completion. A field that failed is None and named in `errors`."""

    new_fen: str | None = None
    reward: float | None = None
    terminated: bool | None = None
    truncated: bool | None = None


def _section(text: str, start: str, end: str | None) -> str | None:
    """The text between marker `start` and marker `end` (or the end of text); None if `start` is missing."""
    i = text.find(start)
    if i < 0:
        return None
    rest = text[i + len(start) :]
    if end is not None and end in rest:
        rest = rest[: rest.find(end)]
    return rest


def parse_policy_completion(text: str) -> ParsedPolicy:
    """Read moves, evals and best move from a P: completion (or a full P: line). Never raises.

    >>> p = parse_policy_completion(" e2e4 d2d4  E: 0.3 0.25   B: e2e4<|endoftext|>")
    >>> p.moves, p.evals, p.best, p.ok
    (['e2e4', 'd2d4'], [0.3, 0.25], 'e2e4', True)
    """
    out = ParsedPolicy()
    text = strip_eos(str(text))
    text = "M:" + text if "M:" not in text else text
    moves = (_section(text, "M:", "E:") or "").split()
    if not moves:
        out.errors["moves"] = "no moves"
    elif bad := [m for m in moves if not UCI_RE.match(m)]:
        out.errors["moves"] = f"not UCI: {bad[0][:12]!r}"
    else:
        out.moves = moves
    evals = _section(text, "E:", "B:")
    if evals is None:
        out.errors["evals"] = "missing 'E:'"
    else:
        try:
            values = [float(e) for e in evals.split()]
            if not values or not all(math.isfinite(v) for v in values):
                raise ValueError
            out.evals = values
        except ValueError:
            out.errors["evals"] = "not finite numbers"
    best = _section(text, "B:", None)
    best_tokens = best.split() if best is not None else []
    if not best_tokens:
        out.errors["best"] = "missing 'B:'" if best is None else "empty"
    elif not UCI_RE.match(best_tokens[0]):
        out.errors["best"] = f"not UCI: {best_tokens[0][:12]!r}"
    else:
        out.best = best_tokens[0]
    # the fixed widths are part of the format (docs/FORMATS.md): compare with the renderer's layout
    if out.ok:
        out.exact = text.split("M:", 1)[1] == policy_completion(out.moves, out.evals, out.best)
    return out


def parse_env_completion(text: str) -> ParsedEnv:
    """Read new FEN, reward and flags from an A: completion (`FEN+reward+term+trunc`). Never raises.

    >>> parse_env_completion("8/8/8/8/8/8/8/K6k b - - 1 1+0.001+0+0<|endoftext|>").ok
    True
    """
    out = ParsedEnv()
    parts = [p.strip() for p in strip_eos(str(text)).split("+")]
    if len(parts) < 4:
        out.errors["fields"] = f"expected 4 '+'-separated fields, got {len(parts)}"
    while len(parts) < 4:
        parts.append("")
    fen, reward, terminated, truncated = parts[:4]
    if len(fen.split()) == 6:
        out.new_fen = " ".join(fen.split())
    else:
        out.errors["new_fen"] = "not a 6-field FEN"
    try:
        out.reward = float(reward)
        if not math.isfinite(out.reward):
            raise ValueError
    except ValueError:
        out.reward = None
        out.errors["reward"] = f"not a number: {reward[:12]!r}"
    for name, value in (("terminated", terminated), ("truncated", truncated)):
        if value in ("0", "1"):
            setattr(out, name, value == "1")
        else:
            out.errors[name] = f"not 0/1: {value[:12]!r}"
    return out
