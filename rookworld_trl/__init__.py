"""RookWorld-TRL: GRPO with verifiable chess rewards for RookWorld-LM, built on TRL. Run `rookworld --help`.

From Python, in TRL's style (README.md, "From Python"; docs/GUIDE.md, "Python"):

    from rookworld_trl import RookWorldGRPOConfig, RookWorldGRPOTrainer, assets, env_reward, load_rookworld_dataset, policy_reward
    args = RookWorldGRPOConfig.from_recipe("grpo_tiny_cpu", max_steps=5, output_dir="runs/try")
    trainer = RookWorldGRPOTrainer(model=assets.MODEL, reward_funcs=[policy_reward, env_reward], args=args,
                                   train_dataset=load_rookworld_dataset(assets.DATA, mix_env_ratio=0.0))
    trainer.train()

The names in `__all__` load on first use (as TRL's do), so `import rookworld_trl` and `rookworld --help` stay fast
(no eager imports here: a lower layer that imports this package must not import the upper ones through it).

Subpackages, bottom layer first (docs/ARCHITECTURE.md; import-linter checks the order):
  common/    one-line errors, --flags, running a command       chess/    formats, python-chess transitions, Stockfish
  data/      a run's data read once, building data              model/    GPT2LMHeadModel loading, our sampler
  training/  TRL seams, checkpoints, metrics, publishing, SFT   grpo/     the GRPO trainer, its step, options, rewards
  stages/    the front door: cli.py (the `rookworld` dispatcher), `rookworld train` and `sft`, and eval/ (`rookworld
             eval`, its suites, charts and summary)
assets/: the embedded model, data and recipes as paths.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# the public names -> the module that defines each (docs/GUIDE.md lists them; tests/test_python_api.py holds them)
_EXPORTS = {
    "RookWorldGRPOTrainer": "rookworld_trl.grpo.trainer",
    "RookWorldGRPOConfig": "rookworld_trl.grpo.config",
    "RookWorldSFTTrainer": "rookworld_trl.training.sft",
    "RookWorldSFTConfig": "rookworld_trl.training.sft",
    "policy_reward": "rookworld_trl.grpo.rewards.functions",
    "env_reward": "rookworld_trl.grpo.rewards.functions",
    "make_policy_reward": "rookworld_trl.grpo.rewards.functions",
    "make_env_reward": "rookworld_trl.grpo.rewards.functions",
    "get_reward_funcs": "rookworld_trl.grpo.rewards.functions",
    "load_rookworld_dataset": "rookworld_trl.data.load",
    "load_model_and_tokenizer": "rookworld_trl.model.loading",
    "generate_completions": "rookworld_trl.model.generation",
    "policy_prompt": "rookworld_trl.chess.formats",
    "env_prompt": "rookworld_trl.chess.formats",
    "EnginePool": "rookworld_trl.chess.engine",
    "evaluate": "rookworld_trl.stages.eval.evaluate",
    "EvalSettings": "rookworld_trl.stages.eval.evaluate",
    "EvalResult": "rookworld_trl.stages.eval.evaluate",
    "UserError": "rookworld_trl.common.errors",
}
__all__ = ["__version__", "assets", *_EXPORTS]  # loaded by __getattr__


def __getattr__(name: str):
    if name == "assets":
        return importlib.import_module("rookworld_trl.assets")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'rookworld_trl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
