"""The GRPO stage under `accelerate launch` with each rank writing the sha256 of its final weights to
output_dir/rank<N>.sha256, so a test can check that every process ends with the same model.

    accelerate launch --config_file accelerate_configs/multi_cpu.yaml tests/multi_rank_stage.py --config ...
"""

import hashlib
import os
import sys

from transformers import TrainerCallback

from rookworld_trl import grpo
from rookworld_trl.cli import run_stage


class WeightsDigest(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
        with open(os.path.join(args.output_dir, f"rank{args.process_index}.sha256"), "w") as f:
            f.write(digest.hexdigest())


def train_with_digest(trainer, *args, **kwargs):
    trainer.add_callback(WeightsDigest())
    return plain_train(trainer, *args, **kwargs)


plain_train, grpo.train = grpo.train, train_with_digest
sys.exit(run_stage("train", grpo.main))
