"""Field-level credit: each field of a P: answer gets the group advantage of its own verdict."""

import chess
import pytest
import torch

from rookworld_trl.chess.engine import EngineLimit, EnginePool, find_stockfish
from rookworld_trl.chess.formats import policy_completion, policy_prompt
from rookworld_trl.grpo.credit import field_rewards, group_advantages, per_token_advantages, token_fields
from rookworld_trl.model.loading import load_model_and_tokenizer
from rookworld_trl.rewards.policy import PolicyGrader

QUEEN_UP = "rnb1kbnr/pppp1ppp/8/4p3/4P2q/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"


def test_group_advantages_per_field_and_nan_rows():
    rewards = torch.tensor([[1.0, 0.5, 1.0], [1.0, 0.5, 0.0], [float("nan")] * 3, [float("nan")] * 3])
    adv = group_advantages(rewards, num_generations=2)
    assert adv[0, :2].tolist() == [0.0, 0.0] and adv[0, 2] > 0.7 and adv[1, 2] < -0.7
    assert adv[2:].isnan().all()
    sequence = torch.tensor([0.3, -0.3, 0.9, -0.9])
    fields = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]])
    per_token = per_token_advantages(sequence, adv, fields)
    assert (
        per_token[0].tolist() == adv[0].tolist() and per_token[2].tolist() == [sequence[2].item()] * 3
    )  # A:


def test_field_rewards_of_unparseable_and_slipped_answers():
    assert field_rewards(None) is None
    assert field_rewards({"parsed": 0.0}) == (-0.3, -0.3, -0.3)
    slipped = {"parsed": 1.0, "layout": 0.0, "legal_moves": 1.0, "candidates": 1.0, "evals": 1.0}
    assert field_rewards({**slipped, "best_legal": 1.0, "best": 1.0}) == (0.8, 0.8, 0.8)


@pytest.mark.skipif(find_stockfish() is None, reason="needs Stockfish")
def test_only_the_best_move_tokens_get_credit_for_a_legal_best_move():
    """Two answers alike but for B: (legal vs illegal): with the real tokenizer and the real grader, only the
    B: field's tokens get a non-zero advantage, positive for the legal one."""
    _, tokenizer = load_model_and_tokenizer("rookworld_trl/assets/model")
    with EnginePool(1, EngineLimit(depth=8), multipv=5) as pool:
        analysis = pool.analyse(QUEEN_UP)
        top = [m.move for m in analysis]
        evals = [m.cp / 100 for m in analysis]
        answers = [policy_completion(top, evals, top[0]), policy_completion(top, evals, "a1a5")]
        assert chess.Move.from_uci("a1a5") not in chess.Board(QUEEN_UP).legal_moves
        components = [parts for _, parts in PolicyGrader(pool).score([QUEEN_UP] * 2, answers)]
    ids = [tokenizer(a + tokenizer.eos_token, add_special_tokens=False)["input_ids"] for a in answers]
    assert len(ids[0]) == len(ids[1])
    fields = torch.tensor([token_fields(tokenizer.batch_decode([[t] for t in row])) for row in ids])
    adv = group_advantages(torch.tensor([field_rewards(c) for c in components]), num_generations=2)
    per_token = per_token_advantages(torch.zeros(2), adv, fields)
    b_tokens = fields[0] == 2
    assert (per_token[:, ~b_tokens] == 0).all()
    assert (per_token[0, b_tokens] > 0.5).all() and (per_token[1, b_tokens] < -0.5).all()
    text = tokenizer.decode([t for t, f in zip(ids[0], fields[0], strict=True) if f == 2])
    assert text.strip().startswith("B:") and policy_prompt(QUEEN_UP).endswith("M:")
