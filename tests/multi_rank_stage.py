"""The GRPO stage under `accelerate launch` (or torchrun), instrumented: each rank writes
output_dir/rank<N>.json at the end of training with
  sha256    of its final weights (every process must end with the same model),
  scored    the number of P: completions its own grader graded, per call (its share of the batch; field credit
            grades the same rows again from the memo),
  positions the positions it graded (the ranks' shares are different prompts),
  graphs    torch.compile's count of compiled graphs after each optimizer step (compilation must settle),
  selfplay_buffer  the self-play buffer's FENs at the end (None without self-play; every rank holds the same),
  nan_recoveries   the step guard's rollbacks (the trainer's RunState.nan_recoveries).

ROOKWORLD_TEST_SPIKE=RANK:STEP:SCALE makes rank RANK's step guard see its loss of step STEP times SCALE (the
loss the backward uses is untouched): a loss spike on one rank only, which every rank must roll back together.

    accelerate launch --config_file accelerate_configs/multi_cpu.yaml tests/multi_rank_stage.py --config ...
"""

import hashlib
import json
import os
import sys

from torch._dynamo.utils import counters
from transformers import TrainerCallback

from rookworld_trl.common.entry import run_stage
from rookworld_trl.stages import grpo

RECORD = {"scored": [], "positions": set(), "graphs": []}


class RankRecord(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer
        spike = os.environ.get("ROOKWORLD_TEST_SPIKE")
        if spike:
            rank, step, scale = spike.split(":")
            if trainer.accelerator.process_index == int(rank):
                self.inject(int(step), float(scale))

    def inject(self, step: int, scale: float) -> None:
        faults, trainer = self.trainer.guard.faults, self.trainer
        record_step = faults.record_step

        def record_scaled(loss, kl_values):
            if trainer.state.global_step + 1 == step:
                loss = loss * scale
            record_step(loss, kl_values)

        faults.record_step = record_scaled

    def on_step_end(self, args, state, control, **kwargs):
        RECORD["graphs"].append(counters["stats"]["unique_graphs"])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
        record = {**RECORD, "sha256": digest.hexdigest(), "positions": sorted(RECORD["positions"])}
        selfplay = getattr(self.trainer, "selfplay", None)
        record["selfplay_buffer"] = selfplay.buffer.fens() if selfplay is not None else None
        record["nan_recoveries"] = self.trainer.run.nan_recoveries
        with open(os.path.join(args.output_dir, f"rank{args.process_index}.json"), "w") as f:
            json.dump(record, f)


def recording(grader):
    score = grader.score

    def score_and_record(fens, completions, labels=None):
        RECORD["scored"].append(len(completions))
        RECORD["positions"].update(fens)
        return score(fens, completions, labels)

    grader.score = score_and_record


def resolve_and_record(*args, **kwargs):
    funcs = plain_resolve(*args, **kwargs)
    for f in funcs:
        if hasattr(f, "grader"):  # the policy reward
            recording(f.grader)
    return funcs


def train_and_record(trainer, *args, **kwargs):
    trainer.add_callback(RankRecord(trainer))
    return plain_train(trainer, *args, **kwargs)


plain_train, grpo.train = grpo.train, train_and_record
plain_resolve, grpo.resolve_rewards = grpo.resolve_rewards, resolve_and_record
sys.exit(run_stage("train", grpo.main))
