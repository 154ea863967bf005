"""The TRL seam (training/trl_compat.py) checked by version and by behaviour, not by reading TRL's source: every
attribute of TRL's trainer that grpo/ reads is in TRL_ATTRIBUTES and a built trainer has it (a name TRL drops
fails `check_trainer`, naming it); a generation batch has the OUTPUT_KEYS grpo/ reads; TRL's loss is linear in
the advantages (LINEAR_IN_ADVANTAGES); the private arguments we take are bound by name. The loss normalisation
per loss_type is compared with TRL's own loss in tests/test_rl_options.py (test_kl_term_is_normalised_as_trls_own).

    .venv/bin/pytest tests/test_trl_seam.py
"""

import re
from pathlib import Path

import pytest
import torch
from tiny_grpo import completion_texts, file_reward, generation_rows, load_tiny, make_trainer, tiny_dataset
from trl import GRPOConfig, GRPOTrainer

from rookworld_trl.training import trl_compat

pytestmark = pytest.mark.integration

GRPO = Path(__file__).resolve().parent.parent / "rookworld_trl" / "grpo"
# Names grpo/ reads on its own objects (a snapshot's optimizer, a fault's reset, a config field) that TRL
# happens to set on its trainer too
OWN = {"reset", "pad_to_multiple_of", "add_callback"}
# `trainer.x` and `self.x` (and `self._trainer.x`)
READ = re.compile(r"(?<![\w.])(?:trainer|self(?:\._trainer)?)\.([a-zA-Z_]\w*)")


@pytest.fixture(scope="module")
def trl_names(model_dir, tmp_path_factory) -> set[str]:
    """What a plain TRL GRPOTrainer has once built (its attributes and its class's properties), and what Trainer
    sets once training starts (trl_compat.LATER)."""
    model, tokenizer = load_tiny(model_dir)
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("plain")), per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=8, use_cpu=True, bf16=False, report_to=[])  # fmt: skip
    plain = GRPOTrainer(model, [file_reward], args, train_dataset=tiny_dataset(), processing_class=tokenizer)
    properties = {n for n in dir(GRPOTrainer) if isinstance(getattr(GRPOTrainer, n), property)}
    return set(vars(plain)) | properties | trl_compat.LATER


def trl_attributes_read(trl_names) -> dict[str, set[str]]:
    read: dict[str, set[str]] = {}
    for path in sorted(GRPO.rglob("*.py")):
        for name in READ.findall(path.read_text()):
            if not name.startswith("_") and name in trl_names:
                read.setdefault(name, set()).add(path.name)
    return read


def test_every_trl_attribute_grpo_reads_is_in_the_registry(trl_names):
    unlisted = {
        n: sorted(f)
        for n, f in trl_attributes_read(trl_names).items()
        if n not in OWN.union(trl_compat.TRL_ATTRIBUTES)
    }
    assert not unlisted, f"list these in trl_compat.TRL_ATTRIBUTES with why: {unlisted}"


def test_the_registry_lists_only_what_grpo_reads(trl_names):
    assert set(trl_compat.TRL_ATTRIBUTES) <= set(trl_attributes_read(trl_names))


def test_an_attribute_trl_drops_fails_the_built_trainers_check(model_dir, tmp_path, monkeypatch):
    trainer = make_trainer(model_dir, tmp_path)
    trl_compat.check_trainer(trainer)
    monkeypatch.setitem(trl_compat.TRL_ATTRIBUTES, "no_such_attribute", "a test")
    with pytest.raises(RuntimeError, match=r"self\.no_such_attribute .* pyproject.toml"):
        trl_compat.check_trainer(trainer)


# TRL writes it under vLLM only (not on this machine): our sampler's correction writes it (grpo/rollout.py correct_for_sampler),
# TRL's vespo loss and the guard read it: tests/test_decoding.py's importance-sampling tests
VLLM_ONLY = {"importance_sampling_ratio"}


def test_a_generation_batch_has_the_keys_grpo_reads(model_dir, tmp_path):
    """With two iterations per generation TRL keeps the old log-probs: every key of OUTPUT_KEYS but vLLM's."""
    trainer = make_trainer(model_dir, tmp_path, num_iterations=2)
    trainer.model.train()
    output = trainer.score(generation_rows(trainer, 1))
    missing = set(trl_compat.OUTPUT_KEYS) - VLLM_ONLY - set(output)
    assert not missing, f"TRL's generation batch no longer has {sorted(missing)}"


def test_trls_loss_is_linear_in_the_advantages(model_dir, tmp_path):
    """What our sampler's importance-sampling correction relies on (LINEAR_IN_ADVANTAGES): TRL's loss of a batch
    whose advantages are scaled by a non-negative factor is the loss scaled by it (at beta 0, one micro-batch)."""
    trainer = make_trainer(model_dir, tmp_path, beta=0.0)
    trainer.model.train()
    inputs = trainer.score(generation_rows(trainer, 1))
    rows = len(inputs["advantages"])
    inputs["advantages"] = torch.arange(1.0, rows + 1) / rows  # uncentred: a group's loss is not 0
    trainer.current_gradient_accumulation_steps = 1  # as Trainer sets it when training starts
    with torch.no_grad():
        once = GRPOTrainer.compute_loss(trainer, trainer.model, inputs)
        twice = GRPOTrainer.compute_loss(
            trainer, trainer.model, {**inputs, "advantages": 2 * inputs["advantages"]}
        )
    assert once.abs().item() > 0
    assert twice.item() == pytest.approx(2 * once.item(), rel=1e-5), trl_compat.LINEAR_IN_ADVANTAGES


def test_private_arguments_are_taken_by_name_whatever_way_trl_passes_them(model_dir, tmp_path):
    """_calculate_rewards' prompts reach the step (trl_scored) whether TRL passes them by position or keyword."""
    trainer = make_trainer(model_dir, tmp_path)
    args = ([{}], ["P: a"], ["b"], [[1]])
    by_position = trl_compat.argument("_calculate_rewards", "prompts", trainer, args, {})
    by_keyword = trl_compat.argument("_calculate_rewards", "prompts", trainer, args[:1], {"prompts": ["P: a"],
                                     "completions": ["b"], "completion_ids_list": [[1]]})  # fmt: skip
    assert by_position == by_keyword == ["P: a"]


def test_the_step_gets_trls_rewards_and_prompts_as_values(model_dir, tmp_path):
    """trl_scored hands back what TRL scored the batch by; nothing of it stays on the trainer."""
    trainer = make_trainer(model_dir, tmp_path)
    rows = generation_rows(trainer, 1)
    output, rewards, prompts = trainer.trl_scored(rows)
    assert rewards.shape == (len(rows), 1) and prompts == [row["prompt"] for row in rows]
    expected = torch.tensor(file_reward(None, completion_texts(trainer, output)))
    assert torch.allclose(rewards[:, 0], expected, atol=1e-6)
    assert trainer._scored is None
