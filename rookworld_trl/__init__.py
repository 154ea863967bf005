"""RookWorld-TRL: GRPO with verifiable chess rewards for RookWorld-LM, built on TRL. Run `rookworld --help`.

Subpackages, bottom layer first (docs/ARCHITECTURE.md; import-linter checks the order):
  chess/     formats, python-chess transitions, Stockfish        data/     data in and out, `rookworld data`
  model/     GPT2LMHeadModel loading, our sampler                rewards/  TRL reward functions
  training/  TRL seams, checkpoints, metrics, publishing, SFT    grpo/     the GRPO trainer and its step
  eval/      `rookworld eval`, suites, `rookworld report`        stages/   `rookworld train` and `rookworld sft`
and the modules entry, flags, stats, quiet_logs, errors (below all), doctor and cli (above all).
"""

__version__ = "0.1.0"
