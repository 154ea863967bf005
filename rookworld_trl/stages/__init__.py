"""The stage runners: each parses a recipe, builds a trainer, trains and evaluates, and is what
`rookworld train` / `rookworld sft` launch through accelerate (`-m rookworld_trl.stages.grpo`, `-m rookworld_trl.stages.sft`).
"""
