"""The front door (cli.py, launch.py, preflight.py, recipe.py, doctor.py) and the stages it starts through
accelerate (grpo.py, sft.py), each parsing a recipe, building a trainer, training and evaluating; eval/."""
