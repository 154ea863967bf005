"""`python -m rookworld_trl.grpo` / `accelerate launch -m rookworld_trl.grpo`, as older scripts name the GRPO stage:
it runs the stage, rookworld_trl.stages.grpo (`rookworld train`), with the same arguments, after one line
saying so. By name (runpy), not by import: this package sits below the stages and imports none of them."""

import runpy
import sys

print(
    "rookworld_trl.grpo: the GRPO stage is rookworld_trl.stages.grpo (or `rookworld train`); running it",
    file=sys.stderr,
)
runpy.run_module("rookworld_trl.stages.grpo", run_name="__main__", alter_sys=True)
