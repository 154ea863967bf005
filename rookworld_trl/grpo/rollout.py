"""GRPO's rollouts through the project's own sampler (rookworld_trl/model/decoding.py), at TRL's `rollout_func` seam.

    generation_backend: rookworld       # in a GRPO recipe (the default); `transformers`: TRL's generate()

TRL hands `rollout(prompts, trainer)` this process's prompts (each repeated num_generations times) and expects
one completion per prompt with its tokens' log-probs. The sampler shares each distinct prompt's prefill among its
repeats and decodes over a static KV cache (a captured CUDA graph on GPU). With `sampler_importance_sampling`
the trainer applies TRL's vLLM importance-sampling correction to its log-probs (`correct_for_sampler`).
"""

from __future__ import annotations

import math

import torch

from rookworld_trl.grpo.groups import loss_mask
from rookworld_trl.model.decoding import Decoding, Sampling, gpt2_parts
from rookworld_trl.model.generation import sample_checked


def sampling(args) -> Sampling:
    """The GRPOConfig's sampling settings (temperature, top_k, top_p, min_p) as the sampler's."""
    top_p = float(1.0 if args.top_p is None else args.top_p)
    return Sampling(True, float(args.temperature), int(args.top_k or 0), top_p, args.min_p)


def check_supported(args, model, accelerator) -> None:
    """One-line ValueError when the run asks for what the rookworld backend does not do."""
    switch = "set generation_backend: transformers"  # the config's fields: grpo/trl_fields.py check_fields
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
        raise ValueError(f"ZeRO-3 shards the weights the rookworld sampler reads: {switch}")
    gpt2_parts(model)  # raises for models that are not GPT-2


def rollout(prompts: list[str], trainer) -> dict:
    """TRL's rollout_func: prompt ids as TRL tokenizes them, completions up to and with EOS, their log-probs; the
    sampler falls back on an error and is checked every `sampler_check_every` steps (model/generation.py)."""
    tokenizer = trainer.processing_class
    prompt_ids = tokenizer(text=prompts)["input_ids"]
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    on_gpu = next(model.parameters()).device.type == "cuda"
    decoding = Decoding(trainer.args.max_completion_length, sampling(trainer.args), tuple(trainer.eos_token_ids),
                        tokenizer.pad_token_id, torch.bfloat16 if on_gpu and trainer.args.bf16 else None)  # fmt: skip
    out, gap = sample_checked(
        model, prompt_ids, decoding, trainer.args.sampler_check_every, trainer.state.global_step,
        tolerance=trainer.args.sampler_logprob_tolerance, scorer=trainer.scoring_logps,
    )  # fmt: skip
    for name, value in gap.metrics().items() if gap is not None else ():
        # with the correction on, TRL's figures (clipped, every batch) carry the importance-ratio names
        if not (trainer.args.sampler_importance_sampling and "importance" in name):
            trainer.metrics.add(name, value)
    return {"prompt_ids": prompt_ids, "completion_ids": out.completion_ids, "logprobs": out.logprobs}


def correct_for_sampler(output: dict, scoring_logps, args, loss_type: str) -> dict[str, float]:
    """TRL's vLLM importance-sampling correction (its vllm_importance_sampling_* settings and metric names) for our
    sampler's log-probs: the ratio of TRL's scoring forward to the sampler, multiplied into the advantages (TRL's
    loss is linear in them: trl_compat.py LINEAR_IN_ADVANTAGES); vespo reads the ratio itself. Returns the figures.


        .venv/bin/pytest tests/test_decoding.py -k importance
    """
    sampled = output.get("sampling_per_token_logps")
    if sampled is None:  # TRL's own generate(): it scores what it samples
        return {}
    mask = loss_mask(output)
    old = output.get("old_per_token_logps")
    if old is None:
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        old = scoring_logps(ids, attention, output["completion_ids"].size(1))
    ratio, diff = importance_ratio(old, sampled, mask, args)
    output["importance_sampling_ratio"] = ratio  # the step guard checks it; vespo's loss reads it
    if loss_type != "vespo":
        advantages = output["advantages"]
        output["advantages"] = (advantages.unsqueeze(1) if advantages.dim() == 1 else advantages) * ratio
    delta, kept = diff.abs()[mask.bool()], ratio.flatten() if ratio.size(1) == 1 else ratio[mask.bool()]
    figures = {}
    if delta.numel():
        figures["sampling/sampling_logp_difference/mean"] = delta.mean().item()
        figures["sampling/sampling_logp_difference/max"] = delta.max().item()
        for name, reduce in (("min", torch.min), ("mean", torch.mean), ("max", torch.max)):
            figures[f"sampling/importance_sampling_ratio/{name}"] = reduce(kept).item()
    return figures


def importance_ratio(scored, sampled, mask, args) -> tuple[torch.Tensor, torch.Tensor]:
    """(ratio, per-token log-prob difference) of TRL's vLLM correction under vllm_importance_sampling_mode: the
    ratio per token (B, T) or sequence (B, 1), clamped (truncate) or zeroed (mask) outside the clip bounds."""
    diff = torch.nan_to_num((scored - sampled) * mask, nan=0.0)
    mode = args.vllm_importance_sampling_mode
    low, high = args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max
    ratio = torch.exp(diff.sum(dim=-1, keepdim=True) if mode.startswith("sequence") else diff)
    if mode.endswith("truncate"):
        return ratio.clamp(min=low, max=high), diff
    if not mode.endswith("mask"):
        raise ValueError(
            f"vllm_importance_sampling_mode {mode!r}: expected token_/sequence_ truncate or mask"
        )
    low, high = -math.inf if low is None else low, math.inf if high is None else high
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0), diff
