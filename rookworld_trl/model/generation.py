"""Batched text generation: the one path by which the project asks a model for completions.

    from rookworld_trl.model.generation import generate_completions
    from rookworld_trl.model.loading import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer("jrahn/RookWorld-LM-124M")
    print(generate_completions(model, tokenizer, ["P: " + fen.ljust(90) + "M:"], max_new_tokens=96))

Prompts are sorted by token length and cut into batches (less padding), left padded with the
end-of-text token (every prompt's last token in the last column, where generation continues), and
the answers come back in the caller's order, decoded and cut at the first end-of-text token.
Prompts are tokenized as they are, with no end-of-text token in front: that is what TRL's GRPO rollouts
do with the same prompts, and how ROOK's published evaluations prompted the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from rookworld_trl.model.fallback import CHECK_EVERY, sample_with_fallback, sampler_path_of, self_check
from rookworld_trl.model.kv_cache import left_pad
from rookworld_trl.model.sampling import Decoding, Sampling

BACKENDS = ("rookworld", "transformers")


def sampling_of(do_sample: bool, temperature: float, top_k: int) -> Sampling:
    """generate_completions' settings as the sampler's (both backends read them through a Decoding)."""
    if not do_sample:
        return Sampling(do_sample=False)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    # top_k=0 switches top-k off (generate() given None would fall back to its default of 50)
    return Sampling(do_sample=True, temperature=float(temperature), top_k=int(top_k), top_p=1.0)


def _generate_batch(model, tokenizer, rows: list[list[int]], decoding: Decoding, backend: str) -> list[str]:
    """Decoded completions of one batch, cut at the first EOS."""
    if backend == "rookworld":
        out = sample_with_fallback(model, rows, decoding)
        sampler = sampler_path_of(model)
        # the first call, every CHECK_EVERY calls, after a fallback
        if sampler.due(sampler.calls, CHECK_EVERY):
            path, sampler.checked = sampler.path, sampler.calls
            self_check(model, rows, out, decoding.sampling, decoding.pad_token_id)
            if sampler.path != path:  # these came from the path just left
                out = sample_with_fallback(model, rows, decoding)
        new_tokens = out.completion_ids
    else:
        with torch.inference_mode():
            input_ids, mask = left_pad(rows, decoding.pad_token_id, model.device)
            out = model.generate(input_ids=input_ids, attention_mask=mask, **decoding.generate_kwargs())
            new_tokens = out[:, input_ids.shape[1] :].tolist()
    # Decode with special tokens kept, then cut at the first EOS: what follows it is padding.
    return [
        tokenizer.decode(row, skip_special_tokens=False).split(tokenizer.eos_token, 1)[0]
        for row in new_tokens
    ]


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Seed torch inside the block and restore the caller's random state after it; no-op without a seed
    (forking without seeding would replay the same samples on every call)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    seed: int | None = None,
    backend: str = "rookworld",
) -> list[str]:
    """One completion per prompt, in the order of `prompts`: greedy by default, else sampled.

    `backend`: "rookworld" (rookworld_trl/model/decoding.py: the same tokens as transformers' generate(), faster;
    repeated prompts share their prefill; through model/fallback.py: checked against the model's forward on the
    first call and every CHECK_EVERY, falling back to generate() on a failure) or "transformers" (generate()).
    `seed` makes sampling reproducible without touching the caller's random state. The model is put
    in eval mode for the call and handed back in the mode it came in (a trainer may call this mid-run).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not prompts:
        return []
    eos = tokenizer.eos_token_id
    decoding = Decoding(max_new_tokens, sampling_of(do_sample, temperature, top_k), (eos,), pad_token_id=eos)
    rows = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
    out: list[str] = [""] * len(rows)
    was_training = model.training
    model.eval()
    try:
        with _seeded(seed, model.device):
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                texts = _generate_batch(model, tokenizer, [rows[i] for i in batch], decoding, backend)
                for i, text in zip(batch, texts, strict=True):
                    out[i] = text
    finally:
        model.train(was_training)
    return out
