"""GRPO scoring: shared prompts (rookworld_trl/model/shared_prefix.py) against TRL's own forward over every row, and
the LM head on completion tokens only (trl_compat)."""

import contextlib

import pytest
import torch
from tiny_grpo import make_trainer

from rookworld_trl.model import shared_prefix


def scored(model_dir, tmp_path, shared: bool, beta: float = 0.0):
    """Log-probs, entropies and gradients of one sampled batch (4 prompts x 4 samples), as TRL scores it."""
    trainer = make_trainer(model_dir, tmp_path / str(shared), shared_prefix_scoring=shared, beta=beta,
                           per_device_train_batch_size=16, max_completion_length=12)  # fmt: skip
    torch.manual_seed(0)
    trainer.model.train()
    out = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(16)])
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    logps, entropies = trainer._get_per_token_logps_and_entropies(
        trainer.model, ids, mask, out["completion_ids"].size(1), compute_entropy=True
    )[:2]
    (logps * out["completion_mask"]).sum().backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    return logps.detach(), entropies, grads, out["completion_mask"].bool(), ids


def test_same_logprobs_entropies_and_gradients_as_trls_forward(model_dir, tmp_path, monkeypatch):
    used = []
    forward = shared_prefix.shared_forward
    monkeypatch.setattr(shared_prefix, "shared_forward", lambda *a: used.append(1) or forward(*a))
    logps, entropies, grads, mask, ids = scored(model_dir, tmp_path, shared=True)
    assert used  # the shared path ran
    ref_logps, ref_entropies, ref_grads, ref_mask, ref_ids = scored(model_dir, tmp_path, shared=False)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)  # the same sampled batch
    assert (
        len({tuple(r) for r in ids[:, : ids.size(1) - mask.size(1)].tolist()}) == 4
    )  # 4 prompts, 4 rows each
    assert (logps - ref_logps).abs()[mask].max() < 1e-5
    assert (entropies - ref_entropies).abs()[mask].max() < 1e-5
    for name, grad in ref_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_rows_without_a_repeated_prompt_take_trls_forward(model_dir):
    from tiny_grpo import load_tiny

    model, tokenizer = load_tiny(model_dir)
    shared_prefix.use_shared_prefix(model)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    with shared_prefix.prompt_length(2):
        assert (
            shared_prefix.shared_forward(model.transformer, ids, mask, torch.arange(4).expand(2, 4), 2)
            is None
        )
    with pytest.raises(ValueError, match="needs a GPT-2"):
        shared_prefix.use_shared_prefix(torch.nn.Linear(2, 2))


def test_cpu_scoring_runs_the_lm_head_on_completion_tokens_only(model_dir, tmp_path, monkeypatch):
    """Off Triton, TRL's fused LM head scores every position; trl_compat asks it for the labelled ones only
    (SCORED_POSITIONS): the completion tokens, with the same log-probs, entropies and gradients."""
    from trl.trainer import utils as trl_utils

    from rookworld_trl.training import trl_compat

    scored_rows, apply = [], trl_utils._ChunkedLogProbFunction.apply

    def counted(hidden, *args):
        scored_rows.append(len(hidden))
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counted)
    logps, entropies, grads, mask, ids = scored(model_dir, tmp_path / "compact", shared=True)
    assert scored_rows[-1] == mask.sum() < ids.numel() / 2
    # TRL's own choice off Triton: every position
    monkeypatch.setattr(trl_compat.SCORED_POSITIONS, "replaced_by", lambda *args: contextlib.nullcontext())
    every_logps, every_entropies, every_grads, _, every_ids = scored(
        model_dir, tmp_path / "every", shared=True
    )
    assert scored_rows[-1] == every_ids.size(0) * (every_ids.size(1) - 1) and torch.equal(ids, every_ids)
    assert (logps - every_logps).abs()[mask].max() < 1e-6
    assert (entropies - every_entropies).abs()[mask].max() < 1e-6
    for name, grad in every_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-6, rtol=1e-5), name
