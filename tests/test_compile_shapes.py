"""Fixed shapes under torch.compile, checked without compiling (fast): the config pads every scored batch to a
multiple of 128 tokens (TRL's pad_to_multiple_of) whenever the model will be compiled, and the scoring seam
hands TRL's log-prob kernel every position (a fixed count) instead of the completion tokens only (a count that
changes every batch), with the same log-probs. tests/test_compile.py (slow) runs the compiled GPU recipe.

    .venv/bin/pytest tests/test_compile_shapes.py
"""

from __future__ import annotations

import pytest
import torch
from tiny_grpo import make_trainer
from trl.trainer import utils as trl_utils

from rookworld_trl.grpo.config import COMPILE_PAD, RookWorldGRPOConfig


def config(tmp_path, **kwargs) -> RookWorldGRPOConfig:
    return RookWorldGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], **kwargs)


def test_compiling_pads_to_fixed_shapes_and_eager_does_not(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND", raising=False)
    assert config(tmp_path).pad_to_multiple_of is None
    assert config(tmp_path, pad_to_multiple_of=64, torch_compile=True).pad_to_multiple_of == 64  # the user's
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")  # what accelerate passes for a dynamo config
    assert config(tmp_path).pad_to_multiple_of == COMPILE_PAD
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    assert config(tmp_path).pad_to_multiple_of is None


@pytest.mark.integration
def test_compiled_scoring_scores_every_position_with_the_same_log_probs(model_dir, tmp_path, monkeypatch):
    trainer = make_trainer(model_dir, tmp_path)
    seen = []
    kernel = (
        trl_utils._ChunkedLogProbFunction
    )  # TRL's chunked log-prob autograd function, as its utils name it
    apply = kernel.apply

    def spy(hidden, *args):  # the real kernel runs; the spy notes how many positions it was handed
        seen.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(kernel, "apply", spy)
    torch.manual_seed(0)
    ids = torch.randint(1, 30, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    mask[1, -4:] = 0  # a short completion
    compact = trainer.scoring_logps(ids, mask, 6)
    trainer.compiled_scoring = True
    full = trainer.scoring_logps(ids, mask, 6)
    assert seen[1] == 4 * 11 and seen[0] < seen[1], seen  # every position: B x (L - 1), whatever the mask
    assert torch.allclose(compact, full, atol=1e-6)
