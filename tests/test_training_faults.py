"""Faults and what the GRPO stage does about each: damaged checkpoints, finished runs re-run, torn logs,
divergence, a full disk, bad config, a damaged model directory (tiny GPT-2 on CPU).

    .venv/bin/pytest tests/test_training_faults.py

scripts/fault_trials.py runs the same faults on the real stage (test_fault_trials.py runs its fast part).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from tiny_grpo import make_tiny_model_dir, make_trainer, trainable
from transformers import TrainerCallback

from rookworld_trl.grpo.guard import Snapshot, spike
from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer
from rookworld_trl.stages.grpo import train
from rookworld_trl.training import checkpoints
from rookworld_trl.training.metrics_log import JSONLMetricsCallback

ROOT = Path(__file__).resolve().parent.parent
SAVE = dict(save_strategy="steps", save_steps=1, beta=0.01)


def fake_checkpoint(path: Path, step: int, model: bytes = b"weights") -> str:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(model)
    (path / "optimizer.pt").write_bytes(b"moments")
    checkpoints.mark_complete(str(path), step)
    return str(path)


def lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


# ---- checkpoints verified before they are trusted ----


def test_marker_records_each_file_and_verification_names_the_damage(tmp_path):
    ckpt = Path(fake_checkpoint(tmp_path / "checkpoint-3", 3))
    marker = json.loads((ckpt / checkpoints.MARKER).read_text())
    assert (
        marker["files"]["model.safetensors"]["size"] == 7
        and len(marker["files"]["optimizer.pt"]["sha256"]) == 64
    )
    assert checkpoints.checkpoint_problem(str(ckpt)) is None
    (ckpt / "model.safetensors").write_bytes(b"weighTs")  # same size, one byte changed
    assert "model.safetensors does not match the sha256" in checkpoints.checkpoint_problem(str(ckpt))
    (ckpt / "model.safetensors").write_bytes(b"wei")
    assert checkpoints.checkpoint_problem(str(ckpt)) == (
        "model.safetensors is 3 bytes, its marker says 7 (truncated or overwritten)"
    )
    (ckpt / "model.safetensors").write_bytes(b"weights")
    (ckpt / "optimizer.pt").unlink()
    assert "optimizer.pt is missing" in checkpoints.checkpoint_problem(str(ckpt))


def test_legacy_marker_gets_a_safetensors_header_check(model_dir, tmp_path):
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    weights = (Path(model_dir) / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(weights)
    (ckpt / checkpoints.MARKER).write_text(json.dumps({"global_step": 1}))  # a marker without a file list
    assert "optimizer.pt is missing" in checkpoints.checkpoint_problem(str(ckpt))
    (ckpt / "optimizer.pt").write_bytes(b"x")
    assert checkpoints.checkpoint_problem(str(ckpt)) is None
    (ckpt / "model.safetensors").write_bytes(weights[:-10])
    assert "truncated" in checkpoints.checkpoint_problem(str(ckpt))


def test_auto_walks_back_past_damaged_checkpoints_saying_why(tmp_path, capsys):
    for step in (1, 2, 3):
        fake_checkpoint(tmp_path / f"checkpoint-{step}", step)
    (tmp_path / "checkpoint-3" / "model.safetensors").write_bytes(b"w")
    (tmp_path / "checkpoint-2" / "optimizer.pt").unlink()
    assert checkpoints.resolve_resume("auto", str(tmp_path)) == str(tmp_path / "checkpoint-1")
    err = capsys.readouterr().err
    assert (
        "checkpoint-3: model.safetensors is 1 bytes" in err and "checkpoint-2: optimizer.pt is missing" in err
    )
    assert sorted(n.rsplit("-", 1)[0] for n in os.listdir(tmp_path / "damaged")) == [
        "checkpoint-2",
        "checkpoint-3",
    ]
    # a named checkpoint that does not verify: one line with the problem and the fix, nothing moved
    fake_checkpoint(tmp_path / "checkpoint-5", 5)
    (tmp_path / "checkpoint-5" / "optimizer.pt").unlink()
    with pytest.raises(
        ValueError, match=r"checkpoint-5: optimizer.pt is missing .* --resume_from_checkpoint auto"
    ):
        checkpoints.resolve_resume(str(tmp_path / "checkpoint-5"), str(tmp_path))


def test_stable_is_a_real_copy_and_the_fallback_when_every_checkpoint_is_damaged(tmp_path, capsys):
    two = fake_checkpoint(tmp_path / "checkpoint-2", 2)
    stable = checkpoints.promote_to_stable(two, str(tmp_path))
    with open(Path(two) / "model.safetensors", "r+b") as f:  # damage in place, as a bad disk block would
        f.write(b"X")
    assert checkpoints.checkpoint_problem(stable) is None
    assert checkpoints.resolve_resume("auto", str(tmp_path)) == stable
    assert "does not match the sha256" in capsys.readouterr().err
    with open(Path(stable) / "model.safetensors", "r+b") as f:
        f.write(b"X")
    with pytest.raises(FileNotFoundError, match="no stable checkpoint that verifies"):
        checkpoints.resolve_resume("stable", str(tmp_path))


# ---- finished runs, missing optimizer state, resume point on the console ----


def test_finished_run_rerun_exits_0_without_training(model_dir, tmp_path, capsys):
    assert train(make_trainer(model_dir, tmp_path, max_steps=2, **SAVE)) == 0
    log = (tmp_path / "metrics.jsonl").read_text()
    card = (tmp_path / "final" / "README.md").read_text()
    again = make_trainer(model_dir, tmp_path, max_steps=2, resume_from_checkpoint="auto", **SAVE)
    assert train(again) == 0 and again.state.global_step == 0
    assert "is finished" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint-3").exists() and (tmp_path / "metrics.jsonl").read_text() == log
    # killed during the final save: final/ is written from the last checkpoint, still no step 3
    before = (tmp_path / "final" / "model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "final")
    third = make_trainer(model_dir, tmp_path, max_steps=2, resume_from_checkpoint="auto", **SAVE)
    assert train(third) == 0 and "final/ is incomplete" in capsys.readouterr().err
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == before
    assert (tmp_path / "final" / "README.md").read_text() == card  # "steps trained: 2"
    assert not (tmp_path / "checkpoint-3").exists()
    # max_steps raised: it trains on
    more = make_trainer(model_dir, tmp_path, max_steps=3, resume_from_checkpoint="auto", **SAVE)
    assert train(more) == 0 and more.state.global_step == 3
    assert "resuming from" in capsys.readouterr().err


def test_missing_optimizer_falls_back_to_the_previous_checkpoint(model_dir, tmp_path, capsys):
    first = make_trainer(model_dir, tmp_path, max_steps=4, **SAVE)
    first.args.max_steps = 3  # stop early, keep the 4-step schedule
    first.train()
    (tmp_path / "checkpoint-3" / "optimizer.pt").unlink()
    resumed = make_trainer(model_dir, tmp_path, max_steps=4, resume_from_checkpoint="auto", **SAVE)
    assert train(resumed) == 0 and resumed.state.global_step == 4
    err = capsys.readouterr().err
    assert "checkpoint-3: optimizer.pt is missing" in err
    assert f"resuming from {tmp_path / 'checkpoint-2'} (step 2)" in err


def test_resume_does_not_warn_about_the_tied_lm_head(model_dir, tmp_path):
    from transformers.utils import logging as hf_logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logging.get_logger("transformers.trainer").addHandler(handler)
    try:
        trainer = make_trainer(model_dir, tmp_path, max_steps=1, **SAVE)
        trainer.train()
        trainer.load_weights(str(tmp_path / "checkpoint-1"))
        assert not [r for r in records if "missing keys" in r.getMessage()]
        # a weight that is really missing is still reported, and only it (the filter drops the tied head only)
        from safetensors.torch import load_file, save_file

        shutil.copytree(tmp_path / "checkpoint-1", tmp_path / "short")
        weights = load_file(tmp_path / "short" / "model.safetensors")
        del weights["transformer.ln_f.weight"]
        save_file(weights, tmp_path / "short" / "model.safetensors", metadata={"format": "pt"})
        trainer.load_weights(str(tmp_path / "short"))
    finally:
        hf_logging.get_logger("transformers.trainer").removeHandler(handler)
    missing = [r.getMessage() for r in records if "missing keys" in r.getMessage()]
    assert len(missing) == 1 and "transformer.ln_f.weight" in missing[0] and "lm_head" not in missing[0]


# ---- torn metrics log ----


def test_torn_metrics_line_is_dropped_with_a_warning_naming_the_file(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    callback = JSONLMetricsCallback(str(path))

    class State:
        is_world_process_zero, global_step = True, 2

    callback.on_train_begin(None, State(), None)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    assert f"{path}: dropped 1 unreadable line(s) (line 3" in capsys.readouterr().err


# ---- divergence ----


def test_spike_rule():
    assert spike(5.0, [1.0] * 4, 0.1) is None  # too little history
    assert spike(500.0, [1.0] * 5, 0.1) is None and spike(2000.0, [1.0] * 5, 0.1) == 2000.0
    assert spike(50.0, [0.0] * 5, 1.0) is None  # the floor: early steps with ~0 gradients are not a baseline


@pytest.mark.parametrize("lr, says", [(1e30, "a weight reached"), (1e3, "grew the weight norm")])
def test_huge_finite_update_rolls_back_to_before_it(model_dir, tmp_path, caplog, lr, says):
    trainer = make_trainer(model_dir, tmp_path, max_steps=3, learning_rate=lr, nan_max_retries=5, **SAVE)
    start = trainable(trainer.model)
    with caplog.at_level("WARNING", logger="rookworld_trl.grpo"):
        trainer.train()
    # steps 1 and 2 blow up (a step whose groups all tie has no gradient, and Adam then moves nothing)
    assert trainer.run.nan_recoveries >= 2 and trainer.halt_reason is None
    assert says in caplog.text and "restored from step 0" in caplog.text
    now = trainable(trainer.model)
    assert all(torch.equal(start[n], now[n]) for n in start), "every update was rolled back"
    from safetensors.torch import load_file

    for path in tmp_path.glob("**/model.safetensors"):  # no checkpoint (nor stable/) holds a blown-up update
        assert all(t.abs().max() < 1e3 for t in load_file(path).values()), path
    blown = torch.load(tmp_path / "nan_batches" / "step-1-rank0.pt", weights_only=True)
    assert blown["reason"].startswith("diverged")


def test_kl_far_above_kl_stop_rolls_back_past_the_previous_update(model_dir, tmp_path):
    class Record(TrainerCallback):
        after = {}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.after.setdefault(state.global_step, trainable(model))

    record = Record()
    trainer = make_trainer(model_dir, tmp_path, [record], max_steps=6, learning_rate=5e-2, beta=0.01,
                           kl_warn=1e-7, kl_stop=1e-6)  # fmt: skip
    start = trainable(trainer.model)
    trainer.train()
    step = trainer.state.global_step
    assert "rolled back to step" in trainer.halt_reason and "kl_stop" in trainer.halt_reason
    back = int(trainer.halt_reason.split("rolled back to step ")[1].split()[0])
    assert back == step - 2  # the update of step-1 made the KL; the weights are from before it
    target = start if back == 0 else record.after[back]
    now = trainable(trainer.model)
    assert all(torch.equal(target[n], now[n]) for n in now)


# ---- one clear line for each fault ----


def test_save_error_says_no_space_in_words(tmp_path):
    full = checkpoints.save_error(
        OSError(errno.ENOSPC, "No space left on device"), "saving checkpoint-4", str(tmp_path)
    )
    assert isinstance(full, OSError) and str(full).startswith(
        "[Errno 28] no space left on device while saving checkpoint-4"
    )
    assert "--resume_from_checkpoint auto" in str(full)
    assert checkpoints.save_error(RuntimeError("a bug"), "saving checkpoint-4", str(tmp_path)) is None


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0  # fmt: skip


def test_full_disk_during_a_checkpoint_is_one_line_then_resumes(model_dir, tmp_path):
    mount = tmp_path / "tmpfs"
    if os.geteuid() != 0 or not _mount_tmpfs(mount, "1500k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        out = mount / "run"
        with pytest.raises(
            OSError, match=r"no space left on device while saving checkpoint-\d+ .*resume with"
        ):
            train(make_trainer(model_dir, out, max_steps=8, save_total_limit=None, **SAVE))
        assert all(
            checkpoints.checkpoint_problem(p) is None for _, p in checkpoints.list_checkpoints(str(out))
        )
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        resumed = make_trainer(model_dir, out, max_steps=8, resume_from_checkpoint="auto", **SAVE)
        assert train(resumed) == 0 and resumed.state.global_step == 8
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_damaged_model_dir_is_one_line_naming_the_file(tmp_path):
    from rookworld_trl.model.loading import ModelLoadError, load_model_and_tokenizer

    path = Path(make_tiny_model_dir(tmp_path / "model")) / "model.safetensors"
    with open(path, "r+b") as f:
        f.truncate(5000)
    with pytest.raises(ModelLoadError, match=f"{path} are damaged: 5000 bytes") as e:
        load_model_and_tokenizer(str(path.parent))
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--learning_rate", "fast"], "invalid float value: 'fast' (in the recipe or a --flag); see --help"),
        (
            [
                "--num_generations",
                "4",
                "--gradient_accumulation_steps",
                "1",
                "--per_device_train_batch_size",
                "6",
            ],
            "make per_device_train_batch_size a multiple of 4",
        ),
        (["--output_dir", "FILE"], "is a file, not a directory"),
    ],
)
def test_config_errors_are_one_line(tmp_path, capsys, flags, says):
    from rookworld_trl.common.entry import run_stage
    from rookworld_trl.stages import grpo

    (tmp_path / "file").write_text("")
    flags = [str(tmp_path / "file") if f == "FILE" else f for f in flags]
    argv = [
        "--config",
        str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"),
        "--output_dir",
        str(tmp_path / "o"),
        *flags,
    ]
    try:
        code = run_stage("train", grpo.main, argv)
    except SystemExit as e:  # argparse's errors exit
        code = e.code
    assert code == 2
    err = [x for x in lines(capsys.readouterr().err) if "Warning" not in x and "warnings.warn" not in x]
    assert len(err) == 1 and says in err[0] and err[0].startswith("rookworld train: error: ")


def test_full_disk_seen_by_any_writer_is_one_line(capsys):
    import sqlite3

    from rookworld_trl.common.entry import run_stage

    def stage(argv):
        raise sqlite3.OperationalError("database or disk is full")

    assert run_stage("train", stage) == 2
    err = lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(
        "rookworld train: error: no space left on device (OperationalError"
    )


def test_ctrl_c_in_a_stage_exits_130(capsys):
    from rookworld_trl.common.entry import run_stage

    def stage(argv):
        raise KeyboardInterrupt

    assert run_stage("eval", stage) == 130 and lines(capsys.readouterr().err) == [
        "rookworld eval: interrupted"
    ]


class SpikeTrainer(RookWorldGRPOTrainer):
    """Test hook: the loss of optimizer step `spike_step` (1-based) is scaled by 1e6, a finite blow-up."""

    spike_step = 0

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        return loss * 1e6 if self.state.global_step + 1 == self.spike_step else loss


def test_loss_and_gradient_spike_skips_the_update(model_dir, tmp_path, caplog):
    class Record(TrainerCallback):
        after = {}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.after[state.global_step] = trainable(model)

    SpikeTrainer.spike_step = 7  # after 6 healthy steps: enough history for the medians
    record = Record()
    trainer = make_trainer(model_dir, tmp_path, [record], trainer_cls=SpikeTrainer, max_steps=8)
    with caplog.at_level("WARNING", logger="rookworld_trl.grpo"):
        trainer.train()
    assert trainer.run.nan_recoveries == 1 and "diverged:" in caplog.text and "x the median" in caplog.text
    assert all(torch.equal(record.after[7][n], record.after[6][n]) for n in record.after[6])


def test_snapshots_reuse_their_memory_and_a_restore_does_not_alias_it():
    """The guard copies weights + Adam state every healthy step: into the memory of the snapshot it drops,
    and a rollback hands the optimizer copies, so later steps cannot change a snapshot."""
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)

    def update():
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    update()
    first = Snapshot(model, optimizer, 1)
    update()
    second = Snapshot(model, optimizer, 2, reuse=first)
    assert second.params["weight"].data_ptr() == first.params["weight"].data_ptr()
    assert torch.equal(second.params["weight"], model.weight.detach())
    kept = {n: t.clone() for n, t in second.params.items()}
    kept_avg = second.optimizer["state"][0]["exp_avg"].clone()
    update()
    second.restore(model, optimizer)
    assert torch.equal(model.weight.detach(), kept["weight"])
    update()  # trains on from the restored state: the snapshot must not follow
    assert torch.equal(second.optimizer["state"][0]["exp_avg"], kept_avg)
    assert not torch.equal(optimizer.state[model.weight]["exp_avg"], kept_avg)
