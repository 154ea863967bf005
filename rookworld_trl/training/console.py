"""What a person reads on the console during GRPO and SFT: transformers' tqdm bar and, per logging step, one
compact line in place of TRL's dict of many keys (which still goes whole to metrics.jsonl and TensorBoard).

    step 12/150  reward 0.412  legal best move 58.1%  KL 0.0031  loss 0.043  2.6 s/step          (GRPO)
    step 10/20  loss 0.912  token accuracy 71.3%  5123 tokens/s                                   (SFT)
    step 10/20  held-out loss 0.887  token accuracy 72.0%                                         (SFT eval)
    step 30/150  held-out legal best move 61.5%  top 1 2.0%  B: loss 0.494  A: next state exact 32.0%  (GRPO eval)

    from rookworld_trl.training.console import use_compact_logs
    use_compact_logs(trainer)          # after the trainer is built
"""

from __future__ import annotations

from transformers.trainer_callback import PrinterCallback, ProgressCallback

from rookworld_trl.training.headline import shown_in

# (log key, label, format) in the order shown; a key absent or None is left out
FIELDS = (
    ("reward", "reward", "{:.3f}"),
    ("watch/b_legal", "legal best move", "{:.1%}"),
    ("kl", "KL", "{:.4f}"),
    ("loss", "loss", "{:.3f}"),
    ("step_time", "", "{:.1f} s/step"),
    ("mean_token_accuracy", "token accuracy", "{:.1%}"),  # SFT
    ("tokens_per_second", "", "{:.0f} tokens/s"),
)
EVAL_FIELDS = (
    ("eval_loss", "held-out loss", "{:.3f}"),
    ("eval_mean_token_accuracy", "token accuracy", "{:.1%}"),
)
# GRPO's learning-curve eval (stages/grpo.py EvalCallback; the whole dict goes to metrics.jsonl): training/headline.py
HELD_OUT_FIELDS = tuple(
    (f.key, ("held-out " if i == 0 else "") + f.short, "{:.1%}" if f.percent else "{:.3f}")
    for i, f in enumerate(shown_in("console"))
)
# (keys that mark a log entry's kind, its fields): training, SFT's held-out loss, GRPO's learning-curve eval
KINDS = (
    (("reward", "loss"), FIELDS),
    (("eval_loss",), EVAL_FIELDS),
    ((HELD_OUT_FIELDS[0][0],), HELD_OUT_FIELDS),
)
# the Trainer's end-of-training entry and SFT's format check: the stage's summary says them in words
SUMMARISED = ("train_loss", "format_check_samples")


def compact_line(logs: dict, step: int, max_steps: int) -> str | None:
    """The one line of a training or held-out log entry; "" for the end-of-training one; None for others."""
    if any(key in logs for key in SUMMARISED):
        return ""
    fields = next((f for keys, f in KINDS if any(key in logs for key in keys)), None)
    if fields is None:
        return None
    parts = [f"step {step}/{max_steps}"]
    for key, label, fmt in fields:
        if isinstance(logs.get(key), int | float):
            parts.append(f"{label} {fmt.format(logs[key])}".strip())
    return "  ".join(parts)


class CompactProgress(ProgressCallback):
    """transformers' progress bar whose log lines are compact_line's (other entries as before)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = compact_line(logs or {}, state.global_step, state.max_steps)
        if line is None:
            return super().on_log(args, state, control, logs=logs, **kwargs)
        if line and state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.write(line)


class CompactPrinter(PrinterCallback):
    """PrinterCallback (disable_tqdm: true) with compact_line's lines."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = compact_line(logs or {}, state.global_step, state.max_steps)
        if line is None:
            return super().on_log(args, state, control, logs=logs, **kwargs)
        if line and state.is_local_process_zero:
            print(line, flush=True)


def use_compact_logs(trainer) -> None:
    """Swap the trainer's console callback (bar or printer) for its compact one."""
    for old, new in ((ProgressCallback, CompactProgress), (PrinterCallback, CompactPrinter)):
        if any(type(c) is old for c in trainer.callback_handler.callbacks):
            trainer.remove_callback(old)
            trainer.add_callback(new)
