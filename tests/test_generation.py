"""generation.generate_completions on a tiny random GPT-2 with a tiny byte-level BPE trained here."""

import pytest
import torch

from rookworld_trl.chess.formats import EOS, env_prompt, policy_prompt
from rookworld_trl.data.tokenizer import train_tokenizer
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import new_gpt2_model

START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
AFTER_E4 = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"
PROMPTS = [
    policy_prompt(START),
    env_prompt(START, "e2e4", ["e2e4"]),
    "P:",
    policy_prompt(AFTER_E4),
    env_prompt(AFTER_E4, "e7e5", ["e2e4", "e7e5"]),
]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tokenizer = train_tokenizer(PROMPTS * 3, vocab_size=300)
    model = new_gpt2_model(tokenizer, n_layer=2, n_head=2, n_embd=32, n_positions=256)
    return model, tokenizer


def one_by_one(model, tokenizer, prompt, max_new_tokens):
    """Reference: an unpadded generate() call on a single prompt."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False
    )
    text = tokenizer.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=False)
    return text.split(EOS)[0]


def test_greedy_batched_equals_one_by_one_in_order(tiny):
    model, tokenizer = tiny
    batched = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=3)
    expected = [one_by_one(model, tokenizer, p, 12) for p in PROMPTS]
    assert batched == expected
    assert len(set(batched)) > 1  # a random model still answers different prompts differently
    assert generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=64) == expected


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny):
    model, tokenizer = tiny
    kwargs = dict(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = generate_completions(model, tokenizer, PROMPTS * 4, seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate_completions(model, tokenizer, PROMPTS * 4, seed=7, **kwargs) == a
    assert generate_completions(model, tokenizer, PROMPTS * 4, seed=8, **kwargs) != a
    # Rows with the same prompt are sampled independently.
    assert len(set(a[0::5])) > 1


def test_unseeded_sampling_moves_on(tiny):
    model, tokenizer = tiny
    kwargs = dict(max_new_tokens=10, do_sample=True, temperature=1.5)
    assert generate_completions(model, tokenizer, PROMPTS * 4, **kwargs) != generate_completions(
        model, tokenizer, PROMPTS * 4, **kwargs
    )


def test_cut_at_eos_and_mode_restored(tiny):
    model, tokenizer = tiny
    # Make the model prefer end-of-text after any input: every completion is then empty.
    forced = new_gpt2_model(tokenizer, n_layer=2, n_head=2, n_embd=32, n_positions=256)
    with torch.no_grad():
        forced.transformer.ln_f.weight.zero_()
        forced.transformer.ln_f.bias.copy_(forced.transformer.wte.weight[tokenizer.eos_token_id] * 100)
    forced.train()
    assert generate_completions(forced, tokenizer, PROMPTS, max_new_tokens=8) == [""] * len(PROMPTS)
    assert forced.training
    forced.eval()
    assert generate_completions(forced, tokenizer, PROMPTS, max_new_tokens=8) == [""] * len(PROMPTS)
    assert not forced.training
    out = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=8)
    assert all(EOS not in text for text in out)
    assert generate_completions(model, tokenizer, [], max_new_tokens=8) == []
