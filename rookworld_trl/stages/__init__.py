"""The front door and the stage runners: how `rookworld train` / `sft` start (launch.py, preflight.py with
recipe.py; doctor.py) and what they start, through accelerate (grpo.py,
sft.py: `-m rookworld_trl.stages.grpo`, `-m rookworld_trl.stages.sft`), each parsing a recipe, building a trainer,
training and evaluating.
"""
