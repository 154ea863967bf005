"""Where `rookworld train` trains when the command line does not say: on a machine with CUDA, the GPU.

The main job's recipe (recipes/grpo_tiny_cpu.yaml) sets `use_cpu: true` so that it runs anywhere; where CUDA
is available the launcher moves it to the GPU in bf16, as transformers' Trainer would (the H200 run of
2026-11-26: 150 steps in 1.4 min against 4.9-8.4 min on 2 CPU cores, the same gains). The user's own
`--use_cpu true/false`, or an --accelerate_config that sets use_cpu (cpu.yaml, multi_cpu.yaml), always wins.
"""

from __future__ import annotations

from rookworld_trl.common.flags import flag_values


def gpu_flags(
    argv: list[str], recipe_use_cpu: bool | None, config_use_cpu: bool | None, cuda: bool
) -> list[str]:
    """The flags to add to a `rookworld train` argv: `--use_cpu false --bf16 true` (no --bf16 when the user
    gave one) when CUDA is available and only the recipe asks for the CPU; else none.

    >>> gpu_flags([], recipe_use_cpu=True, config_use_cpu=None, cuda=True)
    ['--use_cpu', 'false', '--bf16', 'true']
    >>> gpu_flags([], recipe_use_cpu=True, config_use_cpu=None, cuda=False)
    []
    >>> gpu_flags(["--use_cpu", "true"], recipe_use_cpu=True, config_use_cpu=None, cuda=True)
    []
    """
    flags = flag_values(argv)
    if not cuda or "use_cpu" in flags or config_use_cpu or not recipe_use_cpu:
        return []
    return ["--use_cpu", "false", *([] if "bf16" in flags else ["--bf16", "true"])]


def gpu_line(gpus: str, added: list[str]) -> str:
    """The one line `rookworld train` prints when it moved the run to the GPU."""
    return (
        f"rookworld: device cuda ({gpus}): where CUDA is available the main job trains on the GPU "
        f"({' '.join(added)} added to the recipe's use_cpu: true); to stay on the CPU add --use_cpu true"
    )
