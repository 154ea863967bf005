"""Tests of rookworld_trl.grpo on a tiny random GPT-2 (2 layers, 64 dims, a character tokenizer) on CPU.

    .venv/bin/pytest tests/test_grpo.py tests/test_checkpoints.py

The reward is a small deterministic stand-in (fraction of 'e' in the completion) so that the GRPO mechanics
are tested without the chess rewards. The tiny setup is tests/tiny_grpo.py.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from datasets import Dataset
from tiny_grpo import (
    file_reward,
    load_tiny,
    make_tiny_model_dir,
    make_trainer,
    tiny_config,
    tiny_dataset,
    train_logs,
    trainable,
)
from transformers import TrainerCallback

from rookworld_trl.grpo.replay import Replay
from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer, warmup_cosine_linear

# ---- config ----


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(adaptive_kl=True, beta=0.0), "adaptive_kl needs beta > 0"),
        (dict(adaptive_kl=True, beta=0.01, beta_min=0.1), "beta_min <= beta"),
        (dict(kl_warn=60.0, kl_stop=50.0), "kl_warn < kl_stop"),
        (dict(nan_lr_factor=0.0), "nan_lr_factor"),
        (dict(ref_model_device="gpu:1"), "ref_model_device 'gpu:1': expected a device of type"),
        (dict(ref_model_device="cuda:1", beta=0.01, sync_ref_model=True), "sync_ref_model"),
        (dict(lr_schedule="cosine_forever"), "lr_schedule"),
        (dict(replay_coef=-1.0), "replay_coef >= 0"),
        (dict(replay_task="B"), "replay_task must be"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides)


def test_reward_funcs_are_checked_against_the_config(tmp_path):
    from rookworld_trl.grpo.config import GRPOScriptArguments, check_rewards

    with pytest.raises(ValueError, match="reward_funcs is empty"):
        GRPOScriptArguments(reward_funcs=[])
    with pytest.raises(ValueError, match="reward_weights has 1 entries, reward_funcs 2"):
        check_rewards(
            GRPOScriptArguments(reward_funcs=["a", "b"]), tiny_config(tmp_path, reward_weights=[1.0])
        )
    with pytest.raises(ValueError, match="field_credit needs policy_reward"):
        check_rewards(
            GRPOScriptArguments(reward_funcs=["env_reward"]), tiny_config(tmp_path, field_credit=True)
        )


# ---- plain training and observability ----


def test_trains_two_steps_and_logs_our_metrics(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path)
    before = trainable(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 2 and trainer.halt_reason is None
    after = trainable(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before), "no weight moved"
    logs = train_logs(trainer)
    for key in ("beta", "nan_recoveries", "memory/cpu_peak_rss_gib", "step_time", "frac_reward_zero_std",
                "rewards/file_reward/mean", "rewards/file_reward/std"):  # fmt: skip
        assert all(key in row for row in logs), key
    assert logs[0]["memory/cpu_peak_rss_gib"] > 0.01
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert rows[0]["beta"] == 0.0 and "reward" in rows[0]


# ---- supervised replay ----


def with_completions(ds: Dataset) -> Dataset:
    return ds.add_column("completion", [" e2e4 B: e2e4" if t == "P" else "a8+0.001+0+0" for t in ds["task"]])


def test_replay_batches_label_the_completion_of_the_chosen_task_only(model_dir):

    _, tokenizer = load_tiny(model_dir)
    replay = Replay(with_completions(tiny_dataset()), "A", tokenizer, batch_size=3, seed=0)
    batch = replay.batch(step=5, device="cpu")
    assert torch.equal(batch["input_ids"], replay.batch(step=5, device="cpu")["input_ids"])  # resumable
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        text = tokenizer.decode(ids[mask.bool()])
        assert text.startswith("A: ") and text.endswith("a8+0.001+0+0<|endoftext|>")
        labelled = tokenizer.decode(ids[labels != -100])
        assert labelled == "a8+0.001+0+0<|endoftext|>"  # the prompt and the padding carry no loss
    with pytest.raises(ValueError, match="no rows of that task"):
        Replay(with_completions(tiny_dataset().filter(lambda r: r["task"] == "P")), "A", tokenizer, 2, 0)


def test_replay_of_the_best_move_labels_the_move_after_b_only(model_dir):

    _, tokenizer = load_tiny(model_dir)
    rows = with_completions(tiny_dataset())
    replay = Replay(rows, "P", tokenizer, batch_size=3, seed=0, target="best_move")
    batch = replay.batch(step=1, device="cpu")
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        assert tokenizer.decode(ids[mask.bool()]).endswith(
            " e2e4 B: e2e4<|endoftext|>"
        )  # the whole row is read
        assert tokenizer.decode(ids[labels != -100]) == " e2e4<|endoftext|>"  # the move after B: is taught
    whole = Replay(rows, "P", tokenizer, batch_size=3, seed=0).batch(step=1, device="cpu")
    assert torch.equal(whole["input_ids"], batch["input_ids"])  # the same tokens, fewer of them labelled
    with pytest.raises(ValueError, match="replay target"):
        Replay(rows, "P", tokenizer, 2, 0, target="move")


def test_replay_of_the_moves_reads_the_evaluations_without_teaching_them(model_dir):

    _, tokenizer = load_tiny(model_dir)
    rows = with_completions(tiny_dataset())
    label = " e2e4 d2d4      E: 0.31 0.25      B: e2e4"
    rows = rows.map(lambda r: {"completion": label if r["task"] == "P" else r["completion"]})
    batch = Replay(rows, "P", tokenizer, batch_size=3, seed=0, target="moves").batch(step=1, device="cpu")
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        assert tokenizer.decode(ids[mask.bool()]).endswith(label + "<|endoftext|>")  # the whole row is read
        taught = tokenizer.decode(ids[labels != -100])
        assert "e2e4 d2d4" in taught and taught.endswith(": e2e4<|endoftext|>")  # the list and B:'s move
        assert "0.31" not in taught and "0.25" not in taught and "E" not in taught  # not the evaluations


def test_replay_loss_joins_the_grpo_loss(model_dir, tmp_path):
    model, tokenizer = load_tiny(model_dir)
    rows = with_completions(tiny_dataset())
    trainer = RookWorldGRPOTrainer(
        model=model,
        reward_funcs=[file_reward],
        args=tiny_config(tmp_path, replay_coef=1.0, replay_batch_size=2),
        train_dataset=rows.filter(lambda r: r["task"] == "P"),  # mix_env_ratio 0: P: prompts only ...
        replay_dataset=rows,  # ... while A: truths are replayed from the whole split
        processing_class=tokenizer,
        check_lengths=False,  # the tiny model's 8-token budget cuts the replayed truths on purpose
    )
    assert {p[:2] for p in trainer.replay.rows["prompt"]} == {"A:"}
    trainer.train()
    losses = [row["replay_loss"] for row in train_logs(trainer)]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0.5 for x in losses)  # a random model's NLL


def constant_reward(prompts, completions, **kwargs):
    """Equal rewards: zero advantages, so TRL's loss and gradient are exactly zero and replay is all there is."""
    return [0.5] * len(completions)


class ReplayProbe(RookWorldGRPOTrainer):
    """Records the loss each micro-batch returns and the replay rows it drew (both still computed as usual)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        replay = self.replay
        self.losses, self.replayed, draw = [], [], replay.batch
        replay.batch = lambda step, device: self.replayed.append(draw(step, device)) or self.replayed[-1]

    def training_step(self, model, inputs, num_items_in_batch):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.losses.append(float(loss))
        return loss


@pytest.mark.parametrize("accumulation", [1, 2])
def test_replay_weighs_replay_coef_whatever_the_accumulation(model_dir, tmp_path, accumulation):
    # TRL divides its loss by the accumulation steps; replay must too, or it weighs accumulation x replay_coef
    from rookworld_trl.grpo.replay import replay_loss

    model, tokenizer = load_tiny(model_dir)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {}

    class Grads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    coef = 0.7
    trainer = ReplayProbe(
        model=model,
        reward_funcs=[constant_reward],
        args=tiny_config(
            tmp_path,
            max_steps=1,
            replay_coef=coef,
            replay_batch_size=2,
            max_grad_norm=0.0,
            gradient_accumulation_steps=accumulation,
        ),  # fmt: skip
        train_dataset=with_completions(tiny_dataset()),
        processing_class=tokenizer,
        callbacks=[Grads()],
        check_lengths=False,  # the tiny model's 8-token budget cuts the replayed truths on purpose
    )
    trainer.train()
    assert len(trainer.replayed) == accumulation
    reference, _ = load_tiny(model_dir)
    reference.load_state_dict(start)
    supervised = [replay_loss(reference, batch) for batch in trainer.replayed]
    expected = coef * sum(supervised) / accumulation  # the step's total loss: replay_coef x the mean NLL
    expected.backward()
    assert sum(trainer.losses) == pytest.approx(expected.item(), rel=1e-5)
    for name, param in reference.named_parameters():
        assert torch.allclose(grads[name], param.grad, atol=1e-6), name


# ---- the console table of completions ----


def components_reward(prompts, completions, log_extra=None, **kwargs):
    """file_reward plus a component column, as our chess rewards report theirs (TRL's log_extra)."""
    if log_extra is not None:
        log_extra("policy/cp_loss", [98765.25] * len(completions))
    return file_reward(prompts, completions)


def test_completions_table_every_n_steps_without_the_reward_components(model_dir, tmp_path, capsys):
    # through TRL's own log(): the console table at steps 2 and 4 only, the Parquet at every step with the column
    model, tokenizer = load_tiny(model_dir)
    trainer = RookWorldGRPOTrainer(
        model=model,
        reward_funcs=[components_reward],
        args=tiny_config(
            tmp_path, max_steps=4, log_completions=True, num_completions_to_print=1, print_completions_every=2
        ),  # fmt: skip
        train_dataset=tiny_dataset(),
        processing_class=tokenizer,
    )
    trainer.train()
    out = capsys.readouterr().out
    assert [int(n) for n in re.findall(r"Step (\d+)", out)] == [2, 4]
    assert "components_reward" in out and "98765" not in out
    import pandas as pd

    tables = sorted((tmp_path / "completions").glob("*.parquet"))
    assert len(tables) == 4 and (pd.read_parquet(tables[0])["policy/cp_loss"] == 98765.25).all()


# ---- reference model on its own device ----


def test_ref_model_device_cpu(model_dir, tmp_path):
    trainer = make_trainer(
        model_dir, tmp_path, beta=0.01, ref_model_device="cpu", learning_rate=5e-2, max_steps=3
    )
    assert trainer.ref_device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in trainer.ref_model.parameters())
    trainer.train()
    assert train_logs(trainer)[-1]["kl"] > 0.0


def test_ref_model_device_must_exist(model_dir, tmp_path):
    if torch.cuda.device_count() >= 8:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ValueError, match="CUDA device"):
        make_trainer(model_dir, tmp_path, beta=0.01, ref_model_device="cuda:7")


@pytest.mark.gpu
def test_ref_model_on_cpu_with_policy_on_gpu(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path, beta=0.01, ref_model_device="cpu", use_cpu=False, max_steps=1)
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert next(trainer.ref_model.parameters()).device.type == "cpu"
    ids = torch.randint(1, 40, (4, 12), device=trainer.accelerator.device)
    mask = torch.ones_like(ids)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, mask, 6)
    assert logps.device == ids.device  # results come back to the policy's device
    trainer.ref_model.to(ids.device)  # the same computation with the reference on the GPU agrees
    trainer.ref_device = ids.device
    on_gpu, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, mask, 6)
    torch.testing.assert_close(logps, on_gpu, atol=1e-4, rtol=1e-4)
    trainer.ref_model.to("cpu")
    trainer.ref_device = torch.device("cpu")
    trainer.train()
    assert math.isfinite(train_logs(trainer)[-1]["kl"])


# ---- LR schedule ----


def test_warmup_cosine_linear_curve():
    values = [warmup_cosine_linear(s, warmup_steps=10, total_steps=100, min_ratio=0.2) for s in range(101)]
    assert values[0] == 0.0 and values[5] == pytest.approx(0.5) and values[10] == pytest.approx(1.0)
    assert values[50] == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))  # cosine midpoint
    assert values[90] == pytest.approx(0.2) and values[95] == pytest.approx(0.1) and values[100] == 0.0
    assert all(values[s] >= values[s + 1] for s in range(10, 100)), "monotone after warmup"


def test_warmup_cosine_linear_in_trainer(model_dir, tmp_path):
    overrides = dict(
        lr_schedule="warmup_cosine_linear", warmup_steps=2, max_steps=10, lr_cosine_min_ratio=0.5
    )
    trainer = make_trainer(model_dir, tmp_path, **overrides)
    trainer.train()
    logged = [row["learning_rate"] for row in train_logs(trainer)]
    expected = [1e-3 * warmup_cosine_linear(s, 2, 10, 0.5, 0.1) for s in range(10)]
    assert logged == pytest.approx(expected)
    assert logged[-1] > 0.0 and trainer.optimizer.param_groups[0]["lr"] == 0.0


def test_check_completion_length_warns_when_reference_completions_would_be_cut(tmp_path, caplog):
    from rookworld_trl.grpo.config import check_completion_length

    _, tokenizer = load_tiny(make_tiny_model_dir(tmp_path))
    data = Dataset.from_dict(
        {"prompt": ["P: M:"] * 2, "completion": [" e2e4", " e2e4 e7e5"]}
    )  # 5 and 10 chars
    with caplog.at_level("WARNING", logger="rookworld_trl.grpo"):
        check_completion_length(data, tokenizer, max_completion_length=11)
    assert not caplog.records  # 10 tokens + EOS fit
    with caplog.at_level("WARNING", logger="rookworld_trl.grpo"):
        check_completion_length(data, tokenizer, max_completion_length=8)
    assert "cuts 1 of 2" in caplog.text and "at least 11" in caplog.text


def test_reference_model_is_loaded_at_the_policys_revision(model_dir, tmp_path, monkeypatch):
    # a hub-cache layout with two revisions of "me/tiny": main holds other weights than v1
    from trl import ModelConfig

    from rookworld_trl.stages.grpo import load_policy

    repo = tmp_path / "hub" / "models--me--tiny"
    for name, seed in (("a" * 40, 0), ("b" * 40, 1)):
        snapshot = repo / "snapshots" / name
        snapshot.mkdir(parents=True)
        model, tokenizer = load_tiny(model_dir)
        torch.manual_seed(seed)
        torch.nn.init.normal_(model.transformer.wte.weight)
        model.save_pretrained(snapshot)
        tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text("a" * 40)
    (repo / "refs" / "main").write_text("b" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)

    args = tiny_config(tmp_path / "run", beta=0.1)
    model, tokenizer = load_policy(args, ModelConfig(model_name_or_path="me/tiny", model_revision="v1"))
    trainer = RookWorldGRPOTrainer(
        model=model,
        reward_funcs=[file_reward],
        args=args,
        train_dataset=tiny_dataset(),
        processing_class=tokenizer,
    )
    wte = trainer.ref_model.transformer.wte.weight
    assert torch.equal(wte, model.transformer.wte.weight) and wte.dtype == model.dtype


def test_policy_and_reference_train_without_dropout(model_dir, tmp_path):
    # TRL's disable_dropout, on by default in RookWorldGRPOConfig: dropout would make KL and ratio measure noise
    from rookworld_trl.model.loading import set_dropout

    model, tokenizer = load_tiny(model_dir)
    set_dropout(model, 0.1)
    trainer = RookWorldGRPOTrainer(
        model=model, reward_funcs=[file_reward], args=tiny_config(tmp_path, beta=0.1), train_dataset=tiny_dataset(),
        processing_class=tokenizer,
    )  # fmt: skip
    for m in (trainer.model, trainer.ref_model):
        assert {d.p for d in m.modules() if isinstance(d, torch.nn.Dropout)} == {0.0}


def test_a_trl_upgrade_that_drops_an_internal_fails_at_import_naming_it(monkeypatch):
    from rookworld_trl.training import trl_compat

    trl_compat.check_internals()  # the pinned versions have every one
    monkeypatch.setitem(trl_compat.METHODS, "_score_completions_v2", "a seam a future TRL might rename")
    with pytest.raises(ImportError, match=r"GRPOTrainer\._score_completions_v2 .* pyproject.toml"):
        trl_compat.check_internals()
    monkeypatch.delitem(trl_compat.METHODS, "_score_completions_v2")
    monkeypatch.setitem(trl_compat.PRIVATE_ARGUMENTS, "_calculate_rewards", ("prompts", "prompt_texts"))
    with pytest.raises(ImportError, match="_calculate_rewards's argument 'prompt_texts'"):
        trl_compat.check_internals()
    monkeypatch.setitem(trl_compat.PRIVATE_ARGUMENTS, "_calculate_rewards", ("prompts",))
    monkeypatch.setitem(trl_compat.TESTED, "trl", ("1.17.0", "1.16", "1.17"))
    with pytest.raises(ImportError, match=r"trl >=1.16,<1.17 \(installed: 1.17.0\)"):
        trl_compat.check_internals()
