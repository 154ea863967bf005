"""EvalCallback: a greedy policy + environment evaluation of the model being trained, before training and every
N optimizer steps, through the suites of `rookworld eval` (rookworld_trl/stages/eval/evaluate.py: run_suites); its
figures are the run's learning curve (report/learning_curve.png).
"""

from __future__ import annotations

import functools

from transformers import TrainerCallback

from rookworld_trl.chess.engine import EnginePool, MoveEval
from rookworld_trl.chess.formats import FEN_WIDTH, fen_width_of
from rookworld_trl.data.layout import column
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.stages.eval.evaluate import EvalItems, EvalSettings, analysed, draw_items, run_suites


class EvalCallback(TrainerCallback):
    """A greedy policy + environment evaluation before training and every `every_steps` optimizer steps.

    The figures go through `trainer.log` as "eval/<suite>/<figure>" and so land in the metrics JSONL and
    TensorBoard. Items are drawn once from `dataset` (columns task, prompt, optionally kind) with the
    settings' seed and sample sizes; the engine analyses the P: positions once, on first use. Only the main
    process evaluates.

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
        # Log with the model in eval mode: GRPOTrainer.log then merges its (empty) eval metrics, and the
        # training averages it has gathered since the last log stay for the regular log row. trainer.log
        # also clears control.should_log (CallbackHandler.on_log): restore it, or this step's row is lost.
        was_training, should_log = trainer.model.training, control.should_log
        trainer.model.eval()
        try:
            trainer.log(logs)
        finally:
            trainer.model.train(was_training)
            control.should_log = should_log
