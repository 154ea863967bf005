"""Every field of TRL's GRPOConfig, classified once: what it does through RookWorldGRPOTrainer.

    PYTHONPATH=$PWD .venv/bin/python -m rookworld_trl.grpo.trl_fields                          # the table
    PYTHONPATH=$PWD .venv/bin/python -m rookworld_trl.grpo.trl_fields --write docs/GUIDE.md    # rewrite it there

`FIELDS` maps each GRPOConfig field (TRL's own and the TrainingArguments it inherits) to a `Parity`: "works"
(as in trl.GRPOTrainer; the note says where ours differs), or "refused" (set away from TRL's default under the
note's condition, the trainer's construction raises one line naming the field, why, and what to do).
tests/test_trl_fields.py fails when a GRPOConfig field is missing here and walks every field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields

from trl import GRPOConfig

from rookworld_trl.common.errors import UserError

WORKS, REFUSED = "works", "refused"
TRANSFORMERS = "set generation_backend: transformers (TRL's generate())"


@dataclass(frozen=True)
class Parity:
    """How one GRPOConfig field behaves; `refuse(args, sampler)`: whether a value away from TRL's is refused."""

    verdict: str
    note: str
    refuse: Callable[[object, bool], bool] | None = None
    fix: str = ""


def works(note: str = "as in TRL") -> Parity:
    return Parity(WORKS, note)


def refused(note: str, fix: str, when: Callable[[object, bool], bool] = lambda args, sampler: True) -> Parity:
    return Parity(REFUSED, note, when, fix)


def under_sampler(args, sampler: bool) -> bool:
    """The rookworld sampler samples (generation_backend rookworld, no use_vllm, no rollout_func of the user's)."""
    return sampler


def reshaping(args, sampler: bool) -> bool:
    """An option recomputes the advantages from the summed reward (field credit, ema/adaptive baseline, GAE)."""
    return bool(args.field_credit or args.baseline != "group" or args.value_baseline)


def sampler_refuses(what: str) -> Parity:
    return refused(
        f"our sampler (generation_backend: rookworld) does not {what}", TRANSFORMERS, under_sampler
    )


def each(names: str, parity: Parity) -> dict[str, Parity]:
    """`parity` for each of the space-separated `names`."""
    return dict.fromkeys(names.split(), parity)


VLLM = works("TRL's vLLM path (use_vllm: true), which the subclass leaves to TRL")
LOGGING = works("TRL's completions log (Parquet, trackers)")
TRAINER = works("transformers' Trainer, untouched")

# TRL's own GRPOConfig fields, in GRPOConfig's order
GRPO_FIELDS: dict[str, Parity] = {
    "model_init_kwargs": works("applied to the policy (a model path) and the reference alike"),
    "trust_remote_code": works("passed with model_init_kwargs; GPT-2 needs no remote code"),
    # TRL's own one-line refusal names the field (GPT-2 is no Mixture-of-Experts model): nothing to add
    "router_aux_loss_coef": Parity(
        REFUSED, "TRL refuses it on a model without router logits (GPT-2)", None, "leave it unset"
    ),
    "disable_dropout": works("our default is true (dropout would be noise in the KL and the ratio)"),
    "cast_lm_head_to_fp32": refused(
        "TRL's cast assumes a Llama-style `model.embed_tokens` and fails on GPT-2's tied transformer.wte",
        "leave it false (bf16 runs keep fp32 master weights; scoring is checked against fp32 by `rookworld doctor`)",
    ),
    "num_generations": works(),
    "num_generations_eval": works("TRL's evaluation loop (eval_dataset); our evals are the stage's"),
    "max_completion_length": works("checked against the data's reference completions at construction"),
    "ds3_gather_for_generation": sampler_refuses("run under ZeRO-3"),
    "shuffle_dataset": works(),
    "pad_to_multiple_of": works("set to 128 under torch.compile when left 'auto'"),
    "generation_batch_size": works(),
    "steps_per_generation": works(),
    "temperature": works("read by our sampler too"),
    "top_p": works("read by our sampler too"),
    "top_k": works("read by our sampler too"),
    "min_p": works("read by our sampler too"),
    "generation_kwargs": sampler_refuses("take generate() keywords"),
    "chat_template_kwargs": sampler_refuses(
        "apply chat templates (conversational prompts are refused under it)"
    ),
    "repetition_penalty": sampler_refuses("apply a repetition penalty"),
    "cache_implementation": sampler_refuses("use transformers' caches (it keeps its own static KV cache)"),
    "use_vllm": works("vLLM samples in place of our sampler"),
    **each(
        "vllm_mode vllm_model_impl vllm_enable_sleep_mode vllm_structured_outputs_regex vllm_server_base_url vllm_server_host vllm_server_port vllm_server_timeout vllm_group_port vllm_gpu_memory_utilization vllm_max_model_length vllm_tensor_parallel_size",
        VLLM,
    ),
    "beta": works("the trainer's RunState holds it; adaptive KL (kl.py) moves it"),
    "num_iterations": works(),
    "epsilon": works(),
    "delta": works(),
    "epsilon_high": works(),
    **each(
        "sapo_temperature_neg sapo_temperature_pos vespo_k_pos vespo_lambda_pos vespo_k_neg vespo_lambda_neg",
        works("with its loss_type (sapo, vespo)"),
    ),
    "importance_sampling_level": works(),
    "reward_weights": works(
        "the baselines and dynamic sampling read the weighted row; field credit weighs the policy reward's terms "
        "by its weight and gives the other rewards' share to every token of the answer"
    ),
    "multi_objective_aggregation": refused(
        "has no effect with field_credit, baseline ema/adaptive or value_baseline, which recompute the "
        "advantages from the summed reward",
        "keep sum_then_normalize, or set field_credit: false, baseline: group and value_baseline: false",
        reshaping,
    ),
    "scale_rewards": works("field credit and the baselines divide by the same scale"),
    "loss_type": works("our exact KL term normalises as TRL's loss (grpo/kl.py)"),
    "mask_truncated_completions": works(),
    "sync_ref_model": works("not with ref_model_device"),
    "ref_model_mixup_alpha": works("with sync_ref_model"),
    "ref_model_sync_steps": works("with sync_ref_model"),
    "top_entropy_quantile": works(),
    **each(
        "entropy_coef use_adaptive_entropy entropy_coef_min entropy_coef_max entropy_coef_delta entropy_target",
        works("TRL's entropy term"),
    ),
    "max_tool_calling_iterations": works(
        "with tools= (TRL's tool loop; tools need a chat template, as in TRL)"
    ),
    **each(
        "vllm_importance_sampling_correction vllm_importance_sampling_mode vllm_importance_sampling_clip_max vllm_importance_sampling_clip_min",
        works("vLLM's correction, and our sampler's with sampler_importance_sampling"),
    ),
    "vllm_importance_sampling_cap": works(
        "TRL's deprecated name of vllm_importance_sampling_clip_max (TRL warns; removed in TRL 2.0)"
    ),
    "off_policy_mask_threshold": works(),
    "use_bias_correction_kl": works(),
    "log_completions": works(
        "the table prints at every logging step as in TRL unless print_completions_every says"
    ),
    "log_multimodal": LOGGING,
    "num_completions_to_print": works("rows of the console table"),
    "log_unique_prompts": LOGGING,
    "log_completions_hub_repo": LOGGING,
    # before the name TRL copies it into, so that the refusal names what the user set
    "use_transformers_paged": sampler_refuses("batch continuously (TRL's deprecated name)"),
    "use_transformers_continuous_batching": sampler_refuses("batch continuously"),
    "transformers_continuous_batching_config": sampler_refuses("batch continuously"),
}

# transformers' TrainingArguments fields (GRPOConfig inherits them): Trainer's, where ours differs said so
TRAINER_FIELDS: dict[str, Parity] = each(
    """output_dir per_device_train_batch_size num_train_epochs max_steps learning_rate lr_scheduler_kwargs
    warmup_steps optim optim_args weight_decay adam_beta1 adam_beta2 adam_epsilon optim_target_modules
    gradient_accumulation_steps average_tokens_across_devices max_grad_norm label_smoothing_factor bf16 fp16
    bf16_full_eval fp16_full_eval tf32 activation_checkpointing_kwargs gradient_checkpointing_kwargs
    torch_compile_backend torch_compile_mode use_liger_kernel liger_kernel_config use_cache neftune_noise_alpha
    torch_empty_cache_steps auto_find_batch_size logging_strategy logging_steps logging_first_step
    log_on_each_node logging_nan_inf_filter include_num_input_tokens_seen log_level log_level_replica
    disable_tqdm report_to run_name project trackio_space_id trackio_bucket_id trackio_static_space_id
    eval_strategy eval_steps eval_delay per_device_eval_batch_size prediction_loss_only eval_on_start
    eval_do_concat_batches eval_use_gather_object eval_accumulation_steps include_for_metrics batch_eval_metrics
    save_only_model save_strategy save_steps save_on_each_node save_total_limit enable_jit_checkpoint hub_token
    hub_private_repo hub_model_id hub_strategy hub_always_push hub_revision load_best_model_at_end
    metric_for_best_model greater_is_better ignore_data_skip restore_callback_states_from_checkpoint
    full_determinism seed data_seed use_cpu accelerator_config parallelism_config dataloader_drop_last
    dataloader_num_workers dataloader_pin_memory dataloader_persistent_workers dataloader_prefetch_factor
    dataloader_multiprocessing_context dataloader_in_order remove_unused_columns label_names
    train_sampling_strategy length_column_name ddp_find_unused_parameters ddp_bucket_cap_mb ddp_broadcast_buffers
    ddp_static_graph ddp_backend ddp_timeout fsdp fsdp_config debug skip_memory_metrics do_train do_eval
    do_predict local_rank""",
    TRAINER,
) | {
    "lr_scheduler_type": works("Trainer's, unless lr_schedule: warmup_cosine_linear replaces it"),
    "activation_checkpointing": works("off by default here (TRL turns it on; a 124M model gains nothing)"),
    "gradient_checkpointing": works("its deprecated alias; off unless set"),
    "torch_compile": works("every scored batch padded to pad_to_multiple_of 128: one compiled shape"),
    "push_to_hub": works(
        "the run's final/ model and its card are pushed at the end, not output_dir at every save"
    ),
    "resume_from_checkpoint": works(
        "read by the stage: a path, 'auto' or 'stable' (Trainer's train() argument)"
    ),
    "deepspeed": works(
        "Trainer's; ZeRO-3 is refused under our sampler (set generation_backend: transformers)"
    ),
}

FIELDS: dict[str, Parity] = GRPO_FIELDS | TRAINER_FIELDS


def trl_default(name: str):
    """GRPOConfig's dataclass default of `name`."""
    f = next(f for f in fields(GRPOConfig) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def unclassified() -> list[str]:
    """GRPOConfig's fields that FIELDS does not classify (a TRL upgrade added them), and FIELDS' names it lacks."""
    names = [f.name for f in fields(GRPOConfig)]
    return [n for n in names if n not in FIELDS] + [n for n in FIELDS if n not in names]


def refusal(args, name: str, sampler: bool) -> str | None:
    """The one line refusing field `name` of `args` for this run, or None when its value is allowed."""
    parity, value = FIELDS[name], getattr(args, name)
    if parity.refuse is None or value == trl_default(name) or not parity.refuse(args, sampler):
        return None
    return f"{name}={value!r}: {parity.note}; {parity.fix}"


def check_fields(args, sampler: bool) -> None:
    """UserError for the first GRPOConfig field set away from TRL's default that this run refuses."""
    for name in FIELDS:
        message = refusal(args, name, sampler)
        if message:
            raise UserError(message)


def markdown_table() -> str:
    """FIELDS as docs/GUIDE.md's table (the Trainer's fields that behave as in Trainer in one row)."""

    rows = ["| field | through RookWorldGRPOTrainer |", "|---|---|"]
    trainer_as_is = [n for n, p in FIELDS.items() if p is TRAINER]
    for name, parity in FIELDS.items():
        if parity is TRAINER:
            continue
        rows.append(f"| `{name}` | {parity.verdict}: {parity.note}{'; ' * bool(parity.fix)}{parity.fix} |")
    rows.append(f"| the other {len(trainer_as_is)} TrainingArguments fields | works: {TRAINER.note} |")
    return "\n".join(rows)


def write_table(path: str) -> None:
    """Replace the parity table in the markdown file at `path` (docs/GUIDE.md) with markdown_table()."""
    with open(path) as f:
        text = f.read()
    first, last = markdown_table().splitlines()[0], markdown_table().splitlines()[-1]
    start = text.index(first)
    end = text.index(last.split("|")[-2], start)  # the last row's closing text
    end = text.index("\n", end)
    with open(path, "w") as f:
        f.write(text[:start] + markdown_table() + text[end:])


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:  # python -m rookworld_trl.grpo.trl_fields --write docs/GUIDE.md
        write_table(sys.argv[2])
    else:
        print(markdown_table())
