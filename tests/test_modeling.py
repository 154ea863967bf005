"""Tests for rookworld_trl.model.loading: loading a local model directory, tokenizer settings, dropout, and
the one clear error for a missing directory or an unreachable hub id. Runs in seconds, offline.

    .venv/bin/python -m pytest tests/test_modeling.py
"""

import json
import logging
import os
import time

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rookworld_trl.model.loading import (
    ModelLoadError,
    is_hub_id,
    load_model_and_tokenizer,
    new_gpt2_model,
    set_dropout,
    use_fused_gelu,
    use_padding_aware_positions,
)

EOS = "<|endoftext|>"


def tiny_tokenizer():
    """A byte-level BPE like GPT-2's, trained on a few RookWorld lines; eos (id 0 here) is the only special."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    lines = [
        "P: rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1 M: e2e4 d2d4 E: 0.3 0.2 B: e2e4"
    ] * 4
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS)


def save_tiny_model(path, dtype=torch.float32, dropout=0.1):
    tokenizer = tiny_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
    )  # fmt: skip
    GPT2LMHeadModel(config).to(dtype).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return tokenizer


def assert_not_chained(error):
    """The user sees our message alone, not a stack of HTTP / file errors under it (`raise ... from None`)."""
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.fixture
def offline(monkeypatch):
    """Offline mode as HF_HUB_OFFLINE=1 gives it. huggingface_hub reads the variable once at import,
    so setting the environment now is not enough: set the constant it was read into as well."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_local_dir_loads_with_left_padding_and_pad_eos(tmp_path):
    saved = save_tiny_model(tmp_path)
    model, tokenizer = load_model_and_tokenizer(str(tmp_path))
    assert isinstance(model, GPT2LMHeadModel)
    assert tokenizer.is_fast and tokenizer.padding_side == "left"
    assert tokenizer.pad_token == tokenizer.eos_token == EOS
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == saved.eos_token_id
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.eos_token_id

    batch = tokenizer(["P: e2e4", "P: rnbqkbnr/pppppppp w KQkq - 0 1 M:"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == tokenizer.eos_token_id and batch["attention_mask"][0, 0] == 0
    assert batch["attention_mask"][:, -1].tolist() == [1, 1]  # left padding: every row ends in a real token


def test_dropout_kept_and_dtype_defaults_to_fp32(tmp_path):
    save_tiny_model(tmp_path, dtype=torch.bfloat16)
    model, _ = load_model_and_tokenizer(str(tmp_path))
    assert model.config.resid_pdrop == 0.1
    assert model.dtype == torch.float32  # transformers 5 would keep the checkpoint's bf16
    model, _ = load_model_and_tokenizer(str(tmp_path), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_fused_gelu_is_the_same_function_and_survives_a_save(tmp_path):
    save_tiny_model(tmp_path, dropout=0.0)  # GPT2Config defaults to gelu_new, as RookWorld-LM's config says
    slow = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert slow.config.activation_function == "gelu_new"
    model, _ = load_model_and_tokenizer(str(tmp_path))
    assert model.config.activation_function == "gelu_pytorch_tanh"
    tokens = torch.randint(0, slow.config.vocab_size, (3, 20))
    torch.testing.assert_close(model(tokens).logits, slow(tokens).logits, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path / "saved")
    assert (
        GPT2LMHeadModel.from_pretrained(tmp_path / "saved").config.activation_function == "gelu_pytorch_tanh"
    )
    relu = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=4, activation_function="relu"))
    use_fused_gelu(relu)  # another activation is another function: left alone
    assert relu.config.activation_function == "relu"


def test_missing_local_dir_is_one_clear_error(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_model_and_tokenizer(missing)
    assert missing in str(info.value)
    assert_not_chained(info.value)


def test_dir_without_weights_names_the_directory(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="is not a model directory") as info:
        load_model_and_tokenizer(str(tmp_path))
    assert "model.safetensors" in str(info.value)
    assert_not_chained(info.value)


def test_unknown_hub_id_offline_fails_fast_with_a_fix(offline):
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model_and_tokenizer("rookworld-tests/no-such-model")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "rookworld-tests/no-such-model" in message and "hub" in message
    assert "HF_HUB_OFFLINE=1" in message and "local model directory" in message
    assert_not_chained(info.value)


def test_tokenizer_larger_than_model_vocab_is_refused(tmp_path):
    tokenizer = tiny_tokenizer()
    GPT2LMHeadModel(
        GPT2Config(vocab_size=100, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    ).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="do not belong together"):
        load_model_and_tokenizer(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("jrahn/RookWorld-LM-124M", True),
        ("gpt2", True),
        ("/abs/path/model", False),
        ("./runs/model", False),
        ("runs/sft/checkpoint-5", False),
        ("~/models/x", False),
        ("../x", False),
    ],
)
def test_is_hub_id(name, expected):
    assert is_hub_id(name) is expected


def test_new_gpt2_model_takes_vocab_and_ids_from_tokenizer():
    tokenizer = tiny_tokenizer()
    model = new_gpt2_model(tokenizer, n_layer=2, n_head=2, n_embd=32, n_positions=48)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == model.config.pad_token_id == model.config.bos_token_id == 0
    assert model.generation_config.pad_token_id == 0
    assert model.config.resid_pdrop == 0.0
    ids = tokenizer("P: e2e4", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape == (1, ids.size(1), len(tokenizer))
    with pytest.raises(ValueError, match="divisible"):
        new_gpt2_model(tokenizer, n_layer=1, n_head=3, n_embd=32, n_positions=16)


def test_set_dropout_zero_makes_train_mode_deterministic():
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)).train()
    ids = torch.arange(10)[None]
    torch.manual_seed(0)
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout 0.1 by default
    set_dropout(model, 0.0)
    assert torch.equal(model(ids).logits, model(ids).logits) and model.config.attn_pdrop == 0.0


def test_padding_aware_positions_score_a_padded_row_like_the_row_alone():
    """TRL's log-prob forward (fused LM head, no position_ids) on a left-padded row must give the
    log-probs of the same row unpadded: the positions the row was generated at."""
    from trl.trainer.utils import add_fused_lm_head  # imported here: trl is slow to import

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
    with torch.no_grad():
        model.transformer.wpe.weight.normal_(0.0, 0.5)  # make position embeddings matter
    add_fused_lm_head(model)
    row = torch.randint(1, 50, (1, 6))
    ids = torch.cat([torch.zeros(1, 4, dtype=torch.long), row], dim=1)  # 4 pads on the left
    mask = (torch.arange(10) >= 4).long()[None]

    def logps(ids, mask):
        labels = ids.masked_fill(mask == 0, -100)
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).log_probs[
                0, -5:
            ]

    alone = logps(row, torch.ones_like(row))
    generated = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=4, pad_token_id=0
    )
    assert (logps(ids, mask) - alone).abs().max() > 1e-3  # transformers alone counts the padding
    handle = use_padding_aware_positions(model)
    assert (logps(ids, mask) - alone).abs().max() < 1e-5
    assert torch.equal(generated, model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                                  max_new_tokens=4, pad_token_id=0))  # fmt: skip
    handle.remove()
    assert (logps(ids, mask) - alone).abs().max() > 1e-3


def test_model_dir_without_tokenizer_files_is_one_clear_error(tmp_path):
    save_tiny_model(tmp_path)
    for name in os.listdir(tmp_path):
        if name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            os.remove(tmp_path / name)
    with pytest.raises(ModelLoadError, match="has no tokenizer files .* tokenizer_name_or_path"):
        load_model_and_tokenizer(str(tmp_path))


@pytest.mark.parametrize(
    "change, says", [("n_layer", "2 tensors missing|tensors missing"), ("n_embd", "of other sizes")]
)
def test_weights_that_do_not_match_the_config_are_one_clear_error(tmp_path, change, says):
    save_tiny_model(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[change] *= 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    logged = []  # what transformers logs while loading (its own handler writes to a stream pytest replaced)
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("transformers.modeling_utils").addHandler(handler)
    try:
        with pytest.raises(ModelLoadError, match=says) as error:
            load_model_and_tokenizer(str(tmp_path))
    finally:
        logging.getLogger("transformers.modeling_utils").removeHandler(handler)
    assert_not_chained(error.value)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)
    assert not [
        m for m in logged if "LOAD REPORT" in m
    ]  # transformers' table of tensors: the one line says it
