"""Train a compact byte-level BPE tokenizer on RookWorld task text (P: and A: lines).

GPT-2's 50k vocabulary is mostly English; chess text needs a few hundred tokens, and a small vocabulary shrinks
the embedding and LM head that dominate a tiny model's parameter count.

    rookworld tokenizer train --data /tmp/sft_data --vocab_size 512 --out /tmp/rookworld_tok
    python -c "from transformers import AutoTokenizer; print(AutoTokenizer.from_pretrained('/tmp/rookworld_tok'))"

Pre-tokens are single characters, except runs of whitespace and numbers (`0.21`, `-1.5`), each with an optional
leading space; BPE merges only inside one. So a FEN board is one token per piece, digit and `/`: a square lines up
the same way in every position, which a small model learns from far less data than GPT-2-style merges
(`pppppppp`) it must memorise, at about the same length (merged padding and numbers). `:` and `+` are pre-tokens of
their own, so tokens(prompt) + tokens(completion) == tokens(prompt + completion). Byte-level, so any text
encodes; `<|endoftext|>` is eos, pad, bos and unk, and no bos is added.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from rookworld_trl.chess.formats import EOS
from rookworld_trl.common.flags import FlagParser

MIN_VOCAB = 257  # 256 byte symbols + <|endoftext|>
# Whitespace runs (less the space that leads the next pre-token), numbers, then any other single character.
PRE_TOKEN = r"\s+(?!\S)| ?[0-9.\-]+| ?[^\s0-9.\-]"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE with at most `vocab_size` tokens (fewer if the text runs out of merges)."""
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + {EOS}), got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    split = pre_tokenizers.Split(Regex(PRE_TOKEN), behavior="isolated")
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],  # id 0
        # All 256 bytes, seen or not, so any text (a typo, a model's garbage) stays encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    special = dict(eos_token=EOS, pad_token=EOS, bos_token=EOS, unk_token=EOS)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, model_max_length=1024, **special)


def main(argv: list[str] | None = None) -> int:
    example = "example: rookworld tokenizer train --data data/mine --out tok --vocab_size 512"
    parser = FlagParser(prog="rookworld tokenizer", description=__doc__.splitlines()[0], epilog=example)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a byte-level BPE on P:/A: lines and save it", epilog=example,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    train.add_argument("--data", required=True, default=argparse.SUPPRESS, help="a `rookworld data generate` dir, or a data file")  # fmt: skip
    train.add_argument("--vocab_size", type=int, default=512, help="at most this many tokens (>= 257)")
    train.add_argument("--out", required=True, default=argparse.SUPPRESS, help="save_pretrained directory")
    train.add_argument("--max_samples", type=int, default=None, help="train on at most this many lines")
    train.add_argument("--seed", type=int, default=0, help="seed of the sample selection")
    args = parser.parse_args(argv)

    from rookworld_trl.data.layout import column  # imported here: data pulls in the engine tooling
    from rookworld_trl.data.load import load_rookworld_dataset

    texts = column(load_rookworld_dataset(args.data, seed=args.seed, max_samples=args.max_samples), "text")
    tokenizer = train_tokenizer(texts, args.vocab_size)
    tokenizer.save_pretrained(args.out)
    n_tokens = sum(len(ids) for ids in tokenizer(texts[:1000])["input_ids"])
    n_chars = sum(len(t) for t in texts[:1000])
    print(f"tokenizer: {len(tokenizer)} tokens from {len(texts)} lines -> {args.out} "
          f"({n_chars / max(n_tokens, 1):.2f} characters per token on the first {min(len(texts), 1000)} lines)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
