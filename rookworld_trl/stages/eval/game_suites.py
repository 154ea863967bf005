"""The evaluation suites that play games: self-play (the model against itself through P:) and a match against
Stockfish. Same `generate` contract and `{name: Metric}` results as rookworld_trl/stages/eval/suites.py.
"""

from __future__ import annotations

import itertools

import chess
import chess.engine
from tqdm.auto import tqdm

from rookworld_trl.chess.engine import EngineLimit, find_stockfish
from rookworld_trl.chess.environment import legal_best_move, play_games
from rookworld_trl.chess.formats import policy_prompt
from rookworld_trl.stages.eval.stats import Metric
from rookworld_trl.stages.eval.suites import SAMPLED, Generate, SuiteDecoding


def selfplay_suite(
    generate: Generate,
    *,
    games: int = 50,
    max_plies: int = 300,
    decoding: SuiteDecoding = SAMPLED,
) -> dict[str, Metric]:
    """The model plays itself from the start through P: (sampled); a game stops at its first illegal move.

    Figures: legal half-moves per game before the first illegal move, and the illegal rate = illegal
    moves / moves tried (ROOK's figure: 36.3 half-moves, 2.7% illegal; 1 / 37.3 = 2.7%).
    Games also stop when python-chess ends them or at `max_plies`.
    """
    plies = itertools.count()

    def policy(prompts: list[str]) -> list[str]:  # one call per ply, each ply its own seed
        bar.update()
        return generate(prompts, seed=decoding.seed + next(plies), **decoding.kwargs("sampled"))

    with tqdm(desc="selfplay", unit="ply", leave=False) as bar:
        played = play_games(policy, [chess.STARTING_FEN] * games, max_plies, decoding.fen_width)
    legal = [len(game.moves) for game in played]
    illegal = [int(game.ended_illegal) for game in played]
    tried = [a + b for a, b in zip(legal, illegal, strict=True)]
    return {
        "legal_half_moves": Metric([float(x) for x in legal], percent=False, reference=36.3),
        "illegal_rate": Metric(
            [b / t if t else 0.0 for b, t in zip(illegal, tried, strict=True)], weights=tried, reference=0.027
        ),
        "games_ended_illegal": Metric([float(b) for b in illegal]),
    }


def match_suite(
    generate: Generate,
    *,
    games: int = 20,
    skill_level: int = 0,
    limit: EngineLimit | None = None,
    stockfish_path: str | None = None,
    max_plies: int = 300,
    decoding: SuiteDecoding = SAMPLED,
) -> dict[str, Metric]:
    """Games against Stockfish at `skill_level` (UCI "Skill Level"), the model White in even games.

    The model moves through its P: answer; an illegal or unreadable move loses the game. Games still
    running after `max_plies` half-moves count as draws. Stockfish's skill levels below 20 pick moves with
    its own clock-seeded randomness, so match figures are not exactly reproducible.
    """
    limit = limit or EngineLimit(depth=8)
    boards = [chess.Board() for _ in range(games)]
    colours = [chess.WHITE if i % 2 == 0 else chess.BLACK for i in range(games)]
    score: list[float | None] = [None] * games
    illegal = [0.0] * games
    kwargs = decoding.kwargs(decoding.names[0])
    with chess.engine.SimpleEngine.popen_uci(find_stockfish(stockfish_path)) as engine:
        engine.configure({"Skill Level": skill_level, "Threads": 1})
        for rnd in tqdm(range(max_plies), desc="match", unit="round", leave=False):
            active = [i for i in range(games) if score[i] is None]
            if not active:
                break
            ours = [i for i in active if boards[i].turn == colours[i]]
            prompts = [policy_prompt(boards[i].fen(), decoding.fen_width) for i in ours]
            completions = generate(prompts, seed=decoding.seed + rnd, **kwargs) if ours else []
            for i, completion in zip(ours, completions, strict=True):
                move = legal_best_move(boards[i], completion)
                if move is None:
                    score[i], illegal[i] = 0.0, 1.0
                else:
                    boards[i].push(move)
            for i in active:  # Stockfish answers in every game where it is now to move
                board = boards[i]
                if score[i] is None and board.turn != colours[i] and not board.is_game_over():
                    board.push(engine.play(board, limit.to_chess()).move)
                outcome = board.outcome()
                if score[i] is None and outcome is not None:
                    score[i] = 0.5 if outcome.winner is None else float(outcome.winner == colours[i])
                elif score[i] is None and board.ply() >= max_plies:
                    score[i] = 0.5  # adjudicated
    score = [0.5 if s is None else s for s in score]
    return {
        "score": Metric(score),
        "win_rate": Metric([float(s == 1.0) for s in score]),
        "draw_rate": Metric([float(s == 0.5) for s in score]),
        "loss_rate": Metric([float(s == 0.0) for s in score]),
        "illegal_move_losses": Metric(illegal),
    }
