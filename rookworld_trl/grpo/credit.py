"""Field credit for P: completions: each part of the answer gets the advantage of its own verdict.

GRPO gives every token of a completion the same advantage. A P: answer is ~40 tokens in three fields
(docs/FORMATS.md): the moves after `M:`, the evaluations after `E:` and the best move after `B:`. Here:

    each listed move's tokens   the group-centred advantage of that move's own verdict (legal top-5 / legal /
                                illegal, repeat or past the fifth: rewards/policy.move_verdicts), plus B:'s
                                advantage when B: copies that move: B: is a near-certain copy of a listed move,
                                so the choice it stands for is made where the move was first written
    the rest of M:              the M: field's advantage
    E:                          the evaluations' accuracy
    B:                          B:'s own verdict (legal, engine quality, consistent with the answer's E:)
    B:'s choice (choice_credit) B:'s value minus a uniform pick among the answer's listed moves (or minus the
                                best of them: choice_against), on B: and the move it copies: a baseline inside
                                the answer, so it pays where the group agrees
    every token                 what the other reward functions (yours) give the answer, centred in the group
                                as a field is ("rest"): they count as in TRL's sequence advantage

Every term is in reward units (the shaping's and reward_weights' weights applied) and divided by the group's
reward scale as TRL's `scale_rewards` takes it, so the fields' advantages add up to the sequence advantage. An
unparseable answer and every A: sample keep TRL's sequence advantage. `field_credit: true` switches it on; TRL's
loss takes the resulting (B, T) advantages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rookworld_trl.chess.engine import MULTIPV
from rookworld_trl.grpo import baselines as base
from rookworld_trl.grpo.groups import EPS
from rookworld_trl.grpo.rewards.functions import policy_components, policy_grader
from rookworld_trl.grpo.rewards.policy import (
    B_COMPONENTS,
    LAYOUT_PENALTY,
    PRECISE_WEIGHTS,
    QUALITY_WEIGHTS,
    PolicyGrader,
)

FIELDS = ("M", "E", "B")  # token field index 0, 1, 2 in completion order
SPAN = 0.8  # a parseable answer's reward is 0.2 + 0.8 x quality (rewards/policy.shape)


def field_terms(components: dict | None, shaping: str = "precise") -> dict | None:
    """One P: sample's reward split by where it is decided, in reward units: {"M", "E", "B": field terms, "moves":
    one per written move, "best_slot": the move B: copies (-1: none)}; None for A: or an unparseable answer.

    >>> c = {"parsed": 1.0, "layout": 1.0, "evals": 1.0, "evals_top5": 1.0, "best_legal": 1.0, "best": 1.0, "legal_moves": 1.0,
    ...      "candidates": 1.0, "move_verdicts": [1.0] * 5, "best_slot": 0, "b_field": 1.0,
    ...      "n_expected": 5, "moves_score": 1.0}
    >>> t = field_terms(c)
    >>> round(t["M"] + t["E"] + t["B"], 6), [round(m, 3) for m in t["moves"]]
    (0.8, [0.04, 0.04, 0.04, 0.04, 0.04])
    """
    if components is None or not components["parsed"]:
        return None
    slip = LAYOUT_PENALTY * (1 - components["layout"]) / len(FIELDS)  # the layout costs every field
    verdicts = components["move_verdicts"]
    if shaping == "precise":
        w = {k: SPAN * v for k, v in PRECISE_WEIGHTS.items()}
        moves = [w["M"] * v / components["n_expected"] for v in verdicts]
        m_total = w["M"] * components["moves_score"]
        b_total = w["B"] * components["b_field"]
        e_total = w["E"] * components["evals_top5"]
    else:  # dense (and the other shapings), decisive: M: legal_moves + candidates, E: evals, B: its components
        w = {k: SPAN * 0.1 * v for k, v in QUALITY_WEIGHTS.get(shaping, QUALITY_WEIGHTS["dense"]).items()}
        moves = [(w["legal_moves"] * (v >= 0) + w["candidates"] * (v == 1)) / MULTIPV for v in verdicts]
        m_total = w["legal_moves"] * components["legal_moves"] + w["candidates"] * components["candidates"]
        b_total = sum(w[k] * components[k] for k in B_COMPONENTS if k in w)
        e_total = w["evals"] * components["evals"]
    return {
        "M": m_total - slip,
        "E": e_total - slip,
        "B": b_total - slip,
        "moves": moves,
        "best_slot": components["best_slot"],
        # grpo/rewards/policy.py's b_choice / b_regret in reward units: B: weighs 5 tenths of the dense quality
        "choice": SPAN * b_share(shaping) * components.get("b_choice", 0.0),
        "regret": SPAN * b_share(shaping) * components.get("b_regret", 0.0),
    }


def b_share(shaping: str) -> float:
    """B:'s share of the quality, the scale of B:'s choice term: 0.5 (dense's B: tenths) but under decisive 0.6.

    >>> b_share("dense"), b_share("precise"), b_share("decisive")
    (0.5, 0.5, 0.6)
    """
    weights = QUALITY_WEIGHTS["decisive" if shaping == "decisive" else "dense"]
    return sum(weights.get(k, 0) for k in B_COMPONENTS) / 10


def token_layout(texts: Sequence[str]) -> list[tuple[int, int]]:
    """(field, slot) of each token of one completion, given the tokens' decoded texts: field 0 M, 1 E, 2 B;
    slot: the index of the M: word (move) the token's last character falls in, -1 for a space or another field.

    >>> token_layout([" e2", "e4", " d2d4", " ", "E:", " 0.3", " B", ":", " e2e4", "<eos>"])
    [(0, 0), (0, 0), (0, 1), (0, -1), (1, -1), (1, -1), (2, -1), (2, -1), (2, -1), (2, -1)]
    """
    text = "".join(texts)
    e_at = text.find(" E:") + 1 or len(text)
    b_at = text.find(" B:") + 1 or len(text)
    slot_of, slot, prev_space = [], -1, True
    for ch in text[:e_at]:
        space = ch.isspace()
        slot += int(prev_space and not space)
        slot_of.append(-1 if space else slot)
        prev_space = space
    out, end = [], 0
    for piece in texts:
        end += len(piece)
        last = end - 1
        field = 0 if last < e_at else 1 if last < b_at else 2
        out.append((field, slot_of[last] if field == 0 and last >= 0 else -1))
    return out


def row_advantages(terms: Sequence[dict | None], scale: Sequence[float], num_generations: int) -> list:
    """Per row {"M", "E", "B": field advantages, "moves": one per written move} (None: the row keeps its
    sequence advantage): each term minus its group's mean (a move's: over the group's written moves), over the
    row's `scale`.

    >>> row = {"M": 0.1, "E": 0.0, "B": 0.4, "moves": [0.04, -0.04], "best_slot": 0}
    >>> low = {"M": 0.0, "E": 0.0, "B": 0.0, "moves": [-0.04], "best_slot": -1}
    >>> a = row_advantages([row, low], [0.2, 0.2], 2)
    >>> [round(m, 2) for m in a[0]["moves"]], round(a[1]["B"], 2)  # B:'s advantage joins the move it copies
    ([1.27, -0.13], -1.0)
    """
    out: list[dict | None] = [None] * len(terms)
    for start in range(0, len(terms), num_generations):
        ours = [i for i in range(start, min(start + num_generations, len(terms))) if terms[i] is not None]
        if len(ours) < 2:  # nothing to compare a field against: the sequence advantage stands
            continue
        parts = (*FIELDS, "rest") if "rest" in terms[ours[0]] else FIELDS  # rest: with_rest's
        means = {f: sum(terms[i][f] for i in ours) / len(ours) for f in parts}
        written = [m for i in ours for m in terms[i]["moves"]]
        move_mean = sum(written) / max(1, len(written))
        for i in ours:
            s = float(scale[i]) + EPS
            adv = {f: (terms[i][f] - means[f]) / s for f in parts}
            adv["moves"] = [(m - move_mean) / s for m in terms[i]["moves"]]
            if 0 <= terms[i]["best_slot"] < len(adv["moves"]):
                adv["moves"][terms[i]["best_slot"]] += adv["B"]
            out[i] = adv
    return out


def add_choice(
    rows: list, terms: Sequence[dict | None], scale: Sequence[float], coef: float, against: str = "mean"
) -> list:
    """Adds coef x B:'s choice term over the row's scale to B:'s advantage and to the move B: copies, in place:
    against the mean of the listed moves ("choice") or against the best of them ("regret", `against="best"`).

    >>> rows = [{"B": 0.5, "moves": [0.0, 0.0]}, None]
    >>> terms = [{"choice": 0.1, "best_slot": 1}, None]
    >>> [round(m, 3) for m in add_choice(rows, terms, [0.2, 0.2], 1.0)[0]["moves"]]
    [0.0, 0.5]
    """
    if not coef:
        return rows
    for row, term, s in zip(rows, terms, scale, strict=True):
        if row is None:
            continue
        bonus = coef * term["choice" if against == "mean" else "regret"] / (float(s) + EPS)
        row["B"] += bonus
        if 0 <= term["best_slot"] < len(row["moves"]):
            row["moves"][term["best_slot"]] += bonus
    return rows


def spread(
    rows: Sequence[dict | None], layouts: Sequence[Sequence[tuple[int, int]]], sequence: torch.Tensor
) -> torch.Tensor:
    """(B, T) advantages: each token its move's or its field's; rows without field advantages keep `sequence`."""
    out = sequence.unsqueeze(1).expand(-1, len(layouts[0]) if layouts else 0).clone()
    for i, adv in enumerate(rows):
        if adv is None:
            continue
        moves, rest = adv["moves"], adv.get("rest", 0.0)  # the other rewards' advantage: every token's
        values = [
            rest + (moves[slot] if field == 0 and 0 <= slot < len(moves) else adv[FIELDS[field]])
            for field, slot in layouts[i]
        ]
        out[i] = torch.tensor(values, dtype=out.dtype, device=out.device)
    return out


def answer_components(
    tokenizer, reward_funcs, completion_ids: torch.Tensor, prompts: list
) -> list[dict | None]:
    """Each P: answer's policy-reward components (None: A:), from the grader's memo (no new engine call)."""
    texts = tokenizer.batch_decode(completion_ids.tolist(), skip_special_tokens=False)
    answers = [t.split(tokenizer.eos_token, 1)[0] for t in texts]
    return policy_components(policy_grader(reward_funcs), prompts, answers)


def field_parts(
    tokenizer, reward_funcs, reward_weights, shaping: str, completion_ids, prompts
) -> tuple[list, list]:
    """This process's rows: each P: answer's field terms (times the policy reward's weight) and token layout."""
    index = policy_index(reward_funcs)
    weight = 1.0 if index is None else float(reward_weights[index])
    components = answer_components(tokenizer, reward_funcs, completion_ids, prompts)
    terms = [weighted(field_terms(c, shaping), weight) for c in components]
    pieces = tokenizer.batch_decode(completion_ids.reshape(-1, 1).tolist())
    width = completion_ids.shape[1]
    layouts = [token_layout(pieces[i : i + width]) for i in range(0, len(pieces), width)]
    return terms, layouts


def policy_index(reward_funcs) -> int | None:
    """Where the policy reward is among reward_funcs (None: not there)."""
    graders = [isinstance(getattr(f, "grader", None), PolicyGrader) for f in reward_funcs]
    return graders.index(True) if any(graders) else None


def other_rewards(
    reward_funcs, reward_weights, per_function: torch.Tensor, rewards: torch.Tensor
) -> list[float]:
    """Every process's rows: what the reward functions other than the policy reward give the row (else 0.0)."""
    index = policy_index(reward_funcs)
    if index is None:
        return [0.0] * len(rewards)
    policy = per_function[:, index].to(rewards.device).nan_to_num(0.0) * float(reward_weights[index])
    return (rewards - policy).nan_to_num(0.0).tolist()


def with_rest(terms: list, rest: list[float]) -> list:
    """Each row's terms with "rest", the other reward functions' share of its reward, centred as a field and
    given to every token; left out where it is 0 everywhere.

    >>> with_rest([{"M": 0.1}, None], [0.5, 0.0])
    [{'M': 0.1, 'rest': 0.5}, None]
    """
    if not any(rest[i] for i, t in enumerate(terms) if t is not None):
        return terms
    return [None if t is None else t | {"rest": r} for t, r in zip(terms, rest, strict=True)]


def weighted(terms: dict | None, weight: float) -> dict | None:
    """One answer's field terms (field_terms) times `weight`.

    >>> weighted({"M": 0.1, "E": 0.2, "B": 0.3, "moves": [0.1], "best_slot": 0, "choice": 0.5, "regret": 0.0}, 2.0)["moves"]
    [0.2]
    """
    if terms is None or weight == 1.0:
        return terms
    scaled = {k: weight * terms[k] for k in (*FIELDS, "choice", "regret")}
    return terms | scaled | {"moves": [weight * m for m in terms["moves"]]}


def field_advantages(
    all_terms: list, layouts: list, sequence: torch.Tensor, scale: torch.Tensor, n: int, mine: slice,
    choice_credit: float = 0.0, baseline=None, choice_against: str = "mean",
) -> torch.Tensor:  # fmt: skip
    """(B, T) advantages of this process's rows (`mine` among every process's): each listed move and each P: field
    gets its own verdict's advantage against its group, or against the ema/adaptive `baseline` of the sequence.
    `all_terms`, `scale`: every process's rows'; `layouts`, `sequence` ((B,), kept by rows without terms): ours."""

    scales = scale.tolist()
    rows = row_advantages(all_terms, scales, n)  # a group may span processes, as in TRL
    if baseline is not None:
        rows = base.recentre_fields(rows, all_terms, baseline.weights, baseline.scale, n)
    rows = add_choice(rows, all_terms, scales, choice_credit, choice_against)
    return spread(rows[mine], layouts, sequence)
