"""`python -m rookworld_trl.grpo` / `accelerate launch -m rookworld_trl.grpo`: the GRPO stage."""

import sys

from rookworld_trl.grpo.stage import main
from rookworld_trl.stage import run_stage

sys.exit(run_stage("train", main))
