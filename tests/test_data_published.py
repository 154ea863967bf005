"""Published RookWorld data as it really is, through load, audit, eval and rewards: P: lines padded to 89 and
90 mixed, black-to-move labels taken from the wrong end of the engine's list, king-less A: prompts, JSON
arrays of lines, JSONL without a `text` column. The files are made here from real Stockfish analyses.

    .venv/bin/python -m pytest tests/test_data_published.py
"""

from __future__ import annotations

import json
import random

import chess
import pytest

from rookworld_trl.chess.engine import EngineLimit, EnginePool
from rookworld_trl.chess.environment import env_sample
from rookworld_trl.chess.formats import (
    fen_width_of,
    policy_completion,
    policy_prompt,
    prompt_fen_width,
    render_env,
)
from rookworld_trl.common.entry import run_stage
from rookworld_trl.data.commands import AuditConfig, audit, load_rookworld_dataset, main
from rookworld_trl.data.tokenizer import train_tokenizer
from rookworld_trl.grpo.rewards.functions import env_reward
from rookworld_trl.stages.eval.evaluate import EvalSettings, prepare_items
from rookworld_trl.stages.eval.evaluate import main as eval_main
from rookworld_trl.stages.sft import RookWorldSFTConfig, SFTScriptArguments, load_splits, run_sft

LIMIT = EngineLimit(depth=4)
KINGLESS = "A: 8/8/8/8/8/8/4P3/8 w - - 0 1+e2e4+e2e4+8/8/8/8/4P3/8/8/8 b - - 0 1+0.001+0+0"


@pytest.fixture(scope="module")
def positions():
    """(fen, the engine's best-first analysis) of 24 positions from seeded random games, both sides to move."""
    rng, fens = random.Random(7), []
    while len(fens) < 24:
        board = chess.Board()
        for _ in range(rng.randrange(4, 30)):
            if board.is_game_over():
                break
            board.push(rng.choice(list(board.legal_moves)))
        if not board.is_game_over() and board.legal_moves.count() >= 5:
            fens.append(board.fen())
    with EnginePool(limit=LIMIT) as pool:
        return list(zip(fens, pool.analyse_many(fens), strict=True))


def p_line(fen, analysis, width=90, wrong_black=False) -> str:
    """A P: line as published: moves shuffled, FEN padded to `width`; with `wrong_black`, a black-to-move
    label names the engine's 5th move (the label defect of the published data)."""
    moves, evals = [a.move for a in analysis], [a.pawns for a in analysis]
    best = moves[-1] if wrong_black and " b " in fen else moves[0]
    order = list(range(len(moves)))
    random.Random(fen).shuffle(order)
    completion = policy_completion([moves[i] for i in order], [evals[i] for i in order], best)
    return policy_prompt(fen, width) + completion


def a_lines(positions) -> list[str]:
    out = []
    for fen, analysis in positions[:6]:
        out.append(render_env(env_sample(fen, analysis[0].move, [analysis[0].move])))
    return out


def test_mixed_widths_load_as_the_most_common_one(positions, tmp_path, capsys):
    lines = [p_line(fen, a, width=89 if i % 3 else 90) for i, (fen, a) in enumerate(positions)]  # 16 x 89
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(lines) + "\n")
    ds = load_rookworld_dataset(path)
    assert {prompt_fen_width(p) for p in ds["prompt"]} == {89}
    assert all(t == p + c for t, p, c in zip(ds["text"], ds["prompt"], ds["completion"], strict=True))
    assert "re-padded to FEN width 89 (8 at width 90" in capsys.readouterr().out
    assert {prompt_fen_width(p) for p in load_rookworld_dataset(path, fen_width=90)["prompt"]} == {90}
    # converted to our layout: one width, which stats.json records
    assert main(["load", str(path), "--out", str(tmp_path / "ours")]) == 0
    stats = json.loads((tmp_path / "ours" / "stats.json").read_text())
    assert stats["fen_widths"] == {"89": 24}
    assert stats["load_report"]["rows"] == 24  # the pass that finds the width is not counted
    assert {
        prompt_fen_width(p) for p in load_rookworld_dataset(tmp_path / "ours", split="train")["prompt"]
    } == {89}
    # the audit: the layout apart from the content (both widths are laid out) and how many of each
    report = audit(AuditConfig(str(path), depth=4, progress=False))
    assert report.fen_widths == {89: 16, 90: 8} and report.to_dict()["fields"].get("P: layout") is None
    assert "P: lines by FEN field width: 89: 16 (66.7%), 90: 8 (33.3%)" in capsys.readouterr().out


def test_eval_prompts_the_way_the_data_was_written(positions, tmp_path):
    path = tmp_path / "p89.txt"
    path.write_text("\n".join(p_line(fen, a, width=89) for fen, a in positions) + "\n")
    with EnginePool(limit=LIMIT) as pool:
        items = prepare_items(EvalSettings(data=str(path), split="train", policy_samples=4), ["policy"], pool)
        wide = prepare_items(EvalSettings(data=str(path), fen_width=90, policy_samples=4), ["policy"], pool)
    assert items.fen_width == 89 and wide.fen_width == 90 and len(items.policy_fens) == 4
    assert fen_width_of([policy_prompt(items.policy_fens[0], items.fen_width)]) == 89


def test_audit_shows_wrong_black_labels_at_a_glance(positions, tmp_path, capsys):
    lines = (
        [p_line(fen, a, width=89, wrong_black=True) for fen, a in positions] + a_lines(positions) + [KINGLESS]
    )
    path = tmp_path / "published.txt"
    path.write_text("\n".join(lines) + "\n")
    report = audit(AuditConfig(str(path), depth=4, progress=False))
    white, black = report.groups["P w"], report.groups["P b"]
    assert white["lines"] and black["lines"]
    assert white["best"] == 0 and black["best"] == black["lines"]  # all black labels wrong, no white one
    assert report.ranks["b"]["5"] == black["lines"] and report.ranks["w"]["1"] == white["lines"]
    assert white["layout"] == black["layout"] == 0  # 89 wide is a published layout, not a content error
    fields = report.to_dict()["fields"]
    a_total = report.task_lines("A")
    assert fields["A: unparseable"] == {"count": 1, "rate": 1 / a_total}  # over all A: lines, itself included
    assert "A: fen: invalid position …: no white king, no black king" in report.reasons
    out = capsys.readouterr().out
    black_row = next(line for line in out.splitlines() if line.strip().startswith("black") and "%" in line)
    assert "100.00%" in black_row  # the by-side table: black's best column
    assert f"no white king, no black king (first at {path}:{len(lines)})" in out  # the reason and where


def test_audit_measures_how_far_the_evals_are(positions, tmp_path, capsys):
    lines = []
    for fen, analysis in positions[:6]:  # every written eval half a pawn above the engine's
        moves, evals = [a.move for a in analysis], [round(a.pawns + 0.5, 2) for a in analysis]
        lines.append(policy_prompt(fen) + policy_completion(moves, evals, moves[0]))
    path = tmp_path / "evals.txt"
    path.write_text("\n".join(lines) + "\n")
    report = audit(AuditConfig(str(path), depth=4, progress=False))
    groups = [c for g, c in report.groups.items() if g.startswith("P ")]
    assert sum(c["evals"] for c in groups) == 6 and sum(c["best"] for c in groups) == 0
    mae = sum(c["eval_error"] for c in groups) / sum(c["evals_compared"] for c in groups)
    assert mae == pytest.approx(0.5)
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if line.strip().startswith("P:"))
    rows = [line for line in out if line.strip().startswith(("white", "black")) and not line.endswith("%")]
    assert header.split()[-2:] == ["eval", "MAE"] and rows and all(row.split()[-1] == "0.50" for row in rows)


def test_audit_reads_json_arrays_and_prompt_completion_jsonl(positions, tmp_path, capsys):
    lines = [p_line(fen, a) for fen, a in positions[:4]] + a_lines(positions)[:2]
    array = tmp_path / "lines.json"
    array.write_text(json.dumps(lines))
    objects = tmp_path / "pairs.jsonl"
    pairs = [dict(zip(("prompt", "completion"), (line[: line.index("M:") + 2], line[line.index("M:") + 2 :]), strict=True))
             for line in lines[:4]]  # fmt: skip
    objects.write_text("\n".join(json.dumps(p) for p in pairs) + "\n")
    assert audit(AuditConfig(str(array), depth=4, progress=False)).lines == 6
    assert audit(AuditConfig(str(objects), depth=4, progress=False)).lines == 4
    assert len(load_rookworld_dataset(array)) == 6 and len(load_rookworld_dataset(objects)) == 4


@pytest.mark.parametrize(
    "name, content, found",
    [("other.jsonl", json.dumps({"question": "P: ...", "answer": "e2e4"}) + "\n", "['answer', 'question']"),
     ("numbers.json", "[1, 2]", "a JSON array of ['int']")],
)  # fmt: skip
def test_a_source_without_lines_is_one_line_naming_file_found_and_expected(
    tmp_path, capsys, name, content, found
):
    other = tmp_path / name
    other.write_text(content)
    for command in (["audit", str(other), "--depth", "4", "--no-progress"], ["load", str(other)]):
        assert run_stage("data", main, command) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(other) in err and found in err and "'text'" in err


def test_kingless_published_prompts_get_no_reward_instead_of_raising():
    prompt, completion = KINGLESS[: KINGLESS.index("+e2e4+") + 6], KINGLESS[KINGLESS.index("+e2e4+") + 6 :]
    assert env_reward([prompt], [completion]) == [None]


def test_a_model_is_prompted_the_way_its_data_was_written(positions, tmp_path):
    """SFT on 89-wide data records the width in the model's config.json; `rookworld eval` without data (the
    self-play suite) prompts that model at 89, and at 90 when told."""
    lines = [p_line(fen, a, width=89) for fen, a in positions] + a_lines(positions)
    data = tmp_path / "p89.txt"
    data.write_text("\n".join(lines) + "\n")
    tokenizer_dir = tmp_path / "tok"
    train_tokenizer(lines, vocab_size=300).save_pretrained(tokenizer_dir)
    script_args = SFTScriptArguments(dataset_name=str(data), dataset_test_split="train", max_eval_samples=4,
                                     tokenizer_name_or_path=str(tokenizer_dir), n_layer=1, n_head=2, n_embd=32)  # fmt: skip
    config = RookWorldSFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, max_length=256, use_cpu=True,
                                report_to="none", save_strategy="no", format_check_samples=0, bf16=False)  # fmt: skip
    run_sft(script_args, config, *load_splits(script_args, seed=0))
    model_dir = tmp_path / "sft"
    assert json.loads((model_dir / "config.json").read_text())["rookworld_fen_width"] == 89
    flags = ["--suites", "selfplay", "--selfplay_games", "1", "--max_plies", "2", "--max_new_tokens", "8",
             "--device", "cpu", "--depth", "1"]  # fmt: skip
    for extra, width in (([], 89), (["--fen_width", "90"], 90)):
        out = tmp_path / f"eval{width}"
        assert eval_main([str(model_dir), *flags, *extra, "--out", str(out)]) == 0
        assert json.loads((out / "eval.json").read_text())["settings"]["fen_width"] == {str(model_dir): width}
