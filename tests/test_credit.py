"""Field credit: each listed move and each field of a P: answer gets the advantage of its own verdict, B:'s
also reaches the listed move it copies. Real tokenizer, real Stockfish grading."""

import chess
import pytest
import torch

from rookworld_trl.chess.engine import EngineLimit, EnginePool, find_stockfish
from rookworld_trl.chess.formats import policy_completion
from rookworld_trl.grpo.credit import (
    FIELDS,
    add_choice,
    field_terms,
    row_advantages,
    spread,
    token_layout,
    with_rest,
)
from rookworld_trl.grpo.rewards.policy import PolicyGrader
from rookworld_trl.model.loading import load_model_and_tokenizer

QUEEN_UP = "rnb1kbnr/pppp1ppp/8/4p3/4P2q/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"


def test_unparseable_and_a_rows_keep_the_sequence_advantage():
    assert field_terms(None) is None and field_terms({"parsed": 0.0}) is None
    rows = row_advantages([None, None], [1.0, 1.0], 2)
    layouts = [[(0, 0), (1, -1)], [(0, 0), (2, -1)]]
    assert spread(rows, layouts, torch.tensor([0.5, -0.5])).tolist() == [[0.5, 0.5], [-0.5, -0.5]]


def test_other_rewards_reach_every_token_of_the_answer():
    """A reward of yours on P: answers ("rest", credit.with_rest): centred in the group and over the row's scale
    on every token of the answer, beside its fields' advantages; all-zero rest leaves the terms as they were."""
    terms = [{"M": 0.1, "E": 0.0, "B": 0.2, "moves": [0.1], "best_slot": -1} for _ in range(2)]
    assert with_rest(terms, [0.0, 0.0]) is terms
    layouts = [[(0, 0), (1, -1), (2, -1)]] * 2
    plain = spread(row_advantages(terms, [0.5, 0.5], 2), layouts, torch.zeros(2))
    mine = spread(row_advantages(with_rest(terms, [1.0, 0.0]), [0.5, 0.5], 2), layouts, torch.zeros(2))
    assert torch.allclose(mine - plain, torch.tensor([[1.0] * 3, [-1.0] * 3]), atol=1e-3)


def test_field_terms_add_up_to_the_reward_above_its_floor():
    """Under precise the terms are the reward's parts: their sum is reward - 0.2 for a laid-out answer."""
    c = {"parsed": 1.0, "layout": 1.0, "evals": 0.4, "evals_top5": 0.5, "best_legal": 1.0, "best": 0.5, "legal_moves": 0.6,
         "candidates": 0.4, "move_verdicts": [1.0, 0.0, -1.0, 1.0], "best_slot": 1, "b_field": 0.6,
         "n_expected": 5, "moves_score": 0.2}  # fmt: skip
    t = field_terms(c)
    reward = 0.2 + 0.8 * (0.25 * 1 / 5 + 0.15 * 0.5 + 0.6 * 0.6)
    assert sum(t[f] for f in FIELDS) == pytest.approx(reward - 0.2)
    assert sum(t["moves"]) == pytest.approx(t["M"])


@pytest.mark.skipif(find_stockfish() is None, reason="needs Stockfish")
def test_credit_lands_on_the_move_and_the_choice_that_decide():
    """Two answers alike but for one listed move (legal vs illegal) and B: (which copies it): the changed move's
    tokens carry the difference of its verdict and of B:'s; moves listed alike in both get nothing."""
    _, tokenizer = load_model_and_tokenizer("rookworld_trl/assets/model")
    with EnginePool(1, EngineLimit(depth=8), multipv=5) as pool:
        analysis = pool.analyse(QUEEN_UP)
        top, evals = [m.move for m in analysis[:5]], [m.cp / 100 for m in analysis[:5]]
        assert chess.Move.from_uci("a1a5") not in chess.Board(QUEEN_UP).legal_moves
        answers = [
            policy_completion(top, [9.0, *evals[1:]], top[0]),
            policy_completion(["a1a5", *top[1:]], [9.0, *evals[1:]], "a1a5"),
        ]
        components = [parts for _, parts in PolicyGrader(pool, "precise").score([QUEEN_UP] * 2, answers)]
    ids = [tokenizer(a + tokenizer.eos_token, add_special_tokens=False)["input_ids"] for a in answers]
    assert len(ids[0]) == len(ids[1])
    layouts = [token_layout(tokenizer.batch_decode([[t] for t in row])) for row in ids]
    rows = row_advantages([field_terms(c) for c in components], [0.3, 0.3], 2)
    adv = spread(rows, layouts, torch.zeros(2))
    first = torch.tensor([slot == 0 for _, slot in layouts[0]])
    others = torch.tensor([field == 0 and slot > 0 for field, slot in layouts[0]])
    b_tokens = torch.tensor([field == 2 for field, _ in layouts[0]])
    assert (adv[0, first] > adv[0, others].max() + 0.5).all() and (
        adv[1, first] < adv[1, others].min() - 0.5
    ).all()
    assert (adv[0, b_tokens] > 0.5).all() and (adv[1, b_tokens] < -0.5).all()
    assert torch.allclose(adv[0, others], adv[1, others])  # the same verdicts, centred on the group's moves
    text = tokenizer.decode([t for t, (field, _) in zip(ids[0], layouts[0], strict=True) if field == 2])
    assert text.strip().startswith("B:")


@pytest.mark.skipif(find_stockfish() is None, reason="needs Stockfish")
def test_choice_credit_pays_for_the_best_of_ones_own_list_where_the_group_agrees():
    """A group that writes one answer alike has no B: advantage; with choice_credit B: and the move it copies
    gain when B: is the best of the listed moves (here the queen capture) and lose when it is the worst."""
    with EnginePool(1, EngineLimit(depth=8), multipv=5) as pool:
        analysis = pool.analyse(QUEEN_UP)
        top, evals = [m.move for m in analysis[:5]], [m.cp / 100 for m in analysis[:5]]
        good = policy_completion(top, evals, top[0])
        worst = policy_completion(top, evals, top[-1])
        components = [
            parts
            for _, parts in PolicyGrader(pool, "dense").score([QUEEN_UP] * 4, [good, good, worst, worst])
        ]
    terms = [field_terms(c, "dense") for c in components]
    rows = row_advantages(terms, [0.3] * 4, 2)  # two groups of two alike answers
    assert all(abs(r["B"]) < 1e-6 for r in rows)
    rows = add_choice(rows, terms, [0.3] * 4, 1.0)
    assert rows[0]["B"] > 0.2 and rows[0]["moves"][0] == pytest.approx(rows[0]["B"])
    assert rows[2]["B"] < -0.05 and rows[2]["moves"][4] == pytest.approx(rows[2]["B"])
    assert rows[2]["moves"][0] == pytest.approx(0.0)


@pytest.mark.skipif(find_stockfish() is None, reason="needs Stockfish")
def test_choice_against_the_best_pays_nothing_for_the_best_and_charges_the_shortfall():
    """With choice_against best, B: on the best listed move gets no choice bonus and B: on the worst loses what it
    falls short of the best, more than it loses against the list's mean."""
    with EnginePool(1, EngineLimit(depth=8), multipv=5) as pool:
        analysis = pool.analyse(QUEEN_UP)
        top, evals = [m.move for m in analysis[:5]], [m.cp / 100 for m in analysis[:5]]
        answers = [policy_completion(top, evals, top[0]), policy_completion(top, evals, top[-1])]
        components = [parts for _, parts in PolicyGrader(pool, "dense").score([QUEEN_UP] * 2, answers)]
    terms = [field_terms(c, "dense") for c in components]
    zero = [{"B": 0.0, "moves": [0.0] * 5} for _ in terms]
    best = add_choice([dict(r, moves=list(r["moves"])) for r in zero], terms, [0.3] * 2, 1.0, "best")
    mean = add_choice([dict(r, moves=list(r["moves"])) for r in zero], terms, [0.3] * 2, 1.0, "mean")
    assert best[0]["B"] == pytest.approx(0.0) and mean[0]["B"] > 0.2
    assert best[1]["B"] < mean[1]["B"] < -0.05 and best[1]["moves"][4] == pytest.approx(best[1]["B"])
