"""The compact BPE tokenizer: size, special tokens, round trips and the prompt/completion invariant."""

from __future__ import annotations

import pytest
from sft_fixtures import STOCKFISH, env_lines, mixed_lines
from transformers import AutoTokenizer

from rookworld_trl.chess.formats import EOS, split_prompt_completion
from rookworld_trl.data.tokenizer import main, train_tokenizer

pytestmark = pytest.mark.skipif(not __import__("os").path.exists(STOCKFISH), reason="needs Stockfish")


@pytest.fixture(scope="module")
def lines():
    return mixed_lines(n_policy=120, n_env=120, seed=3)


@pytest.fixture(scope="module")
def tokenizer(lines):
    return train_tokenizer(lines[:200], vocab_size=400)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_vocab_size_and_special_tokens(tokenizer):
    assert 257 < len(tokenizer) <= 400
    assert tokenizer.eos_token == tokenizer.pad_token == EOS
    assert ids(tokenizer, EOS) == [tokenizer.eos_token_id]
    # no bos is added: a prompt encodes to its own tokens only, as with GPT-2
    assert tokenizer("P: ")["input_ids"] == ids(tokenizer, "P: ")


def test_prompt_completion_boundary_invariant(tokenizer, lines):
    # held-out lines (not in the tokenizer's training text) of both tasks, with EOS appended as SFT does
    held_out = lines[200:] + env_lines(20, seed=99)
    assert {line[:2] for line in held_out} == {"P:", "A:"}
    for line in held_out:
        prompt, completion = split_prompt_completion(line)
        completion += EOS
        assert ids(tokenizer, prompt) + ids(tokenizer, completion) == ids(tokenizer, prompt + completion), (
            line
        )


def test_split_inside_padding_breaks_invariant(tokenizer, lines):
    # why the split is after `M:`: cutting inside the FEN padding merges spaces across the cut
    line = next(line for line in lines if line.startswith("P:"))
    cut = line.index("M:") - 5
    prompt, completion = line[:cut], line[cut:]
    assert ids(tokenizer, prompt) + ids(tokenizer, completion) != ids(tokenizer, prompt + completion)


def test_round_trip_and_compression(tokenizer, lines):
    for line in lines[:50]:
        assert tokenizer.decode(ids(tokenizer, line)) == line
    # bytes never seen in training still encode and decode (the full byte alphabet is in the vocab)
    odd = "P: ünïcødé ♞ +-1.0"
    assert tokenizer.decode(ids(tokenizer, odd)) == odd
    # merges learned chess units (padding runs, numbers): fewer tokens than bytes, although boards and
    # squares stay one token per character
    n_chars = sum(len(line) for line in lines)
    n_tokens = sum(len(ids(tokenizer, line)) for line in lines)
    assert n_chars / n_tokens > 1.3


def test_boards_and_moves_are_one_token_per_character(tokenizer):
    # a square's piece sits at the same token offset in every position: no `pppppppp` or `pN` merges
    line = "P: r1bqkb1r/pppp1ppp/2n2n2/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 4 4"
    board = line.split()[1]
    tokens = [tokenizer.decode([i]) for i in ids(tokenizer, line)]
    assert tokens[2 : 2 + len(board)] == [" r"] + list(board[1:])
    assert [tokenizer.decode([i]) for i in ids(tokenizer, " e2e4")] == [" e", "2", "e", "4"]


def test_save_and_auto_tokenizer_round_trip(tokenizer, lines, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(tokenizer)
    assert loaded.eos_token == loaded.pad_token == EOS
    for line in lines[:20]:
        assert ids(loaded, line + EOS) == ids(tokenizer, line + EOS)


def test_cli_trains_from_a_text_file(lines, tmp_path):
    pytest.importorskip("rookworld_trl.data.commands", reason="the data loader is not written yet")
    data = tmp_path / "lines.txt"
    data.write_text("\n".join(lines) + "\n")
    assert main(["train", "--data", str(data), "--vocab-size", "300", "--out", str(tmp_path / "tok")]) == 0
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert 257 < len(loaded) <= 300
    assert loaded.decode(ids(loaded, lines[0])) == lines[0]
