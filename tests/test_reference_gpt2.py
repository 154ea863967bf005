"""Parity of our pure-PyTorch GPT-2 (rookworld_trl.model.reference_gpt2) with transformers' GPT2LMHeadModel on a
small random model: logits on a left-padded batch, KV-cache decoding, greedy generation, the CLI.

    .venv/bin/python -m pytest tests/test_reference_gpt2.py
"""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rookworld_trl.common.entry import run_stage
from rookworld_trl.model.reference_gpt2 import GPTConfig, from_hf, parity_checks, position_ids
from rookworld_trl.stages.eval.parity import main

TOL = 1e-4
PAD = 0  # pad = eos, as in RookWorld


def random_hf_model(vocab_size=300, n_positions=64, seed=0):
    """A small GPT2LMHeadModel with every parameter random (biases and LayerNorms too, which GPT-2's
    init leaves at 0 and 1, so a wrongly mapped bias could not hide)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=PAD,
        eos_token_id=PAD,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def left_padded_batch(lengths, vocab_size=300, seed=1):
    """Random token rows of the given lengths, left padded with PAD; pads never appear inside a row."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    input_ids = torch.full((len(lengths), T), PAD)
    attention_mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        input_ids[i, T - n :] = torch.randint(1, vocab_size, (n,), generator=g)
        attention_mask[i, T - n :] = 1
    return input_ids, attention_mask


@pytest.fixture(scope="module")
def pair():
    hf = random_hf_model()
    return hf, from_hf(hf).eval()


def test_logits_match_transformers_on_left_padded_batch(pair):
    hf, ref = pair
    ids, mask = left_padded_batch([12, 7, 3])
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=position_ids(mask)).logits
        got, _ = ref(ids, mask)
    real = mask.bool()
    assert (expected - got).abs()[real].max() < TOL
    assert expected[real].std() > 0.1  # the logits are not trivially flat


def test_left_padding_does_not_change_a_rows_logits(pair):
    _, ref = pair
    ids, mask = left_padded_batch([12, 5])
    with torch.no_grad():
        padded, _ = ref(ids, mask)
        alone, _ = ref(ids[1:, -5:])
    assert (padded[1, -5:] - alone[0]).abs().max() < TOL


def test_transformers_forward_without_position_ids_counts_the_padding(pair):
    """What we rely on, pinned: transformers' GPT-2 forward numbers positions 0..T-1 including left
    padding unless position_ids are passed (generate() passes cumsum positions). A padded row then
    gets different logits from the same row alone."""
    hf, _ = pair
    ids, mask = left_padded_batch([12, 5])
    with torch.no_grad():
        shifted = hf(ids, attention_mask=mask).logits[1, -5:]
        alone = hf(ids[1:, -5:]).logits[0]
    assert (shifted - alone).abs().max() > 1e-2


def test_kv_cache_decoding_equals_full_forward(pair):
    _, ref = pair
    ids, mask = left_padded_batch([10, 6, 9])
    with torch.no_grad():
        full, _ = ref(ids, mask)
        logits, past = ref(ids[:, :4], mask[:, :4])  # the prefill covers only padding in row 1
        steps = [logits]
        for t in range(4, ids.size(1)):
            logits, past = ref(ids[:, t : t + 1], mask[:, : t + 1], past)
            steps.append(logits)
    assert past[0][0].shape[2] == ids.size(1)
    assert (torch.cat(steps, dim=1) - full).abs()[mask.bool()].max() < TOL


def test_greedy_generation_matches_transformers_generate(pair):
    hf, ref = pair
    ids, mask = left_padded_batch([9, 4, 6])
    eos = 299  # not in the prompts; the model may or may not produce it
    expected = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=12,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    got = ref.generate_greedy(ids, mask, max_new_tokens=12, eos_token_id=eos)
    assert got.shape == (3, 9 + 12)
    assert torch.equal(expected, got)


def test_greedy_generation_stops_rows_at_eos_like_transformers(pair):
    hf, ref = pair
    ids, mask = left_padded_batch([9, 4, 6])
    first = ref.generate_greedy(ids, mask, max_new_tokens=1)[:, -1]
    eos = int(first[0])  # row 0 finishes at once; the other rows go on and row 0 is padded with eos
    expected = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=8,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    got = ref.generate_greedy(ids, mask, max_new_tokens=8, eos_token_id=eos)
    assert torch.equal(expected, got)
    assert (got[0, ids.size(1) :] == eos).all()


def test_from_state_dict_without_lm_head_and_config_checks():
    hf = random_hf_model(seed=3)
    state = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}  # tied: saved once
    ref = from_hf(state, hf.config)
    assert ref.lm_head.weight is ref.transformer.wte.weight
    ids = torch.randint(1, 300, (2, 8))
    with torch.no_grad():
        assert (hf(ids).logits - ref(ids)[0]).abs().max() < TOL
    with pytest.raises(ValueError, match="activation_function"):
        GPTConfig.from_hf(
            GPT2Config(vocab_size=10, activation_function="relu", bos_token_id=0, eos_token_id=0)
        )
    with pytest.raises(ValueError, match="needs a config"):
        from_hf(state)


def test_parity_checks_report_a_broken_reference():
    hf = random_hf_model(seed=4)
    ref = from_hf(hf).eval()
    with torch.no_grad():
        ref.transformer.h[1].attn.c_proj.bias += 0.01 * torch.randn(64)  # a small mapping mistake
    ids, mask = left_padded_batch([8, 5])
    results = dict(parity_checks(hf, ref, ids, mask, max_new_tokens=4, eos_token_id=PAD))
    assert results["logits: transformers vs ours"] > TOL
    assert results["logits: our KV cache vs full"] < TOL  # ours is still self-consistent


def byte_level_tokenizer():
    """GPT-2-style byte-level tokenizer with no merges: 256 byte tokens plus <|endoftext|> (id 256)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def test_cli_passes_on_a_saved_model(tmp_path, capsys):
    tokenizer = byte_level_tokenizer()
    random_hf_model(vocab_size=len(tokenizer), n_positions=128).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert main([str(tmp_path), "--device", "cpu", "--max_new_tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and "FAIL" not in out


def test_cli_missing_model_exits_2(tmp_path, capsys):
    assert run_stage("parity", main, [str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
