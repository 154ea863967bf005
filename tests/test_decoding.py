"""The project's sampler (rookworld_trl/model/decoding.py) against transformers: tokens, log-probs, distribution,
and GRPO's rollouts through it (rookworld_trl/grpo/rollout.py)."""

import copy
import math
import weakref
from collections import Counter

import pytest
import torch
from tiny_grpo import make_trainer
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rookworld_trl.common.errors import UserError
from rookworld_trl.data.load import load_rookworld_dataset
from rookworld_trl.grpo.rollout import rollout
from rookworld_trl.model import generation as fallback
from rookworld_trl.model.decoding import _REUSED, Decoder, Sampling, _plain, left_pad, sample
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import load_model_and_tokenizer

ASSETS = "rookworld_trl/assets"


@pytest.fixture(scope="module")
def embedded():
    model, tokenizer = load_model_and_tokenizer(f"{ASSETS}/model")
    model.eval()
    rows = load_rookworld_dataset(f"{ASSETS}/data", split="test")
    p_rows = [r["prompt"] for r in rows if r["task"] == "P"][:6]
    a_rows = [r["prompt"] for r in rows if r["task"] == "A"][:6]
    return model, tokenizer, p_rows + a_rows


def cut(row: list[int], eos: int) -> list[int]:
    return row[: next((i + 1 for i, t in enumerate(row) if t == eos), len(row))]


def test_greedy_equals_transformers_on_left_padded_mixed_batch(embedded):
    model, tokenizer, prompts = embedded
    prompts = prompts + prompts[:3]  # repeated prompts share a prefill: they must still decode alike
    ids = tokenizer(prompts)["input_ids"]
    assert len({len(i) for i in ids}) > 3  # mixed lengths: real left padding
    eos = tokenizer.eos_token_id
    x, mask = left_pad(ids, eos, "cpu")
    with torch.no_grad():
        expected = model.generate(
            input_ids=x,
            attention_mask=mask,
            max_new_tokens=80,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    expected = [cut(row, eos) for row in expected[:, x.shape[1] :].tolist()]
    got = sample(model, ids, max_new_tokens=80, sampling=Sampling(do_sample=False), eos_token_ids=[eos],
                 pad_token_id=eos)  # fmt: skip
    assert got.completion_ids == expected
    assert all(row[-1] == eos for row in got.completion_ids)  # every answer ended within the budget
    texts = generate_completions(model, tokenizer, prompts, max_new_tokens=80)
    assert texts == generate_completions(model, tokenizer, prompts, max_new_tokens=80, backend="transformers")


def worst_logprob_error(model, ids, completions, logprobs, temperature) -> float:
    """Largest |log-prob - the model's own log_softmax(logits / T) of that token|, over every token."""
    worst = 0.0
    for prompt, completion, lps in zip(ids, completions, logprobs, strict=True):
        assert len(completion) == len(lps) > 0
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
        expected = (logits / temperature).log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
        worst = max(worst, (expected - torch.tensor(lps, dtype=expected.dtype)).abs().max().item())
    return worst


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logprobs_are_the_models_log_softmax_of_the_sampled_tokens(embedded, temperature):
    """Exact in float64; in fp32 as close as transformers' own cached decoding comes to its full forward
    (on the shipped model, whose logits reach ~22: up to 1.2e-4 over the vocabulary, model.generate's
    output_logits against a full forward of the same sequence). A real bug is off by 1e-2 or more."""
    model, tokenizer, prompts = embedded
    ids = [row for row in tokenizer(prompts)["input_ids"] for _ in range(3)]
    eos = tokenizer.eos_token_id
    kwargs = dict(
        max_new_tokens=60, sampling=Sampling(temperature=temperature), eos_token_ids=[eos], pad_token_id=eos
    )
    torch.manual_seed(0)
    got = sample(model, ids, **kwargs)
    assert worst_logprob_error(model, ids, got.completion_ids, got.logprobs, temperature) < 2.5e-4
    double = copy.deepcopy(model).double()
    got = sample(double, ids, **kwargs)
    assert worst_logprob_error(double, ids, got.completion_ids, got.logprobs, temperature) < 1e-9


def test_rows_that_agree_run_the_model_once(embedded, monkeypatch):
    """Rows of one prompt that drew the same tokens so far run the model as one row; rows that drew different
    ones branch, and finished rows run nothing. (The log-prob test above checks the branches' caches.)"""
    model, tokenizer, prompts = embedded
    ran, step, eos = [], Decoder.step, tokenizer.eos_token_id

    def counted(self, tokens, *args, **kwargs):
        ran.append(len(tokens))
        return step(self, tokens, *args, **kwargs)

    monkeypatch.setattr(Decoder, "step", counted)
    ids = tokenizer(prompts[-1:])["input_ids"] * 8  # an A: prompt: its answer is long and near-certain
    for temperature, alike in ((0.01, True), (1.5, False)):
        ran.clear()
        torch.manual_seed(0)
        out = sample(model, ids, max_new_tokens=60, sampling=Sampling(temperature=temperature),
                     eos_token_ids=[eos], pad_token_id=eos).completion_ids  # fmt: skip
        distinct = len(set(map(tuple, out)))
        assert (distinct == 1) == alike
        assert len(ran) == max(map(len, out)) - 1 and max(ran) <= distinct  # a step per token but the last
        assert ran[-1] <= sum(len(row) == len(ran) + 1 for row in out)  # only the rows still decoding


def test_cache_memory_left_over_from_another_call_is_never_read(embedded):
    """The CPU cache lives in memory kept from call to call; masked columns are read too (torch's bmm needs
    enough of them), so leftovers must never reach the outputs: NaN there changes nothing."""
    model, tokenizer, prompts = embedded
    ids = [row for row in tokenizer(prompts)["input_ids"] for _ in range(4)]
    eos = tokenizer.eos_token_id
    kwargs = dict(
        max_new_tokens=40, sampling=Sampling(temperature=0.8), eos_token_ids=[eos], pad_token_id=eos
    )
    torch.manual_seed(0)
    clean = sample(model, ids, **kwargs)
    with torch.inference_mode():  # the sampler made that memory in inference mode
        _REUSED[Decoder(model).transformer].fill_(float("nan"))
    torch.manual_seed(0)
    poisoned = sample(model, ids, **kwargs)
    assert poisoned.completion_ids == clean.completion_ids
    assert poisoned.logprobs == clean.logprobs


def tiny_model(vocab: int = 8) -> GPT2LMHeadModel:
    torch.manual_seed(3)
    config = GPT2Config(vocab_size=vocab, n_layer=2, n_head=2, n_embd=16, n_positions=32, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)  # a peaked distribution, so top-k/top-p cut something
    return model


def transformers_probs(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """The distribution transformers' sampling warpers leave for these logits."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(s.temperature)])
    if s.top_k:
        warpers.append(TopKLogitsWarper(s.top_k))
    if s.top_p < 1.0:
        warpers.append(TopPLogitsWarper(s.top_p))
    if s.min_p is not None:
        warpers.append(MinPLogitsWarper(s.min_p))
    return warpers(None, logits[None].clone())[0].softmax(-1)


@pytest.mark.parametrize(
    "s",
    [Sampling(temperature=1.0), Sampling(temperature=0.7, top_k=4), Sampling(temperature=1.3, top_p=0.8),
     Sampling(temperature=1.0, min_p=0.2)],
    ids=["plain", "top_k", "top_p", "min_p"],
)  # fmt: skip
def test_two_token_samples_follow_transformers_distribution(s):
    """20,000 two-token samples from one prompt: a chi-square test against the exact joint distribution that
    transformers' warpers give (first token x second token given the first)."""
    model, n, prompt = tiny_model(), 20_000, [1, 2, 3]
    torch.manual_seed(0)
    got = sample(model, [prompt] * n, max_new_tokens=2, sampling=s, eos_token_ids=[99], pad_token_id=0)
    counts = Counter(tuple(row) for row in got.completion_ids)
    expected = {}
    with torch.no_grad():
        first = transformers_probs(model(torch.tensor([prompt])).logits[0, -1], s)
        for a in range(first.numel()):
            if first[a] > 0:
                second = transformers_probs(model(torch.tensor([prompt + [a]])).logits[0, -1], s)
                for b in range(second.numel()):
                    expected[(a, b)] = float(first[a] * second[b])
    allowed = {k for k, p in expected.items() if p > 0}
    assert set(counts) <= allowed  # nothing the warpers forbid
    if s.top_k or s.top_p < 1.0 or s.min_p:
        assert len(allowed) < len(expected)  # the warper did cut something
    cells = [(counts.get(k, 0), p * n) for k, p in expected.items() if p * n >= 5]
    chi2 = sum((o - e) ** 2 / e for o, e in cells)
    dof = len(cells) - 1
    assert dof >= 5
    # Wilson-Hilferty: the chi-square quantile at p = 0.999 (z = 3.09)
    critical = dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < critical, (chi2, critical, dof)


def test_rollout_logprobs_equal_trls_scoring_forward(model_dir, tmp_path):
    """TRL keeps the sampler's log-probs as sampling_per_token_logps; its own scoring forward of the same
    tokens (with the padding-aware positions) must give the same numbers, so the importance ratio starts at 1."""
    trainer = make_trainer(model_dir, tmp_path, max_completion_length=12, per_device_train_batch_size=8)
    assert trainer.rollout_func is not None
    batch = [trainer.train_dataset[i] for i in range(8)]
    trainer.model.eval()
    out = trainer._generate_and_score_completions(batch)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, out["completion_ids"].size(1)
        )[:2]
    m = out["completion_mask"].bool()
    diff = (logps - out["sampling_per_token_logps"]).abs()[m]
    assert m.sum() > 20 and diff.max() < 1e-5


def test_backend_switch(model_dir, tmp_path):
    assert make_trainer(model_dir, tmp_path, generation_backend="transformers").rollout_func is None
    with pytest.raises(UserError, match="repetition_penalty=1.2: .*generation_backend: transformers"):
        make_trainer(model_dir, tmp_path, repetition_penalty=1.2)
    with pytest.raises(ValueError, match="generation_backend must be one of"):
        make_trainer(model_dir, tmp_path, generation_backend="vllm")


def run_metrics(model_dir, out, **overrides):
    trainer = make_trainer(
        model_dir, out, max_steps=4, beta=0.05, per_device_train_batch_size=16, **overrides
    )
    trainer.train()
    return [row for row in trainer.state.log_history if "loss" in row]


def test_seeded_grpo_is_reproducible_and_agrees_with_generate(model_dir, tmp_path):
    a = run_metrics(model_dir, tmp_path / "a")
    b = run_metrics(model_dir, tmp_path / "b")
    for key in ("loss", "reward", "kl", "completions/mean_length"):
        assert [r[key] for r in a] == [r[key] for r in b]
    hf = run_metrics(model_dir, tmp_path / "hf", generation_backend="transformers")

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    # other random draws from the same distribution: close over 4 steps x 16 samples, not equal
    assert a[0]["kl"] == hf[0]["kl"] == 0.0  # step 1 samples the reference's own policy
    assert abs(mean(a, "reward") - mean(hf, "reward")) < 0.08
    assert abs(mean(a, "completions/mean_length") - mean(hf, "completions/mean_length")) < 1.0
    assert abs(mean(a, "kl") - mean(hf, "kl")) < 0.02
    assert abs(mean(a, "loss") - mean(hf, "loss")) < 0.1


@pytest.mark.gpu
def test_cuda_graph_greedy_equals_eager_and_bf16_runs(embedded):
    model, tokenizer, prompts = embedded
    model = copy.deepcopy(
        model
    ).cuda()  # Module.cuda() moves in place: the module-scoped fixture stays on the CPU
    ids = tokenizer(prompts)["input_ids"]
    eos = tokenizer.eos_token_id
    kwargs = dict(
        max_new_tokens=80, sampling=Sampling(do_sample=False), eos_token_ids=[eos], pad_token_id=eos
    )
    graph = sample(model, ids, cuda_graph=True, **kwargs).completion_ids
    assert graph == sample(model, ids, cuda_graph=False, **kwargs).completion_ids
    bf16 = sample(model, ids, autocast_dtype=torch.bfloat16, **kwargs).completion_ids
    assert sum(a == b for a, b in zip(bf16, graph, strict=True)) >= len(graph) // 2  # bf16 rounds differently


def scorer_gap(model, ids, out, autocast_dtype) -> torch.Tensor:
    """|sampler log-prob - the scorer's (the model's forward, under the same autocast)| of every sampled token."""
    gaps = []
    for prompt, completion, lps in zip(ids, out.completion_ids, out.logprobs, strict=True):
        with torch.no_grad(), torch.autocast("cpu", dtype=autocast_dtype):
            logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1].float()
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
        gaps.append((expected - torch.tensor(lps)).abs())
    return torch.cat(gaps)


def test_bf16_sampler_keeps_the_residual_stream_in_the_scorers_dtype():
    """Under bf16 autocast TRL's scoring forward adds each block's bf16 output to an fp32 residual stream; the
    sampler must too. A residual with a large common offset (LayerNorm removes it) makes a bf16 residual round
    away what the layers add: with the old in-place add into addmm's bf16 output, mean gap 0.16, max 0.97."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=64, n_embd=64, n_layer=4, n_head=4, bos_token_id=0,
                        eos_token_id=0, activation_function="gelu_pytorch_tanh")  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wpe.weight += 64.0
    assert all(_plain(block) for block in model.transformer.h)  # the direct ops run, not the modules
    ids = [[int(t) for t in torch.randint(1, 64, (n,))] for n in (5, 9, 9, 12)]
    out = sample(model, ids, max_new_tokens=24, sampling=Sampling(), eos_token_ids=[0], pad_token_id=0,
                 autocast_dtype=torch.bfloat16)  # fmt: skip
    gap = scorer_gap(model, ids, out, torch.bfloat16)
    assert gap.numel() > 40
    assert gap.mean() < 0.005 and gap.max() < 0.02, (
        gap.mean().item(),
        gap.max().item(),
    )  # measured 0.0004, 0.0017


# ----------------------------------------------------------------------------- the fallbacks (model/generation.py)


@pytest.fixture
def fresh_paths(monkeypatch):
    """Sampler paths chosen in the test stay in the test (the module's models are shared)."""
    monkeypatch.setattr(fallback, "_SAMPLER_PATHS", weakref.WeakKeyDictionary())


def test_a_sampler_error_falls_back_to_generate_and_stays_there(embedded, fresh_paths, monkeypatch, capsys):
    model, tokenizer, prompts = embedded
    expected = generate_completions(model, tokenizer, prompts[:4], max_new_tokens=40, backend="transformers")

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(fallback, "sample", broken)
    assert generate_completions(model, tokenizer, prompts[:4], max_new_tokens=40) == expected
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("rookworld sampler:")]
    assert said == [
        "rookworld sampler: eager path left for transformers for the rest of the run: RuntimeError: CUDA error: "
        "operation not permitted when stream is capturing"
    ]
    assert fallback.sampler_path_of(model).path == "transformers"
    generate_completions(model, tokenizer, prompts[:2], max_new_tokens=8)  # no new attempt, no new line
    assert "rookworld sampler" not in capsys.readouterr().out


def test_bad_requests_are_raised_not_fallen_back_from(embedded, fresh_paths):
    model, tokenizer, _ = embedded
    with pytest.raises(ValueError, match="exceeds the model's"):
        fallback.sample_with_fallback(model, [[1] * 10], max_new_tokens=10_000, sampling=Sampling(), eos_token_ids=[0],
                             pad_token_id=0)  # fmt: skip
    assert fallback.sampler_path_of(model).path == "eager"


def test_generate_sample_returns_what_the_sampler_returns(embedded):
    model, tokenizer, prompts = embedded
    ids = tokenizer(prompts[:5])["input_ids"]
    eos = tokenizer.eos_token_id
    kwargs = dict(
        max_new_tokens=40, sampling=Sampling(do_sample=False), eos_token_ids=[eos], pad_token_id=eos
    )
    ours, theirs = sample(model, ids, **kwargs), fallback.generate_sample(model, ids, **kwargs)
    assert ours.completion_ids == theirs.completion_ids
    gap = max(
        abs(a - b)
        for x, y in zip(ours.logprobs, theirs.logprobs, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    assert gap < 1e-4


def test_self_check_measures_the_gap_and_leaves_a_path_that_samples_elsewhere(embedded, fresh_paths, capsys):
    model, tokenizer, prompts = embedded
    ids = tokenizer(prompts[:6])["input_ids"]
    eos, s = tokenizer.eos_token_id, Sampling(temperature=0.7)
    out = sample(model, ids, max_new_tokens=30, sampling=s, eos_token_ids=[eos], pad_token_id=eos)
    gap = fallback.self_check(model, ids, out, s, eos)
    assert gap.tokens > 50 and gap.max < 1e-4 and abs(gap.ratio_mean - 1) < 1e-4  # fp32: the same numbers
    assert fallback.sampler_path_of(model).path == "eager"
    off = fallback.Completions(out.completion_ids, [[lp - 0.2 for lp in row] for row in out.logprobs])
    gap = fallback.self_check(model, ids, off, s, eos)  # a sampler 0.2 nats per token off its scorer
    assert abs(gap.mean - 0.2) < 1e-3 and abs(gap.ratio_mean - math.exp(0.2)) < 1e-3
    assert fallback.sampler_path_of(model).path == "transformers"
    assert "exceeds the tolerance 0.05" in capsys.readouterr().out


def test_grpo_rollout_logs_the_gap_to_trls_scoring_forward(model_dir, tmp_path, fresh_paths, monkeypatch):  # noqa: F811
    trainer = make_trainer(model_dir, tmp_path, max_completion_length=12, per_device_train_batch_size=8)
    prompts = [trainer.train_dataset[i]["prompt"] for i in range(8)]
    trainer.model.eval()
    rollout(prompts, trainer)
    gap = {name: trainer.metrics.values(name) for name in fallback.Gap(0, 0, 1, 1, 1, 0).metrics()}
    assert len(gap["sampling/logprob_gap/mean"]) == 1 and gap["sampling/logprob_gap/max"][0] < 1e-5
    assert abs(gap["sampling/importance_sampling_ratio/mean"][0] - 1) < 1e-5
    rollout(prompts, trainer)  # the same step: checked once
    assert len(trainer.metrics.values("sampling/logprob_gap/mean")) == 1

    def broken(*args, **kwargs):
        raise RuntimeError("replay failed")

    monkeypatch.setattr(fallback, "sample", broken)  # a failing sampler: the run goes on with generate()
    out = rollout(prompts, trainer)
    assert fallback.sampler_path_of(trainer.model).path == "transformers" and len(out["completion_ids"]) == 8
    assert all(len(c) == len(lp) > 0 for c, lp in zip(out["completion_ids"], out["logprobs"], strict=True))


def test_importance_ratio_follows_trls_modes():
    from types import SimpleNamespace

    from rookworld_trl.grpo.rollout import importance_ratio

    scored = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    sampled = scored - torch.tensor([[0.5, 0.5, 9.0], [2.0, -0.1, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])

    def args(mode, low=None, high=3.0):
        return SimpleNamespace(vllm_importance_sampling_mode=mode, vllm_importance_sampling_clip_min=low,
                               vllm_importance_sampling_clip_max=high)  # fmt: skip

    ratio, diff = importance_ratio(scored, sampled, mask, args("token_truncate"))
    assert torch.allclose(diff, torch.tensor([[0.5, 0.5, 0.0], [2.0, -0.1, 0.0]]))
    assert torch.allclose(ratio[:, :2], torch.tensor([[math.exp(0.5)] * 2, [3.0, math.exp(-0.1)]]))
    ratio, _ = importance_ratio(scored, sampled, mask, args("token_mask"))
    assert ratio[1, 0] == 0.0 and torch.isclose(ratio[1, 1], torch.tensor(math.exp(-0.1)))
    ratio, _ = importance_ratio(scored, sampled, mask, args("sequence_mask"))
    assert ratio.shape == (2, 1) and torch.isclose(ratio[0, 0], torch.tensor(math.e)) and ratio[1, 0] == 0.0
    ratio, _ = importance_ratio(scored, sampled, mask, args("sequence_truncate"))
    assert ratio[1, 0] == 3.0


def test_sampler_importance_sampling_corrects_a_sampler_off_its_scorer(model_dir, tmp_path, fresh_paths,  # noqa: F811
                                                                     monkeypatch):  # fmt: skip
    trainer = make_trainer(model_dir, tmp_path, max_completion_length=12, per_device_train_batch_size=8,
                           sampler_importance_sampling=True, sampler_logprob_tolerance=1.0,
                           vllm_importance_sampling_mode="token_truncate")  # fmt: skip
    real = fallback.sample

    def off(*args, **kwargs):  # a sampler 0.1 nats per token below its scorer
        out = real(*args, **kwargs)
        return fallback.Completions(out.completion_ids, [[lp - 0.1 for lp in row] for row in out.logprobs])

    monkeypatch.setattr(fallback, "sample", off)
    trainer.model.eval()
    out = trainer.score([trainer.train_dataset[i] for i in range(8)])
    m = out["completion_mask"].bool()
    assert torch.allclose(out["importance_sampling_ratio"][m], torch.tensor(math.exp(0.1)), atol=1e-4)
    assert abs(trainer.metrics.values("sampling/sampling_logp_difference/mean")[0] - 0.1) < 1e-4
    assert (
        len(trainer.metrics.values("sampling/importance_sampling_ratio/mean")) == 1
    )  # TRL's, not the check's
    assert abs(trainer.metrics.values("sampling/logprob_gap/mean")[0] - 0.1) < 1e-4
