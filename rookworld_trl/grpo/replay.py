"""Supervised replay inside GRPO, as InstructGPT's PPO-ptx: each micro-batch adds `replay_coef` x the mean
NLL of reference completions of training rows to the GRPO loss.

Why: the A: reward gives a near miss 0.8 of an exact state, so GRPO alone lets exact A: next states drift; the A:
truth is python-chess's, so replaying it costs no labels. Switched on by `replay_coef > 0` in the GRPO recipe.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from rookworld_trl.common.errors import UserError

TASKS = ("A", "P", "all")
TARGETS = ("completion", "best_move", "moves")  # what of a row's completion the loss is on


class Replay:
    """Draws right-padded (input_ids, attention_mask, labels) batches of training rows of one task, the loss on
    the completion and EOS only; a batch is a function of (seed, micro-batch counter, rank), so a resumed run
    replays what an uninterrupted one would have. `target` "best_move": the loss only on the move after "B:";
    "moves": on the listed moves and B:'s, the E: evaluations read, not taught. The trainer adds `coef` x its
    NLL to each training micro-batch's loss, logged as `metric`."""

    def __init__(self, dataset, task: str, tokenizer, batch_size: int, seed: int, rank: int = 0,
                 pad_to_multiple_of: int | None = None, target: str = "completion", coef: float = 1.0,
                 metric: str = "replay_loss"):  # fmt: skip
        if task not in TASKS:
            raise ValueError(f"replay_task must be one of {TASKS}, got {task!r}")
        if target not in TARGETS:
            raise ValueError(f"the replay target must be one of {TARGETS}, got {target!r}")
        if "completion" not in dataset.column_names:
            raise ValueError("replay needs a `completion` column in the training data")
        name = "task" if "task" in dataset.column_names else "prompt"
        # "P"/"A", or a prompt's first letter; one Arrow read of the column, not row by row
        tasks = [t[:1] for t in dataset.select_columns([name]).to_dict()[name]]
        keep = [i for i, t in enumerate(tasks) if task == "all" or t == task]
        if not keep:
            raise ValueError(
                f"replay_task={task!r}: the training data has no rows of that task; set --replay_coef 0 (no "
                "supervised replay) or --replay_task to a task the data has (P, A or all)"
            )
        # the rows are read when drawn: a split of millions stays on disk (memory-mapped), not in Python strings
        self.rows = dataset.select(np.array(keep, dtype=np.int64)).select_columns(["prompt", "completion"])
        self.tokenizer, self.batch_size, self.seed, self.rank = tokenizer, batch_size, seed, rank
        self.multiple, self.target = pad_to_multiple_of or 1, target
        self.coef, self.metric = coef, metric

    def batch(self, step: int, device) -> dict[str, torch.Tensor]:
        rng = random.Random(f"{self.seed}/{self.rank}/{step}")
        drawn = self.rows[rng.sample(range(len(self.rows)), min(self.batch_size, len(self.rows)))]
        rows = [self.row(p, c) for p, c in zip(drawn["prompt"], drawn["completion"], strict=True)]
        tok, eos = self.tokenizer, self.tokenizer.eos_token_id
        width = -(-max(len(ids) for ids, _ in rows) // self.multiple) * self.multiple
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        return {k: v.to(device) for k, v in batch.items()}

    def row(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """(ids, labels) of one replayed row: labels -100 on the prompt and on what the target reads, not teaches."""
        tok, eos = self.tokenizer, self.tokenizer.eos_token_id
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        if self.target == "moves":
            enc = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
            lo, hi = completion.find("E:"), completion.rfind("B:")
            labels = [
                -100 if lo >= 0 and a < hi and b > lo else i
                for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
            ]
            return p + enc["input_ids"] + [eos], [-100] * len(p) + labels + [eos]
        cut = completion.rfind("B:") + 2 if self.target == "best_move" else 0
        head, taught = (completion[:cut], completion[cut:]) if cut >= 2 else ("", completion)
        if head:  # best_move: the list before B: is read, not taught
            p += tok(head, add_special_tokens=False)["input_ids"]
        c = tok(taught, add_special_tokens=False)["input_ids"] + [eos]
        return p + c, [-100] * len(p) + c


def replay_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean NLL of the labelled tokens (the model shifts the labels itself)."""
    return model(**batch).loss


def check_replay(config) -> None:
    if config.replay_task not in TASKS:
        raise ValueError(f"replay_task must be one of {TASKS}, got {config.replay_task!r}")
    if config.replay_coef < 0.0 or config.replay_batch_size < 1:
        raise ValueError(
            f"need replay_coef >= 0 and replay_batch_size >= 1, got {config.replay_coef}, {config.replay_batch_size}"
        )


def replay_for(trainer, rows) -> Replay | None:
    """The run's Replay of `rows` (the whole train split) when `replay_coef` > 0, else None."""

    a = trainer.args
    if a.replay_coef <= 0:
        return None
    names = getattr(rows, "column_names", None) or []
    if "completion" not in names:  # TRL-style data: prompts only
        raise UserError(
            f"replay_coef={a.replay_coef} needs rows with a `completion` column to imitate, and the training data "
            f"has {names}: set replay_coef=0 (no supervised replay) or pass replay_dataset= (rows with `prompt` "
            "and `completion`, e.g. load_rookworld_dataset(assets.DATA))"
        )
    return Replay(rows, a.replay_task, trainer.processing_class, a.replay_batch_size, a.seed, a.process_index,
                  a.pad_to_multiple_of, coef=a.replay_coef)  # fmt: skip
