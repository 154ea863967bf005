"""Fault trials: kill, damage, starve and blow up GRPO runs, then check each fault is handled as promised.

    .venv/bin/python scripts/fault_trials.py                  # all trials, 20 random kills (~20 min, 2 cores)
    .venv/bin/python scripts/fault_trials.py --fast           # the in-process part (~30 s; pytest runs it)
    .venv/bin/python scripts/fault_trials.py --kills 5 --engine_kills 3 --out build/fault_trials

Every trial runs the real training stage (rookworld_trl.grpo with recipes/grpo_tiny_cpu.yaml, shrunk to a
few small steps) on the embedded model and data, with Stockfish rewards. A reference run goes uninterrupted;
each trial then breaks a run and resumes it with `--resume_from_checkpoint auto`. It prints one line per
trial and a summary: tried, survived (exit code and message as promised, no traceback) and identical (final
weights' sha256 equal to the reference run's; only for trials that end in a finished run).

The fast part runs the stage in this process (no import cost per run): a finished run re-run, damaged
checkpoints (truncated, bit-flipped, optimizer.pt missing) with a torn metrics log, an explicitly named
damaged checkpoint, a damaged model directory, config errors, and divergence (learning_rate 1e30). The rest
(and a named damaged checkpoint) runs the stage in a subprocess: SIGKILL at random moments, Ctrl-C, Stockfish kills, lr 1e3, and a full disk
(a small tmpfs; skipped where mounting one is not allowed).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_ARGS = [  # set_steps() adds --max_steps and --save_steps
    "--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--save_total_limit", "null",
    "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "64",
    "--replay_batch_size", "4", "--eval_samples", "0", "--log_completions", "false", "--report_to", "none",
    "--disable_tqdm", "true", "--resume_from_checkpoint", "auto",
]  # fmt: skip
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def set_steps(steps: int) -> list[int]:
    """Runs of `steps` steps with 4 checkpoints; returns their steps."""
    save = max(1, steps // 4)
    STAGE_ARGS.extend(["--max_steps", str(steps), "--save_steps", str(save)])
    return list(range(save, steps + 1, save))


@dataclass
class Tally:
    rows: list[tuple[str, bool, bool | None, str]] = field(default_factory=list)

    started: float = field(default_factory=time.time)

    def add(self, name: str, survived: bool, identical: bool | None, note: str = "") -> None:
        self.rows.append((name, survived, identical, note))
        took, self.started = time.time() - self.started, time.time()
        same = {None: "", True: ", identical", False: ", NOT identical"}[identical]
        print(
            f"  {'ok  ' if survived else 'FAIL'} {name}{same} ({took:.0f} s){': ' + note if note else ''}",
            flush=True,
        )

    def summary(self) -> str:
        tried = len(self.rows)
        survived = sum(r[1] for r in self.rows)
        compared = [r for r in self.rows if r[2] is not None]
        identical = sum(bool(r[2]) for r in compared)
        return f"tried {tried}, survived {survived}/{tried}, identical {identical}/{len(compared)}"

    @property
    def all_good(self) -> bool:
        return all(r[1] and r[2] is not False for r in self.rows)


def final_sha(out: Path) -> str | None:
    path = out / "final" / "model.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def run_inprocess(out: Path, *extra: str) -> tuple[int, str]:
    """The training stage in this process, as `python -m rookworld_trl.stages.grpo` runs it; (exit code, stderr)."""
    import torch

    from rookworld_trl.common.entry import run_stage
    from rookworld_trl.stages import grpo

    os.environ.update(ENV)
    torch.set_num_threads(
        int(ENV["OMP_NUM_THREADS"])
    )  # as the subprocesses: results depend on the thread count
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = run_stage("train", grpo.main, [*STAGE_ARGS, "--output_dir", str(out), *extra])
        except SystemExit as e:  # argparse errors exit
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def start(out: Path, *extra: str, log: Path) -> subprocess.Popen:
    """The training stage in a subprocess of its own process group (Stockfish included), output to log."""
    cmd = [sys.executable, "-m", "rookworld_trl.stages.grpo", *STAGE_ARGS, "--output_dir", str(out), *extra]
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as f:
        return subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )


def _default_sigint() -> None:
    # a shell's background jobs ignore SIGINT and children inherit that: give the stage a terminal's Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_subprocess(out: Path, *extra: str, log: Path) -> tuple[int, str]:
    proc = start(out, *extra, log=log)
    proc.wait()
    return proc.returncode, log.read_text(errors="replace")


def clean(text: str) -> bool:
    return "Traceback" not in text


# ---- the fast part: in-process ----


def fast_trials(work: Path, tally: Tally, saves: list[int]) -> str:
    """The in-process trials (checkpoints at steps `saves`); returns the reference run's final sha256."""
    ref = work / "reference"
    code, err = run_inprocess(ref)
    reference = final_sha(ref)
    tally.add("reference run", code == 0 and reference is not None and clean(err), None, f"exit {code}")

    ckpts = sorted(p.name for p in ref.glob("checkpoint-*"))
    code, err = run_inprocess(ref)
    tally.add(
        "finished run re-run",
        code == 0 and "is finished" in err and sorted(p.name for p in ref.glob("checkpoint-*")) == ckpts,
        final_sha(ref) == reference,
        err.strip().splitlines()[-1] if err.strip() else "no message",
    )

    run = work / "damaged"
    shutil.copytree(ref, run)
    shutil.rmtree(run / "final")
    last, before, third, good = (f"checkpoint-{s}" for s in saves[::-1][:4])
    with open(run / last / "model.safetensors", "r+b") as f:
        f.truncate(1000)  # truncated
    (run / before / "optimizer.pt").unlink()  # missing optimizer state
    flip = run / third / "model.safetensors"
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit, same size: only the checksum sees it
    flip.write_bytes(bytes(data))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "loss": 0.1, "rew')  # torn last line
    code, err = run_inprocess(run)
    said = [
        f"{last}: model.safetensors is 1000 bytes",
        f"{before}: optimizer.pt is missing",
        f"{third}: model.safetensors does not match the sha256",
        f"resuming from {run / good}",
        "metrics.jsonl: dropped 1 unreadable line",
    ]
    missing = [s for s in said if s not in err]
    ok = code == 0 and not missing and clean(err) and (run / "damaged").is_dir()
    tally.add(
        f"damaged {last}, {before}, {third} + torn log",
        ok,
        final_sha(run) == reference,
        f"exit {code}" + (f", did not say {missing}" if missing else f", resumed from {good}"),
    )

    model = work / "bad_model"
    shutil.copytree(ROOT / "rookworld_trl" / "assets" / "model", model)
    with open(model / "model.safetensors", "r+b") as f:
        f.truncate(100_000)
    code, err = run_inprocess(work / "bad_model_run", "--model_name_or_path", str(model))
    line = err.strip().splitlines()[-1] if err.strip() else ""
    ok = code == 2 and str(model / "model.safetensors") in line and len(err.strip().splitlines()) <= 3
    tally.add("damaged model.safetensors in a model dir", ok and clean(err), None, line)

    for name, extra, says in [
        ("batch size not a multiple", ["--per_device_train_batch_size", "6"], "per_device_train_batch_size"),
        ("wrong type", ["--learning_rate", "fast"], "invalid float value"),
    ]:
        code, err = run_inprocess(work / "config", *extra)
        lines = [x for x in err.strip().splitlines() if "Warning" not in x and "warnings.warn" not in x]
        tally.add(
            f"config error: {name}", code == 2 and len(lines) == 1 and says in lines[0], None, lines[-1]
        )
    (work / "a_file").write_text("")
    code, err = run_inprocess(work / "a_file")
    tally.add(
        "output_dir is a file", code == 2 and "is a file" in err and clean(err), None, err.strip()[-90:]
    )

    run = work / "lr1e30"
    code, err = run_inprocess(run, "--learning_rate", "1e30", "--save_steps", "1", "--nan_max_retries", "1")
    ok = code == 1 and "diverged" in err and "gave up" in err and clean(err) and weights_sane(run)
    tally.add(
        "divergence: learning_rate 1e30",
        ok,
        None,
        f"exit {code}, no blown-up checkpoint: {weights_sane(run)}",
    )
    return reference


def weights_sane(out: Path) -> bool:
    """Every checkpoint, stable/ and final/ hold finite weights of sane size (no saved blown-up update)."""
    from safetensors.torch import load_file

    for path in out.glob("**/model.safetensors"):
        if any(not t.isfinite().all() or t.abs().max() > 1e3 for t in load_file(path).values()):
            return False
    return True


# ---- the slow part: subprocesses ----


def named_damaged_trial(work: Path, tally: Tally, last: str) -> None:
    """--resume_from_checkpoint naming a checkpoint without optimizer.pt: one line, exit 2, nothing trained."""
    named = work / "named"
    shutil.copytree(work / "reference", named)
    (named / last / "optimizer.pt").unlink()
    code, err = run_inprocess(named, "--resume_from_checkpoint", str(named / last))
    line = err.strip().splitlines()[-1] if err.strip() else ""
    tally.add(
        "named damaged checkpoint", code == 2 and "optimizer.pt is missing" in line and clean(err), None, line
    )


def kill_trials(work: Path, tally: Tally, reference: str, kills: int, rng: random.Random) -> None:
    """SIGKILL a run at a random moment between its first checkpoint and its end (mid-step, mid-checkpoint,
    mid-final-save), resume it; the final weights must equal the reference."""
    timing = work / "timing"
    t0 = time.time()
    proc = start(timing, log=work / "timing.log")
    first = None  # when the first checkpoint's marker appeared: before it, a kill only restarts from scratch
    while proc.poll() is None:
        if first is None and list(timing.glob("checkpoint-*/rookworld_complete.json")):
            first = time.time() - t0
        time.sleep(0.1)
    duration = time.time() - t0
    first = first or 0.2 * duration
    tally.add("reference run in a subprocess", proc.returncode == 0, final_sha(timing) == reference,
              f"{duration:.0f} s, first checkpoint at {first:.0f} s")  # fmt: skip
    for i in range(kills):
        run, log = work / f"kill{i}", work / f"kill{i}.log"
        latest = duration
        while True:  # a run faster than the timing run ends before its kill: draw again, earlier
            shutil.rmtree(run, ignore_errors=True)
            proc = start(run, log=log)
            at = rng.uniform(0.8 * first, latest)
            try:
                proc.wait(timeout=at)
                latest = max(0.8 * first + 1, 0.9 * at)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
        code, text = run_subprocess(run, log=log)
        where = next((x for x in text.splitlines() if "resuming from" in x), "fresh start")
        tally.add(f"kill {i + 1} at {at:.1f} s", code == 0 and clean(text), final_sha(run) == reference,
                  where.split("rookworld: ")[-1])  # fmt: skip


def sigint_trial(work: Path, tally: Tally, reference: str) -> None:
    run, log = work / "sigint", work / "sigint.log"
    proc = start(run, log=log)
    # the first checkpoint: the run is mid-way, so Ctrl-C interrupts training (not the end of a finished run)
    while not list(run.glob("checkpoint-*/rookworld_complete.json")) and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    proc.wait()
    text = log.read_text(errors="replace")
    said = next((x for x in text.splitlines() if "interrupted at step" in x), "")
    first_ok = proc.returncode == 130 and said and clean(text)
    code, text = run_subprocess(run, log=log)
    tally.add("Ctrl-C then resume", bool(first_ok) and code == 0 and clean(text), final_sha(run) == reference,
              said.split("rookworld: ")[-1] or f"exit {proc.returncode}")  # fmt: skip


def stockfish_children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)
            if "stockfish" in fields[0] and int(fields[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def engine_kill_trial(work: Path, tally: Tally, reference: str, kills: int, rng: random.Random) -> None:
    run, log = work / "engine_kills", work / "engine_kills.log"
    proc = start(run, log=log)
    killed = 0
    while proc.poll() is None and killed < kills:
        time.sleep(rng.uniform(1.0, 4.0))
        pids = stockfish_children(proc.pid)
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(pids), signal.SIGKILL)
                killed += 1
    proc.wait()
    text = log.read_text(errors="replace")
    tally.add(f"{killed} Stockfish kills", proc.returncode == 0 and clean(text), final_sha(run) == reference,
              f"exit {proc.returncode}")  # fmt: skip


def lr_1e3_trial(work: Path, tally: Tally) -> None:
    run, log = work / "lr1e3", work / "lr1e3.log"
    code, text = run_subprocess(run, "--learning_rate", "1e3", "--save_steps", "1", log=log)
    ok = code in (0, 1) and clean(text) and weights_sane(run) and "diverged" in text
    tally.add("divergence: learning_rate 1e3", ok, None, f"exit {code}, weights sane: {weights_sane(run)}")


def disk_full_trial(work: Path, tally: Tally, reference: str) -> None:
    mount = work / "tmpfs"
    mount.mkdir(exist_ok=True)
    # ~35 MB per checkpoint and as much for stable/: 120 MB fills up after a few saves
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mount)],
                      capture_output=True).returncode:  # fmt: skip
        print("  skip disk full: cannot mount a tmpfs here (needs root)", flush=True)
        return
    try:
        run, log = mount / "run", work / "disk_full.log"
        code, text = run_subprocess(run, log=log)
        said = next((x for x in text.splitlines() if "no space left on device while" in x), "")
        first_ok = code == 2 and said and clean(text)
        subprocess.run(["mount", "-o", "remount,size=2g", str(mount)], check=True)  # "free some space"
        code, text = run_subprocess(run, log=log)
        tally.add("disk full, then space freed", bool(first_ok) and code == 0 and clean(text),
                  final_sha(run) == reference, said.split("error: ")[-1][:110])  # fmt: skip
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fast", action="store_true", help="only the in-process trials")
    parser.add_argument("--steps", type=int, default=8, help="steps of each run (checkpoints every steps/4)")
    parser.add_argument("--kills", type=int, default=20, help="random SIGKILLs, each followed by a resume")
    parser.add_argument("--engine_kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "build" / "fault_trials"), help="scratch dir (wiped)")
    args = parser.parse_args(argv)
    work = Path(args.out).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tally, rng = Tally(), random.Random(args.seed)
    print(f"fault trials in {work}", flush=True)
    reference = fast_trials(work, tally, set_steps(args.steps))
    if not args.fast:
        named_damaged_trial(work, tally, f"checkpoint-{args.steps}")
        kill_trials(work, tally, reference, args.kills, rng)
        sigint_trial(work, tally, reference)
        engine_kill_trial(work, tally, reference, args.engine_kills, rng)
        lr_1e3_trial(work, tally)
        disk_full_trial(work, tally, reference)
    print(tally.summary(), flush=True)
    return 0 if tally.all_good else 1


if __name__ == "__main__":
    sys.exit(main())
