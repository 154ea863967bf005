"""GRPO fine-tuning of RookWorld-LM on TRL: config, trainer subclass and the `main()` for accelerate launch.

    python -m rookworld_trl.grpo --config recipes/grpo_tiny_cpu.yaml [--max_steps 10 ...]
    accelerate launch --config_file accelerate_configs/cpu.yaml -m rookworld_trl.grpo --config recipes/...
    rookworld train --config recipes/grpo_rookworld_124m_gpu.yaml       # the same, via rookworld_trl/cli.py

TRL does the GRPO work (sampling K completions per prompt, group advantages, clipped loss, k3 KL, vLLM, PEFT);
every GRPOConfig / TrainingArguments field stays reachable from a recipe. RookWorldGRPOTrainer adds, through
public Trainer methods and the hooks of rookworld_trl/training/trl_compat.py (the one module that touches TRL's
internals):
  - adaptive KL, KL guard, NaN/Inf recovery (grpo_safety.StepGuard, a callback at the optimizer-step
    boundary; `training_step` and `compute_loss` report each micro-batch's loss, KL and inputs to it): beta
    follows the measured KL; KL above kl_warn warns, above kl_stop saves a checkpoint and stops; a non-finite
    or diverged step (loss or gradient-norm spike, weights blown up, KL far above kl_stop) skips its update,
    restores an in-memory snapshot from before the bad update (weights + optimizer), cuts the LR and saves
    the batch to output_dir/nan_batches/;
  - field credit (`field_credit`): per-field (B, T) advantages of P: answers, rookworld_trl/grpo/credit.py,
    in `shape_advantages`;
  - exact KL estimators, EMA/adaptive baselines, a value head with GAE, DAPO dynamic sampling
    (rookworld_trl/grpo/rl_options.py, fields in rl_config.py);
  - GPT-2 positions from the attention mask when TRL scores left-padded rows (policy and reference);
  - reference model on its own device (`ref_model_device`);
  - checkpoint tiers with verified completion markers and resume modes (rookworld_trl/training/checkpoints.py); a
    finished run re-run trains nothing; a full disk or Ctrl-C ends with one line saying how to resume;
  - publishing of final/ only (rookworld_trl/training/publish.py; Trainer's own push is off);
  - self-play positions (`selfplay_ratio`): the policy's own games feed P: prompts (rookworld_trl/grpo/selfplay.py);
  - an LR schedule "warmup_cosine_linear" (`create_scheduler`), a JSONL metrics file, peak memory in the logs.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import os
import sys

import torch
from accelerate.utils import gather_object
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState
from trl import ModelConfig, get_peft_config

from rookworld_trl.chess.formats import fen_width_of
from rookworld_trl.grpo import advantages as adv
from rookworld_trl.grpo import credit
from rookworld_trl.grpo.config import RookWorldGRPOConfig
from rookworld_trl.grpo.replay import Replay, replay_loss
from rookworld_trl.grpo.rl_options import RLOptionsTrainer
from rookworld_trl.grpo.rollout import check_supported, rollout
from rookworld_trl.grpo.safety import StepGuard
from rookworld_trl.grpo.selfplay import SelfPlay, SelfPlayCallback
from rookworld_trl.model.loading import (
    load_model_and_tokenizer,
    train_at_fen_width,
    use_fused_gelu,
    use_padding_aware_positions,
)
from rookworld_trl.model.shared_prefix import use_shared_prefix
from rookworld_trl.stage import stage_parser
from rookworld_trl.training import checkpoints, publish
from rookworld_trl.training.metrics_log import JSONLMetricsCallback
from rookworld_trl.training.trl_compat import GRPOSeams

logger = logging.getLogger(__name__)

STATE_FILE = "rookworld_state.json"  # our controller state inside each checkpoint


def warmup_cosine_linear(
    step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1, final_decay_ratio: float = 0.1
) -> float:
    """LR multiplier: 0 -> 1 linear over warmup, cosine 1 -> min_ratio, then linear min_ratio -> 0 at the end.

    The final linear leg lands exactly on zero, which a cosine alone reaches only with a zero floor.
    """
    decay_start = max(warmup_steps, total_steps - round(final_decay_ratio * total_steps))
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if step < decay_start:
        progress = (step - warmup_steps) / max(1, decay_start - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    floor = min_ratio if decay_start > warmup_steps else 1.0
    return max(0.0, floor * (total_steps - step) / max(1, total_steps - decay_start))


class RookWorldGRPOTrainer(RLOptionsTrainer, GRPOSeams):
    """GRPOTrainer with adaptive KL, a KL guard, NaN/Inf rollback, ref-model offload, checkpoint tiers and
    supervised replay; the RL options (KL estimator, baseline, GAE, dynamic sampling) come from RLOptionsTrainer.

    `replay_dataset`: the rows supervised replay draws from (default: `train_dataset`). `main` passes the whole
    training split, so that replay of A: truths works when `mix_env_ratio` leaves no A: prompts to sample.
    After `train()` returns, `halt_reason` is None for a normal end, else a message saying why it stopped.
    """

    def __init__(self, model, reward_funcs, args: RookWorldGRPOConfig, *rest, replay_dataset=None, **kwargs):
        # Trainer would push output_dir (stable/, Parquet, engine cache) at every save: publish.py pushes final/
        self.publish_to_hub, args.push_to_hub = args.push_to_hub, False
        own_sampler = args.generation_backend == "rookworld" and not args.use_vllm
        if own_sampler:
            kwargs["rollout_func"] = rollout
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        if own_sampler:
            check_supported(self.args, self.model, self.accelerator)
        self.ref_device = self._place_ref_model(self.args.ref_model_device)
        for model in (self.model, self.ref_model):  # TRL loads the reference itself, not through our loader
            if model is not None:
                use_fused_gelu(model)
        if self.args.padding_aware_positions:
            self._use_padding_aware_positions()
        self.guard = StepGuard(self)
        self.replay = None
        if self.args.replay_coef > 0:
            a = self.args
            self.replay = Replay(
                self.train_dataset if replay_dataset is None else replay_dataset,
                a.replay_task,
                self.processing_class,
                a.replay_batch_size,
                a.seed,
                a.process_index,
            )
        self.add_callback(self.guard)
        self.selfplay = None
        if (
            self.args.selfplay_ratio > 0
        ):  # rookworld_trl/grpo/selfplay.py: the policy's own games as P: prompts
            self.selfplay = SelfPlay(self.args, self.train_dataset)
            self.add_callback(SelfPlayCallback(self))
        self.interrupt = checkpoints.SaveOnInterrupt()
        self.add_callback(self.interrupt)
        if self.args.metrics_jsonl:
            self.add_callback(
                JSONLMetricsCallback(os.path.join(self.args.output_dir, self.args.metrics_jsonl))
            )

    @property
    def halt_reason(self) -> str | None:
        """None after a normal end of train(), else why the guard stopped it."""
        return self.guard.halt_reason

    def _use_padding_aware_positions(self) -> None:
        # TRL scores completions with a plain forward that passes no position_ids; GPT-2 would then count the
        # left padding as positions, unlike generate(). TRL builds the reference itself, so hook it here.
        from transformers import GPT2Model

        for model in (self.model, self.ref_model):
            if model is not None and any(isinstance(m, GPT2Model) for m in model.modules()):
                use_padding_aware_positions(model)
                if self.args.shared_prefix_scoring:  # it reads the padding-aware positions
                    use_shared_prefix(model)

    # ---- reference model on its own device ----

    def _place_ref_model(self, device: str | None) -> torch.device | None:
        if device is None:
            return None
        if self.ref_model is None:
            logger.warning(
                f"ref_model_device={device} ignored: no separate reference model (beta == 0 or PEFT)"
            )
            return None
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "ref_model_device is not supported with DeepSpeed/FSDP, which shard the reference model"
            )
        device = torch.device(device)
        if device.type == "cuda":
            count = torch.cuda.device_count()
            device = torch.device(
                "cuda", torch.cuda.current_device() if device.index is None else device.index
            )
            if device.index >= count:
                raise ValueError(f"ref_model_device={device}: only {count} CUDA device(s) visible")
        self.ref_model.to(device)
        return device

    # ---- field-level credit (rookworld_trl/grpo/credit.py) ----

    def shape_advantages(self, output):
        output = super().shape_advantages(output)  # the baseline / GAE options first; A: rows keep theirs
        if self.args.field_credit and self.model.training:
            output["advantages"] = self._field_advantages(output["advantages"], output["completion_ids"])
        return output

    def _field_advantages(self, sequence: torch.Tensor, completion_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) advantages: each listed move and each P: field gets its own verdict's advantage (credit.py);
        the parts are graded again by the policy reward's grader, from its memo."""
        from rookworld_trl.rewards.functions import policy_components, policy_grader

        texts = self.processing_class.batch_decode(completion_ids.tolist(), skip_special_tokens=False)
        eos = self.processing_class.eos_token
        components = policy_components(
            policy_grader(self.reward_funcs), self.scored_prompts, [t.split(eos, 1)[0] for t in texts]
        )
        terms = gather_object([credit.field_terms(c, self.args.reward_shaping) for c in components])
        rewards = adv.row_rewards(self.scored_rewards, self.reward_weights)
        tasks = [adv.task_of(p) for p in gather_object(self.scored_prompts)]
        scale = adv.reward_scale(rewards, tasks, self.num_generations, self.scale_rewards).tolist()
        start = self.accelerator.process_index * len(components)  # a group may span processes, as in TRL
        rows = credit.row_advantages(terms, scale, self.num_generations)[start : start + len(components)]
        pieces = self.processing_class.batch_decode(completion_ids.reshape(-1, 1).tolist())
        width = completion_ids.shape[1]
        layouts = [credit.token_layout(pieces[i : i + width]) for i in range(0, len(pieces), width)]
        return credit.spread(rows, layouts, sequence)

    # ---- per-micro-batch reports to the StepGuard ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.model.training:
            self.guard.record_inputs(inputs)
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.replay is not None and self.model.training:
            # the replayed rows follow the micro-step count (restored on resume); scaled for accumulation
            # like TRL's own loss, so replay weighs replay_coef whatever gradient_accumulation_steps is
            supervised = replay_loss(model, self.replay.batch(self.micro_step, loss.device))
            self.log_metric("replay_loss", supervised.item())
            loss = loss + self.args.replay_coef * supervised / self.current_gradient_accumulation_steps
        return loss

    def training_step(self, model, inputs, num_items_in_batch):
        if self.selfplay is not None:
            inputs = self._mix_selfplay(inputs)
        kl = self.metric_values("kl")  # TRL appends one value per micro-batch when beta != 0
        seen = len(kl)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.guard.record_step(loss, kl[seen:])
        return loss

    def _mix_selfplay(self, inputs):
        """Self-play positions into this generation batch's P: prompts. TRL hands every micro-batch the rows
        of its generation batch but generates only on the first: the figures are logged for that one."""
        inputs, figures = self.selfplay.mix(inputs, self.state.global_step)
        if self.micro_step % (self.args.steps_per_generation * self.args.num_iterations) == 0:
            for name, value in figures.items():
                self.log_metric(name, value)
        return inputs

    def on_grad_norm(self, norm):
        self.guard.record_grad_norm(norm)  # the norm before clipping: the guard's spike check needs it

    # ---- LR schedule ----

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.args.lr_schedule != "warmup_cosine_linear" or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        schedule = functools.partial(
            warmup_cosine_linear,
            warmup_steps=self.args.get_warmup_steps(num_training_steps),
            total_steps=num_training_steps,
            min_ratio=self.args.lr_cosine_min_ratio,
            final_decay_ratio=self.args.lr_final_decay_ratio,
        )
        self.adopt_scheduler(torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule))
        return self.lr_scheduler

    # ---- checkpoints ----

    def checkpoint_written(self, path):
        super().checkpoint_written(path)
        state = {
            "beta": self.beta,
            "nan_recoveries": self.guard.nan_recoveries,
            "healthy": self.guard.healthy,
        }
        checkpoints.write_json_atomic(os.path.join(path, STATE_FILE), state)

    def checkpoint_complete(self, path):
        if self.args.save_stable and self.guard.healthy:
            checkpoints.promote_to_stable(path, os.path.dirname(path))
        if self.publish_to_hub and self.args.push_checkpoints:
            publish.push_checkpoint(self.args, path)

    def on_resume(self, checkpoint):
        super().on_resume(checkpoint)
        path = os.path.join(checkpoint, STATE_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                state = json.load(f)
            self.beta = state["beta"]
            self.guard.nan_recoveries = state["nan_recoveries"]


# ---- the stage: load, train, save ----


def resolve_reward_funcs(names: list[str], shaping: str = "graduated", engine=None) -> list:
    """Registry names (rookworld_trl.rewards.functions, built with `shaping` and `engine`) or 'module:function'."""
    from rookworld_trl.rewards.functions import get_reward_funcs

    funcs = []
    for name in names:
        if ":" in name:
            module, attr = name.split(":", 1)
            funcs.append(getattr(importlib.import_module(module), attr))
        else:  # get_reward_funcs names the known ones when `name` is not among them
            funcs += get_reward_funcs([name], engine=engine, shaping=shaping)
    return funcs


def engine_cache_path(args: RookWorldGRPOConfig) -> str | None:
    """The engine's sqlite cache, inside output_dir (None: memory only)."""
    return os.path.join(args.output_dir, args.engine_cache) if args.engine_cache else None


def engine_pool(args: RookWorldGRPOConfig):
    """The Stockfish pool of the policy reward and the evals, from the config's engine fields."""
    from rookworld_trl.chess.engine import EngineLimit, EnginePool

    if args.engine_cache:
        os.makedirs(args.output_dir, exist_ok=True)
    limit = EngineLimit(depth=args.engine_depth, nodes=args.engine_nodes)
    return EnginePool(args.engine_workers, limit, multipv=5, cache=engine_cache_path(args))


def eval_settings(args: RookWorldGRPOConfig, samples: int, env_samples: int | None = None, **more):
    """The run's held-out eval: policy + env suites on eval_split, greedy, the engine settings of the reward."""
    from rookworld_trl.eval.evaluate import EvalSettings

    return EvalSettings(
        **{"model": "", **more},
        data=args.dataset_path,
        split=args.eval_split,
        fen_width=args.fen_width,
        suites="policy,env",
        policy_samples=samples,
        env_samples=samples if env_samples is None else env_samples,
        seed=args.seed,
        max_new_tokens=max(args.max_completion_length, 96),
        device="cpu" if args.use_cpu else None,
        depth=args.engine_depth,
        nodes=args.engine_nodes,
        cache=engine_cache_path(args),
        out=os.path.join(args.output_dir, "eval"),
    )


def before_after_eval(args: RookWorldGRPOConfig, initial_model: str, final_dir: str) -> str:
    """Evaluate the final model against the initial one on held-out data (output_dir/eval/eval.{json,md,png}),
    draw the run's curves (output_dir/report/); returns the eval's markdown table."""
    from rookworld_trl.eval import evaluate
    from rookworld_trl.training import report

    settings = eval_settings(
        args, args.eval_samples, args.eval_env_samples, model=final_dir, baseline=initial_model
    )
    paths = evaluate.evaluate(settings)
    report.main([args.output_dir])
    with open(paths["md"]) as f:
        return f.read()


def interrupted(trainer: RookWorldGRPOTrainer) -> int:
    """Say where a stop signal left the run and how to go on; the exit code (130 for Ctrl-C, 143 for SIGTERM)."""
    last = checkpoints.latest_complete_checkpoint(trainer.args.output_dir)
    checkpoints.say(
        f"interrupted at step {trainer.state.global_step} (last checkpoint: {last or 'none'}); resume with the "
        "same command and --resume_from_checkpoint auto"
    )
    return trainer.interrupt.exit_code


def train(trainer: RookWorldGRPOTrainer, initial_model: str | None = None) -> int:
    """Resume per args.resume_from_checkpoint, train, save final (and push), then the before/after eval
    against `initial_model` on the main process. Returns a process exit code."""
    args = trainer.args
    checkpoints.check_output_dir(args.output_dir)
    # the main process moves incomplete and damaged checkpoints aside first
    with trainer.accelerator.main_process_first():
        resume = checkpoints.resolve_resume(args.resume_from_checkpoint, args.output_dir)
    done = checkpoints.finished_step(resume, args.max_steps) if resume else None
    final_card = os.path.join(args.output_dir, checkpoints.FINAL_DIR, "README.md")
    if done is not None and os.path.isfile(final_card):
        checkpoints.say(
            f"{args.output_dir} is finished: {resume} is at step {done} (max_steps {args.max_steps}) and the "
            f"final model is in {os.path.dirname(final_card)}; nothing to train (raise --max_steps to train on)"
        )
        return 0
    if done is not None:  # killed while saving final/ or evaluating: finish those, train no extra step
        checkpoints.say(f"{resume} is at max_steps ({done}) but final/ is incomplete: writing it")
        trainer.load_weights(resume)
        trainer.state = TrainerState.load_from_json(os.path.join(resume, TRAINER_STATE_NAME))
    else:
        if resume:
            checkpoints.say(f"resuming from {resume} (step {checkpoints.checkpoint_step(resume)})")
        try:
            trainer.train(resume_from_checkpoint=resume)
        except KeyboardInterrupt:  # a second Ctrl-C: mid-update weights are no step's, so nothing is saved
            return interrupted(trainer)
        if trainer.interrupt.step is not None:  # the first Ctrl-C: the step finished and was saved
            return interrupted(trainer)
    if trainer.halt_reason:
        print(f"rookworld grpo: stopped early. {trainer.halt_reason}", file=sys.stderr)
        return 1
    final = checkpoints.save_final(trainer)
    if trainer.accelerator.is_main_process:
        eval_md = None
        if initial_model and args.eval_samples > 0:
            eval_md = before_after_eval(args, initial_model, final)
        publish.write_model_card(trainer, final, initial_model, eval_md)
        if trainer.publish_to_hub:
            publish.upload(args, final)
    if trainer.accelerator.is_main_process:
        from rookworld_trl.training.report import run_summary

        print(run_summary(args.output_dir))
    return 0


def check_completion_length(dataset, tokenizer, max_completion_length: int, n: int = 2000) -> None:
    """Warn when reference completions (+ EOS) of the data would not fit in max_completion_length: a cut
    completion scores as a format failure (or is masked), a silent penalty on the task, not the model."""
    if "completion" not in dataset.column_names or not len(dataset):
        return
    sample = list(dataset.select(range(min(n, len(dataset))))["completion"])
    lengths = [len(ids) + 1 for ids in tokenizer(sample, add_special_tokens=False)["input_ids"]]
    over = sum(length > max_completion_length for length in lengths)
    if over:
        logger.warning(
            f"max_completion_length={max_completion_length} cuts {over} of {len(lengths)} sampled reference "
            f"completions (the longest is {max(lengths)} tokens with EOS): raise it to at least {max(lengths)}"
        )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_policy(args: RookWorldGRPOConfig, model_args: ModelConfig):
    """(model, tokenizer) at the recipe's revision and dtype; TRL builds the reference model from the policy's
    name and `args.model_init_kwargs` (its dtype defaults to the policy's), so the revision goes there too."""
    dtype = None if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    revision = model_args.model_revision
    model, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, dtype=dtype, revision=revision)
    if revision:
        args.model_init_kwargs = {**(args.model_init_kwargs or {}), "revision": revision}
    return model, tokenizer


def build(argv: list[str] | None = None):
    """(trainer, engine pool, ModelConfig) from a recipe and --flags, as `python -m rookworld_trl.grpo` runs
    them; the caller closes the engine pool."""
    parser = stage_parser((RookWorldGRPOConfig, ModelConfig), "train")  # one-line errors, no usage dump
    args, model_args = parser.parse_args_and_config(argv)
    checkpoints.check_output_dir(args.output_dir)  # before the engine cache or logs write there
    if args.push_to_hub and _hub_offline():
        parser.error(
            "push_to_hub needs the network but HF_HUB_OFFLINE is set: unset it or drop --push_to_hub"
        )
    if not model_args.model_name_or_path or not args.dataset_path:
        parser.error("set model_name_or_path and dataset_path (in the recipe or as --flags)")
    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.stage import resolve_path

    # Recipes name the embedded model and data relative to the repository/package root: any cwd works.
    model_args.model_name_or_path = resolve_path(model_args.model_name_or_path)
    args.dataset_path = resolve_path(args.dataset_path)

    if args.torch_compile:  # batches change length every step: compile for dynamic shapes at once, as
        # accelerate_configs/single_gpu.yaml does (torch's default recompiles per length for many steps)
        os.environ.setdefault("ACCELERATE_DYNAMO_USE_DYNAMIC", "true")
    model, tokenizer = load_policy(args, model_args)
    dataset = load_rookworld_dataset(
        args.dataset_path,
        split=args.dataset_split,
        mix_env_ratio=args.mix_env_ratio,
        seed=args.seed,
        max_samples=args.dataset_max_samples,
        fen_width=args.fen_width,
    )
    check_completion_length(dataset, tokenizer, args.max_completion_length)
    # one width for the run's replay and eval prompts too, recorded in the model's config.json
    args.fen_width = train_at_fen_width(model, args.fen_width or fen_width_of(dataset["prompt"]))
    # Replay draws from the whole split: the mix above may hold no rows of the replayed task
    replay_rows = (
        load_rookworld_dataset(args.dataset_path, split=args.dataset_split, fen_width=args.fen_width)
        if args.replay_coef
        else None
    )
    engine = engine_pool(args)
    trainer = RookWorldGRPOTrainer(
        model=model,
        reward_funcs=resolve_reward_funcs(args.reward_funcs, args.reward_shaping, engine),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        replay_dataset=replay_rows,
    )
    if args.eval_every_steps:
        from rookworld_trl.eval.evaluate import EvalCallback

        held_out = load_rookworld_dataset(args.dataset_path, split=args.eval_split, fen_width=args.fen_width)
        trainer.add_callback(
            EvalCallback(
                trainer, held_out, engine, args.eval_every_steps, eval_settings(args, args.eval_every_samples)
            )
        )
    return trainer, engine, model_args


def main(argv: list[str] | None = None) -> int:
    trainer, engine, model_args = build(argv)
    try:
        return train(trainer, initial_model=model_args.model_name_or_path)
    finally:
        engine.close()
