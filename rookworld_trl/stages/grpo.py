"""The GRPO stage: build a RookWorldGRPOTrainer from a recipe, train (resume, final, eval, push), the `main()` of
`python -m rookworld_trl.stages.grpo`.

    python -m rookworld_trl.stages.grpo --config recipes/grpo_tiny_cpu.yaml [--max_steps 10 ...]
    accelerate launch --config_file accelerate_configs/cpu.yaml -m rookworld_trl.stages.grpo --config recipes/...
    rookworld train --config recipes/grpo_rookworld_124m_gpu.yaml       # the same, via rookworld_trl/stages/cli.py

Every GRPOConfig / TrainingArguments field is a recipe field and a --flag. Checkpoints and resume:
training/checkpoints.py; publishing: training/publish.py. EvalCallback (a greedy policy + environment eval every
N steps) draws the learning curve (report/learning_curve.png).
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerCallback, TrainerState
from trl import ModelConfig, get_peft_config

from rookworld_trl.chess.engine import MULTIPV, EngineLimit, EnginePool, MoveEval
from rookworld_trl.chess.formats import FEN_WIDTH, fen_width_of
from rookworld_trl.common.entry import say
from rookworld_trl.common.locks import scoped
from rookworld_trl.common.paths import resolve_paths
from rookworld_trl.data.layout import column
from rookworld_trl.grpo.config import GRPOScriptArguments, RookWorldGRPOConfig, check_rewards
from rookworld_trl.grpo.rewards.functions import resolve_rewards
from rookworld_trl.grpo.selfplay import selfplay_for
from rookworld_trl.grpo.tactics import tactics_for
from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import (
    init_kwargs,
    load_model_and_tokenizer,
    train_at_fen_width,
    trained_fen_width,
)
from rookworld_trl.stages.eval.evaluate import EvalItems, EvalSettings, analysed, draw_items, run_suites
from rookworld_trl.stages.recipe import check_numbers, stage_parser
from rookworld_trl.training import checkpoints, publish
from rookworld_trl.training.console import use_compact_logs
from rookworld_trl.training.interrupt import said_interrupted


def engine_cache_path(script: GRPOScriptArguments, output_dir: str) -> str | None:
    """The engine's sqlite cache in output_dir (None: memory only); one file per machine (sqlite's WAL mode
    shares a file between processes of one host only)."""
    if not script.engine_cache:
        return None
    path = os.path.join(output_dir, script.engine_cache)
    machine, machines = checkpoints.machine_of_process()
    if machines > 1 and machine > 0:
        stem, ext = os.path.splitext(path)
        path = f"{stem}.machine{machine}{ext}"
    return path


def eval_settings(
    script: GRPOScriptArguments,
    args: RookWorldGRPOConfig,
    samples: int,
    env_samples: int | None = None,
    **more,
):
    """The run's held-out eval: policy + env suites on dataset_test_split, greedy, the engine settings of the reward."""
    # train_data: the items' overlap with what this run trained on, said in eval.md
    return EvalSettings(
        **more, data=script.dataset_name, split=script.dataset_test_split, fen_width=script.fen_width,
        train_data=script.dataset_name, train_split=script.dataset_train_split, suites="policy,env",
        policy_samples=samples, env_samples=samples if env_samples is None else env_samples, seed=args.seed,
        max_new_tokens=max(args.max_completion_length, 96), device="cpu" if args.use_cpu else None,
        depth=script.engine_depth, nodes=script.engine_nodes, cache=engine_cache_path(script, args.output_dir),
        out=os.path.join(args.output_dir, "eval"),
    )  # fmt: skip


def before_after_eval(
    script: GRPOScriptArguments, args: RookWorldGRPOConfig, initial_model: str, final_dir: str, data=None
) -> str:
    """Evaluate the final model against the initial one (output_dir/eval/), draw the run's curves
    (output_dir/report/); the eval's markdown table."""
    from rookworld_trl.stages.eval import evaluate
    from rookworld_trl.stages.eval.charts import report, written_line

    settings = eval_settings(
        script, args, script.eval_samples, script.eval_env_samples, model=final_dir, baseline=initial_model
    )
    if script.tactics_dataset and script.eval_tactics_samples > 0:  # its test split: games trained on by none
        settings.suites += ",tactics"
        settings.tactics, settings.tactics_samples = script.tactics_dataset, script.eval_tactics_samples
    paths = evaluate.evaluate(settings, run_data=data)
    print(written_line(report(args.output_dir)))
    with open(paths["md"]) as f:
        return f.read()


def train(
    trainer: RookWorldGRPOTrainer,
    script: GRPOScriptArguments | None = None,
    initial_model: str | None = None,
    data=None,
) -> int:
    """Resume, train, save final (and push), then the before/after eval against `initial_model` on the main
    process; a process exit code."""
    args, script = trainer.args, script or GRPOScriptArguments()
    checkpoints.check_output_dir(args.output_dir)
    # the main process moves incomplete and damaged checkpoints aside first
    with trainer.accelerator.main_process_first():
        resume = checkpoints.resolve_resume(args.resume_from_checkpoint, args.output_dir)
    done = checkpoints.finished_step(resume, args.max_steps) if resume else None
    if checkpoints.is_finished(args.output_dir) and (done is not None or not resume):
        # never retrain over a finished run silently
        out, final = args.output_dir, os.path.join(args.output_dir, checkpoints.FINAL_DIR)
        on = "raise --max_steps" if resume else "--resume_from_checkpoint auto and a higher --max_steps"
        say(f"{out} is finished (max_steps {args.max_steps}): the final model is in {final}; nothing to train "
            f"({on} to train on; to start over, pass another --output_dir or remove {out})")  # fmt: skip
        return 0
    if done is not None:  # killed while saving final/ or evaluating: finish those, train no extra step
        say(f"{resume} is at max_steps ({done}) but final/ is incomplete: writing it")
        trainer.load_weights(resume)
        trainer.state = TrainerState.load_from_json(os.path.join(resume, TRAINER_STATE_NAME))
        start_step = done
    else:
        if resume:
            say(f"resuming from {resume} (step {checkpoints.checkpoint_step(resume)})")
        start_step = checkpoints.checkpoint_step(resume) if resume else 0
        try:
            trainer.train(resume_from_checkpoint=resume)
        except KeyboardInterrupt:  # a second Ctrl-C: mid-update weights are no step's, so nothing is saved
            return said_interrupted(trainer)
        if trainer.interrupt.step is not None:  # the first Ctrl-C: the step finished and was saved
            return said_interrupted(trainer)
    if trainer.halt_reason:
        print(f"rookworld grpo: stopped early. {trainer.halt_reason}", file=sys.stderr)
        return 1
    final = checkpoints.save_final(trainer)
    if trainer.accelerator.is_main_process:
        eval_md = None
        if initial_model and script.eval_samples > 0:
            eval_md = before_after_eval(script, args, initial_model, final, data)
        card = publish.model_card(args, trainer.state.global_step, initial_model, eval_md, script)
        card.save(os.path.join(final, "README.md"))
        # the run folder's README.md: our card in place of TRL's (written at each checkpoint, about [None])
        card.save(os.path.join(args.output_dir, "README.md"))
        checkpoints.mark_finished(args.output_dir, trainer.state.global_step)
        pushed = not trainer.publish_to_hub or publish.upload(args, final)
        from rookworld_trl.stages.eval.charts import run_summary

        print(run_summary(args.output_dir, start_step=start_step))
        return 0 if pushed else 1  # the run is finished on disk: `rookworld push` retries the upload
    return 0


def load_policy(args: RookWorldGRPOConfig, model_args: ModelConfig):
    """(model, tokenizer) as the recipe says; revision and attn_implementation go into `args.model_init_kwargs`
    too, from which TRL builds the reference model: both models load alike."""
    init = dict(args.model_init_kwargs or {})
    if model_args.model_revision:
        init["revision"] = model_args.model_revision
    if model_args.attn_implementation:
        init["attn_implementation"] = model_args.attn_implementation
    args.model_init_kwargs = init or None
    # a dtype in model_init_kwargs wins over ModelConfig's (float32 unless set); TRL's reference takes the policy's
    loading = init_kwargs({"trust_remote_code": args.trust_remote_code, "dtype": model_args.dtype, **init})
    return load_model_and_tokenizer(model_args.model_name_or_path, **loading)


def lora_targets(model_args: ModelConfig) -> ModelConfig:
    """TRL turns a one-item `lora_target_modules: [c_attn]` into "c_attn", which PEFT reads as a regex of the
    whole module name (matching nothing): a plain module name becomes the one-item list again."""
    target = model_args.lora_target_modules
    if isinstance(target, str) and target != "all-linear" and re.fullmatch(r"[\w.]+", target):
        model_args.lora_target_modules = [target]
    return model_args


def parse(argv: list[str] | None = None):
    """(GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig) from a recipe and --flags, checked, with the
    recipe's bundled paths resolved."""
    parser = stage_parser((GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig), "train")  # one-line errors
    script, args, model_args = parser.parse_args_and_config(argv)
    check_numbers(script, args)
    try:
        check_rewards(script, args)
    except ValueError as e:
        parser.error(str(e))
    checkpoints.check_output_dir(args.output_dir)  # before the engine cache or logs write there
    if args.push_to_hub:  # the network, the token and the repo name now, not after hours of training
        publish.check_hub(args)
    if not model_args.model_name_or_path or not script.dataset_name:
        parser.error("set model_name_or_path and dataset_name (in the recipe or as --flags)")
    # Recipes name the embedded model and data relative to the repository/package root: any cwd works.
    resolve_paths(model_args, "model_name_or_path")
    resolve_paths(script, "dataset_name", "tactics_dataset")
    # one run per output_dir; the checks above write nothing
    checkpoints.lock_run_dir(args.output_dir, "rookworld train")
    return script, args, model_args


def data_options(script: GRPOScriptArguments, args: RookWorldGRPOConfig, model):
    """The run's DataOptions (data/load.py), one set for every read of its data; the FEN width: fen_width,
    else the model's (its config.json), else the data's."""
    from rookworld_trl.data.load import DataOptions

    curve = bool(script.eval_every_steps) and not 0 < args.max_steps < script.eval_every_steps
    return DataOptions(
        source=script.dataset_name, train_split=script.dataset_train_split, test_split=script.dataset_test_split,
        mix_env_ratio=script.mix_env_ratio, seed=args.seed, max_samples=script.dataset_max_samples,
        fen_width=script.fen_width or trained_fen_width(model), skip_bad_rows=script.skip_bad_rows,
        num_proc=script.dataset_num_proc, puzzle_filter=script.puzzle_filter, exclude=tuple(script.exclude or ()),
        engine_limit=EngineLimit(depth=script.engine_depth, nodes=script.engine_nodes),
        engine_workers=script.engine_workers, engine_cache=engine_cache_path(script, args.output_dir),
        tactics=script.tactics_dataset, replay=args.replay_coef > 0, held_out=curve or script.eval_samples > 0,
        tactics_train=script.tactics_ratio > 0 or script.tactics_replay_coef > 0,
        tactics_test=script.eval_samples > 0 and script.eval_tactics_samples > 0,
    )  # fmt: skip


def load_run_data(script: GRPOScriptArguments, args: RookWorldGRPOConfig, model):
    """The run's RunData, read once; its FEN width recorded in the model's config and script.fen_width."""
    from rookworld_trl.data.load import run_data

    data = run_data(data_options(script, args, model))
    script.fen_width = train_at_fen_width(model, data.fen_width)
    return data


def build(argv: list[str] | None = None):
    """(trainer, engine pool, GRPOScriptArguments, ModelConfig, RunData) from a recipe and --flags; the caller
    closes the engine pool."""
    script, args, model_args = parse(argv)
    from accelerate import PartialState

    from rookworld_trl.stages.vllm_server import check_vllm_server

    # before anything loads: several machines share output_dir (checkpoints are written once, every rank
    # resumes from them), and a vLLM server answers (TRL would wait vllm_server_timeout, then a traceback)
    checkpoints.check_shared_output_dir(PartialState(), args.output_dir)
    check_vllm_server(args, model_args.model_name_or_path)
    model, tokenizer = load_policy(args, model_args)
    # one process labels a puzzle file or parses raw lines (data/read.py), the others read its cache
    with PartialState().main_process_first():
        data = load_run_data(script, args, model)
    cache = engine_cache_path(script, args.output_dir)  # the reward's and the evals' Stockfish
    if cache:
        os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
    limit = EngineLimit(depth=script.engine_depth, nodes=script.engine_nodes)
    engine = EnginePool(script.engine_workers, limit, multipv=MULTIPV, cache=cache)
    if "policy_reward" in script.reward_funcs or script.eval_samples > 0:
        engine.check()  # a broken STOCKFISH_PATH: one line before training, not inside its first step
    # registry names, or your own functions by dotted path, checked as TRL will call them
    reward_funcs = resolve_rewards(list(script.reward_funcs), args.reward_shaping, engine)
    selfplay = selfplay_for(script, args.seed, data.train)
    tactics = tactics_for(script, args.seed, data.tactics)
    trainer = RookWorldGRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=data.train, processing_class=tokenizer,
        peft_config=get_peft_config(lora_targets(model_args)), replay_dataset=data.replay, selfplay=selfplay,
        tactics=tactics, push_checkpoints=script.push_checkpoints,
        check_lengths="warn",  # a recipe's budget is the user's choice: said, not refused
    )  # fmt: skip
    use_compact_logs(trainer)  # one line per logging step; the whole dict goes to metrics.jsonl
    # TRL's epochs rule: say what -1 means before it runs (a streamed dataset has no length: TRL needs max_steps > 0)
    if args.max_steps < 0 and hasattr(data.train, "__len__"):
        say(epochs_line(args, len(data.train)))
    if script.eval_every_steps and 0 < args.max_steps < script.eval_every_steps:  # a curve of one point
        say(f"no learning curve: eval_every_steps {script.eval_every_steps} > max_steps {args.max_steps}")
    elif script.eval_every_steps:
        settings = eval_settings(script, args, script.eval_every_samples)
        trainer.add_callback(EvalCallback(trainer, data.held_out, engine, script.eval_every_steps, settings))
    return trainer, engine, script, model_args, data


class EvalCallback(TrainerCallback):
    """A greedy policy + environment evaluation before training and every `every_steps` optimizer steps, on
    the main process, logged as "eval/<suite>/<figure>"; items drawn once, P: positions analysed on first use.

        trainer.add_callback(EvalCallback(trainer, eval_dataset, pool, 50, EvalSettings(data=..., ...)))
    """

    def __init__(self, trainer, dataset, engine: EnginePool, every_steps: int, settings: EvalSettings):
        if every_steps < 1:
            raise ValueError("every_steps must be >= 1")
        self.trainer, self.engine, self.every_steps, self.settings = trainer, engine, every_steps, settings
        s = settings
        self.fens, self.env_prompts, _ = draw_items(dataset, s.policy_samples, s.env_samples, s.seed)
        prompts = [] if s.fen_width else column(dataset, "prompt")
        self.fen_width = s.fen_width or fen_width_of(prompts) or FEN_WIDTH  # as the data was written
        self.analyses: list[list[MoveEval]] | None = None

    def evaluate(self, model, tokenizer) -> dict[str, float]:
        if self.analyses is None:
            self.fens, self.analyses = analysed(self.fens, self.engine)
        s = self.settings
        generate = functools.partial(generate_completions, model, tokenizer, batch_size=s.batch_size)
        items = EvalItems(self.fens, self.analyses, self.env_prompts, fen_width=self.fen_width)
        suites = [name for name, rows in (("policy", self.fens), ("env", self.env_prompts)) if rows]
        results = run_suites(generate, items, suites, s, self.engine)
        return {
            f"eval/{suite}/{name}": m.value
            for suite, metrics in results.items()
            for name, m in metrics.items()
            if m.value is not None
        }

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:  # the curve's first point: the model before any update
            self.on_step_end(args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_steps or not state.is_world_process_zero:
            return
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        logs = self.evaluate(model, trainer.processing_class)
        # In eval mode GRPOTrainer.log merges its (empty) eval metrics and keeps the training averages for the
        # regular row; trainer.log clears control.should_log: restored, or this step's row is lost.
        was_training, should_log = trainer.model.training, control.should_log
        trainer.model.eval()
        try:
            trainer.log(logs)
        finally:
            trainer.model.train(was_training)
            control.should_log = should_log


def epochs_line(args, rows: int) -> str:
    """What `max_steps -1` means: num_train_epochs passes over the prompts, in optimizer steps.

    >>> from types import SimpleNamespace as A
    >>> epochs_line(A(max_steps=-1, num_train_epochs=3.0, per_device_train_batch_size=64, num_generations=8,
    ...               gradient_accumulation_steps=1, world_size=1), 1000)
    'max_steps -1: 3 epoch(s) of 1000 prompts at 8 prompts per step = 375 optimizer steps (--max_steps N sets the count)'
    """
    prompts = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    per_step = max(1, prompts // args.num_generations)
    steps = math.ceil(rows * args.num_train_epochs / per_step)
    return (
        f"max_steps -1: {args.num_train_epochs:g} epoch(s) of {rows} prompts at {per_step} prompts per step = "
        f"{steps} optimizer steps (--max_steps N sets the count)"
    )


def main(argv: list[str] | None = None) -> int:
    # the run's lock goes with it, also when it is refused halfway (a process exiting drops it too)
    with scoped():
        trainer, engine, script, model_args, data = build(argv)
        try:
            return train(trainer, script, initial_model=model_args.model_name_or_path, data=data)
        finally:
            engine.close()


if __name__ == "__main__":
    from rookworld_trl.common.entry import run_stage

    sys.exit(run_stage("train", main))
