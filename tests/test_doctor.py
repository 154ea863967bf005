"""`rookworld doctor` (rookworld_trl/stages/doctor.py): every row PASS or SKIP here, GPU rows SKIP without CUDA, and a
path that raises is a FAIL row with its cause and the line that switches it off, never a traceback.

    .venv/bin/pytest tests/test_doctor.py
"""

from __future__ import annotations

import pytest
import torch

from rookworld_trl.stages import cli, doctor

GPU_ROWS = ("CUDA", "bf16", "sampler: CUDA graph", "sampler: eager, CUDA", "bf16 scoring", "torch.compile",
            "reference model on cuda:1")  # fmt: skip


def rows_of(text: str) -> dict[str, str]:
    """check name -> its result, from the printed table."""
    body = text.split("-------\n", 1)[1].split("\n\n", 1)[0]
    return {line[: line.index("  ")]: line.split()[len(line[: line.index("  ")].split())] for line in
            body.splitlines()}  # fmt: skip


@pytest.mark.slow  # the whole doctor, its short training included (~20 s quiet): the slow tier
def test_doctor_passes_here_and_skips_the_gpu_rows(capsys):
    code = cli.main(["doctor"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = rows_of(out)
    assert "Traceback" not in out and "FAIL" not in rows.values(), out
    assert rows["GRPO, 2 steps"] == "PASS" and rows["sampler: eager, CPU"] == "PASS", out
    assert rows["Stockfish"] == "PASS" and rows["TRL internals"] == "PASS", out
    for name, result in rows.items():
        if name.startswith(GPU_ROWS):
            needs = 2 if name.endswith("cuda:1") else 1  # the reference model's own device: a second GPU
            assert result == ("PASS" if torch.cuda.device_count() >= needs else "SKIP"), (name, out)
    if not torch.cuda.is_available():
        assert "SKIP    no CUDA" in out
    line = next(line for line in out.splitlines() if line.startswith("sampler: eager, CPU"))
    assert "greedy = generate() on 8/8 rows" in line and "tokens/s" in line, line


@pytest.mark.parametrize("name", ["sampler: eager, CPU", "Stockfish"])
def test_a_path_that_raises_is_a_fail_row_with_its_switch(name, monkeypatch, capsys):
    def broken(state):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nsecond line")

    checks = [c for c in doctor.checks(skip_grpo=True) if c.name in (name, "versions")]
    monkeypatch.setattr(doctor, "checks", lambda skip_grpo=False: checks)
    for c in checks:
        if c.name == name:
            monkeypatch.setattr(c, "run", broken)
    assert doctor.main(["--skip_grpo"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out and "second line" not in out
    assert rows_of(out) == {"versions": "PASS", name: "FAIL"}, out
    row = next(line for line in out.splitlines() if line.startswith(name))
    assert "RuntimeError: CUDA error: an illegal memory access was encountered" in row
    switch = next(c.switch_off for c in checks if c.name == name)
    assert f"  {name}: {switch}" in out.split("to switch a failing path off:")[1]
