"""Checkpoint tiers and resume modes for GRPO runs (used by rookworld_trl/grpo.py), and the metrics.jsonl
log of both training stages, which follows a resume.

A run's output_dir holds three tiers:

    output_dir/checkpoint-N/   regular, written by Trainer every save_steps and rotated by save_total_limit
    output_dir/stable/         the last regular checkpoint whose step was healthy (finite, KL below kl_warn);
                               hard-linked from checkpoint-N, so it survives rotation at no extra disk cost
    output_dir/final/          model + tokenizer at the end of training (save_final; push_final uploads it)

A checkpoint counts only once its completion marker exists: the marker is written (atomically) after every
file of the checkpoint, so a directory half-written by a killed process is never resumed from.

Resume modes (`--resume_from_checkpoint`): a path, "auto" (latest complete checkpoint-N in output_dir, or a
fresh start when there is none), "stable" or "recovery" (output_dir/stable).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import time

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

MARKER = "rookworld_complete.json"
STABLE_DIR = "stable"
FINAL_DIR = "final"
INCOMPLETE_DIR = "incomplete"
SUPERSEDED_DIR = "superseded"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def write_json_atomic(path: str, obj: dict) -> None:
    """Write JSON to a temp file, fsync, then rename: readers see the old file or the whole new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def mark_complete(checkpoint_dir: str, global_step: int) -> None:
    write_json_atomic(os.path.join(checkpoint_dir, MARKER), {"global_step": global_step, "time": time.time()})


def is_complete(checkpoint_dir: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint_dir, MARKER))


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """All checkpoint-N directories (complete or not) as (N, path), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _CHECKPOINT_RE.match(name)
        if m and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(m.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def latest_complete_checkpoint(output_dir: str) -> str | None:
    complete = [path for _, path in list_checkpoints(output_dir) if is_complete(path)]
    return complete[-1] if complete else None


def _move_aside(path: str, output_dir: str, folder: str, why: str) -> str:
    dest = os.path.join(output_dir, folder, f"{os.path.basename(path)}-{int(time.time())}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.replace(path, dest)
    logger.warning(f"checkpoint {path} {why}; moved to {dest}")
    return dest


def quarantine_incomplete(output_dir: str) -> list[str]:
    """Move checkpoint-N dirs without a marker to output_dir/incomplete/, out of Trainer's sight.

    Why move rather than ignore: Trainer's rotation counts every checkpoint-* dir, and a later save of the
    same step would write into the stale directory.
    """
    return [
        _move_aside(path, output_dir, INCOMPLETE_DIR, "has no completion marker (interrupted save)")
        for _, path in list_checkpoints(output_dir)
        if not is_complete(path)
    ]


def retire_later_checkpoints(output_dir: str, step: int) -> list[str]:
    """Move checkpoint-N with N > step to output_dir/superseded/: resuming from an earlier step abandons them,
    and a later 'auto' resume must not jump back onto the abandoned branch."""
    return [
        _move_aside(path, output_dir, SUPERSEDED_DIR, f"is past the resumed step {step}")
        for n, path in list_checkpoints(output_dir)
        if n > step
    ]


def checkpoint_step(checkpoint_dir: str) -> int:
    with open(os.path.join(checkpoint_dir, MARKER)) as f:
        return int(json.load(f)["global_step"])


def stable_checkpoint(output_dir: str) -> str | None:
    """output_dir/stable, or the previous copy kept while a new one was being swapped in."""
    for name in (STABLE_DIR, f"{STABLE_DIR}.old"):
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and is_complete(path):
            return path
    return None


def _hardlink_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not supported
        shutil.copy2(src, dst)


def promote_to_stable(checkpoint_dir: str, output_dir: str) -> str:
    """Make checkpoint_dir the stable checkpoint: build stable.tmp, then swap it in by renames.

    Hard links are safe because Trainer writes each checkpoint file once and never edits it in place.
    """
    stable = os.path.join(output_dir, STABLE_DIR)
    tmp, old = f"{stable}.tmp", f"{stable}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint_dir, tmp, copy_function=_hardlink_or_copy)
    if os.path.isdir(stable):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(stable, old)
    os.replace(tmp, stable)
    shutil.rmtree(old, ignore_errors=True)
    return stable


def replace_dir(tmp_dir: str, final_dir: str) -> None:
    """Swap a fully written tmp_dir into final_dir (removing an older final_dir)."""
    if os.path.isdir(final_dir):
        old = f"{final_dir}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        shutil.rmtree(old)
    os.replace(tmp_dir, final_dir)


def resolve_resume(mode: str | None, output_dir: str) -> str | None:
    """Turn a resume mode (None, "auto", "stable"/"recovery" or a path) into a checkpoint path or None.

    Call it on the main process first (it moves incomplete and superseded checkpoint dirs aside).
    """
    if not mode or str(mode).lower() in ("none", "false", "no"):
        return None
    mode = str(mode)
    if os.path.isdir(mode) and not is_complete(mode):  # checked before the quarantine below moves it
        raise ValueError(
            f"--resume_from_checkpoint {mode}: no completion marker ({MARKER}); the save was interrupted. "
            "Pick an earlier checkpoint or use --resume_from_checkpoint auto"
        )
    quarantine_incomplete(output_dir)
    if mode.lower() in ("auto", "true", "latest"):
        path = latest_complete_checkpoint(output_dir)
        if path is None:
            logger.warning(f"resume 'auto': no complete checkpoint in {output_dir}; starting from scratch")
            return None
    elif mode.lower() in ("stable", "recovery"):
        path = stable_checkpoint(output_dir)
        if path is None:
            raise FileNotFoundError(
                f"resume '{mode}': no stable checkpoint in {output_dir}/{STABLE_DIR}; "
                "use --resume_from_checkpoint auto or a checkpoint path"
            )
    elif not os.path.isdir(mode):
        raise FileNotFoundError(f"--resume_from_checkpoint {mode}: no such directory")
    else:
        path = mode
    retire_later_checkpoints(output_dir, checkpoint_step(path))
    return path


def save_final(trainer) -> str:
    """Model + tokenizer to output_dir/final, written to a temp dir first and renamed into place."""
    final = os.path.join(trainer.args.output_dir, FINAL_DIR)
    tmp = f"{final}.tmp"
    if trainer.args.should_save:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(tmp)  # on every rank: DeepSpeed/FSDP gather the weights collectively
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        replace_dir(tmp, final)
    return final


def write_model_card(trainer, final_dir: str, base_model: str | None, eval_md: str | None) -> str:
    """README.md in final_dir: base model, data, the recipe's GRPO settings, and the eval table if any."""
    args = trainer.args
    settings = {
        k: getattr(args, k)
        for k in ("reward_funcs", "reward_weights", "reward_shaping", "mix_env_ratio", "engine_depth")
        + ("learning_rate", "beta", "adaptive_kl", "kl_target", "num_generations", "temperature", "epsilon")
        + ("loss_type", "max_completion_length", "per_device_train_batch_size", "max_steps", "seed")
        if hasattr(args, k)
    }
    lines = [
        "---",
        "library_name: transformers",
        "tags: [rookworld, chess, grpo, trl, rlvr]",
        *([f"base_model: {base_model}"] if base_model and not os.path.isdir(base_model) else []),
        "---",
        f"# {os.path.basename(os.path.abspath(args.output_dir))}",
        "",
        f"GRPO fine-tune of `{base_model}` with RookWorld-TRL: rewards verified by python-chess (A: task) "
        "and Stockfish (P: task).",
        "",
        f"- data: `{getattr(args, 'dataset_path', None)}` (split `{getattr(args, 'dataset_split', 'train')}`)",
        f"- steps trained: {trainer.state.global_step}",
        "",
        "## Settings",
        "",
        *[f"- `{k}`: {v}" for k, v in settings.items()],
        "",
    ]
    if eval_md:
        lines += ["## Held-out evaluation (this model vs. the base model)", "", eval_md]
    path = os.path.join(final_dir, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def push_final(trainer, final_dir: str) -> None:
    """Upload output_dir/final (with its model card) to args.hub_model_id; a clear message on failure."""
    if not trainer.args.should_save:
        return
    from huggingface_hub import upload_folder

    try:
        upload_folder(
            repo_id=trainer.hub_model_id, folder_path=final_dir, commit_message="RookWorld GRPO final"
        )
    except Exception as e:  # network, auth, offline: the local model is safe, say so instead of a traceback
        print(
            f"push_to_hub failed ({type(e).__name__}: {e}); the model is saved in {final_dir}",
            file=sys.stderr,
        )


class JSONLMetricsCallback(TrainerCallback):
    """Every log entry as one JSON line; a resumed run first drops the lines past its checkpoint's step."""

    def __init__(self, path: str):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not os.path.isfile(self.path):
            return
        with open(self.path) as f:
            rows = [
                line for line in f if line.strip() and json.loads(line).get("step", 0) <= state.global_step
            ]
        with open(f"{self.path}.tmp", "w") as f:
            f.writelines(rows)
        os.replace(f"{self.path}.tmp", self.path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in logs.items()}
        row = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **clean}
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
