"""GRPO's rollouts through the project's own sampler (rookworld_trl/model/decoding.py), at TRL's `rollout_func` seam.

    generation_backend: rookworld       # in a GRPO recipe (the default); `transformers`: TRL's generate()

TRL hands `rollout(prompts, trainer)` the prompts of this process's batch (each repeated num_generations
times by its sampler) and expects one completion per prompt with the log-probs of its tokens. The sampler
shares each distinct prompt's prefill among its repeats (the group's samples) and decodes over a static KV
cache; on CUDA it replays a captured decode step under bf16 when the run is bf16. `use_vllm` keeps TRL's vLLM.
"""

from __future__ import annotations

import torch

from rookworld_trl.model.decoding import gpt2_parts, sample
from rookworld_trl.model.sampling import Sampling


def sampling(args) -> Sampling:
    """The GRPOConfig's sampling settings (temperature, top_k, top_p, min_p) as the sampler's."""
    return Sampling(
        do_sample=True,
        temperature=float(args.temperature),
        top_k=int(args.top_k or 0),
        top_p=float(1.0 if args.top_p is None else args.top_p),
        min_p=args.min_p,
    )


def check_supported(args, model, accelerator) -> None:
    """One-line ValueError when the run asks for what the rookworld backend does not do."""
    switch = "set generation_backend: transformers"
    if args.repetition_penalty != 1.0 or args.generation_kwargs:
        raise ValueError(f"repetition_penalty and generation_kwargs need transformers' generate(): {switch}")
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
        raise ValueError(f"ZeRO-3 shards the weights the rookworld sampler reads: {switch}")
    gpt2_parts(model)  # raises for models that are not GPT-2


def rollout(prompts: list[str], trainer) -> dict:
    """TRL's rollout_func: prompt ids as TRL tokenizes text prompts, completions up to and with EOS, log-probs."""
    tokenizer = trainer.processing_class
    prompt_ids = tokenizer(text=prompts)["input_ids"]
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    on_gpu = next(model.parameters()).device.type == "cuda"
    out = sample(
        model,
        prompt_ids,
        max_new_tokens=trainer.args.max_completion_length,
        sampling=sampling(trainer.args),
        eos_token_ids=list(trainer.eos_token_ids),
        pad_token_id=tokenizer.pad_token_id,
        autocast_dtype=torch.bfloat16 if on_gpu and trainer.args.bf16 else None,
    )
    return {"prompt_ids": prompt_ids, "completion_ids": out.completion_ids, "logprobs": out.logprobs}
