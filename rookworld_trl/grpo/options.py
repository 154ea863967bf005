"""An RL option as one small protocol the step loops over: `Option`, whose hooks are each a no-op until the option
overrides it, and what its hooks receive: the values of the step (`ScoredBatch`, `Shaping`) and `StepContext`,
the few things of the run an option may read or call, never the trainer itself. The trainer's `options` list
(built by grpo/rl_options.py's `build_options`, in step order) is the one place that names them; grpo/step.py
runs each hook over the list in that order:

  1. prompts      `mix(rows, step)`                          self-play, curriculum and tactics positions into P:
  2. scoring      `after_scoring(ctx, batch, score)`         what an option learns from the scored batch (the
                                                             curriculum, the guard), or a batch in its place
                                                             (dynamic sampling, which re-scores with `score`)
  3. advantages   `shape(ctx, shaping)`                      running baseline, field credit, value baseline
  4. loss         `loss_term(ctx, model, inputs, hidden)`    exact KL, value loss, replays
  5. checkpoints  `saved_state` / `restore_state`            keys of the trainer's STATE_FILE (beta, baselines)
                  `write_files` / `read_files`               files beside it (the value head's weights)

A new option is its module (an `Option`, its check, its builder), its fields and check call in grpo/config.py and
its builder in grpo/rl_options.py's `build_options`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object

from rookworld_trl.grpo import groups
from rookworld_trl.grpo.rewards.functions import policy_components, policy_grader


@dataclass
class ScoredBatch:
    """One generation batch as TRL sampled and scored it, passed down the step as a value: this process's `rows`
    (the dataloader's, whole) and `prompts` (as TRL scored them), every process's `rewards` (N, F: N rows in
    TRL's order, F reward functions, NaN where a function skipped a row), and `output`, TRL's generation batch
    (completion ids and masks, log-probs, `advantages`): what the loss trains on."""

    rows: list[dict]
    prompts: list
    rewards: torch.Tensor
    output: dict


@dataclass
class Shaping:
    """What the advantage steps pass down: the scored batch (its output's advantages replaced in place), the
    running baseline's advantages (for field credit to share), each P: answer's field terms and token layouts;
    every process's weighted rewards and group tasks, computed once when a step first reads them."""

    batch: ScoredBatch
    weights: torch.Tensor  # the reward functions' weights (TRL's reward_weights)
    sequence: object | None = None  # baselines.BaselineAdvantages
    terms: list | None = None
    layouts: list | None = None
    reshaped: bool = False  # a step replaced TRL's group advantages: log ours per task

    @property
    def output(self) -> dict:
        return self.batch.output

    @functools.cached_property
    def rewards(self) -> torch.Tensor:
        """(N,) every process's rows: the reward functions' weighted sum (NaN: unscored), TRL's order."""
        return groups.row_rewards(self.batch.rewards, self.weights)

    @functools.cached_property
    def tasks(self) -> list[str]:
        """Every process's rows: the group each is baselined in (groups.group_task)."""
        return [groups.group_task(p) for p in gather_object(self.batch.prompts)]


class StepContext:
    """What an option's hooks may read of the run and the services they may call, by name; built once by the
    trainer over itself (the values live: `training`, `micro_step` and `accumulation` move as the run does).

    The run: `args` (RookWorldGRPOConfig: every option's fields), `num_generations`, `scale_rewards`,
    `loss_type`, `max_completion_length`, `temperature`, `reward_funcs`, `reward_weights`, `tokenizer`,
    `accelerator`, `model` (the policy), `ref_model`, `exact_kl`, `train_dataset`. Services: `log(name, value)`
    (a figure for the next log line), `scoring_logps(ids, mask, keep)` (TRL's scoring forward, no grad),
    `answer_components(completion_ids, prompts)` (each P: answer's policy-reward components)."""

    def __init__(self, trainer):
        self._trainer = trainer
        self.args, self.accelerator = trainer.args, trainer.accelerator
        self.tokenizer = trainer.processing_class
        self.num_generations, self.loss_type = trainer.num_generations, trainer.loss_type
        self.scale_rewards, self.temperature = trainer.scale_rewards, trainer.temperature
        self.max_completion_length, self.train_dataset = trainer.max_completion_length, trainer.train_dataset
        self.reward_funcs, self.reward_weights = trainer.reward_funcs, trainer.reward_weights
        self.ref_model, self.exact_kl = trainer.ref_model, trainer.exact_kl
        self.log, self.scoring_logps = trainer.metrics.add, trainer.scoring_logps

    @property
    def model(self):
        return self._trainer.model  # FSDP replaces it in train()

    @property
    def training(self) -> bool:
        """Whether the policy is in training mode (the hooks of steps 2-4 run in training only)."""
        return self._trainer.model.training

    @property
    def micro_step(self) -> int:
        """Micro-batches trained so far (restored on resume)."""
        return self._trainer.micro_step

    @property
    def accumulation(self) -> int:
        """Micro-batches of the coming optimizer step (TRL's loss is divided by it)."""
        return self._trainer.current_gradient_accumulation_steps

    def answer_components(self, completion_ids: torch.Tensor, prompts: list) -> list[dict | None]:
        """This process's rows: each P: answer's policy-reward components (None: A:), from the grader's memo."""
        tokenizer = self.tokenizer
        texts = tokenizer.batch_decode(completion_ids.tolist(), skip_special_tokens=False)
        return policy_components(
            policy_grader(self.reward_funcs), prompts, [t.split(tokenizer.eos_token, 1)[0] for t in texts]
        )


class Option:
    """The protocol, with no-op defaults: an option overrides the hooks of the steps it takes part in."""

    def mix(self, rows: list[dict], step: int) -> tuple[list[dict], dict[str, float]]:
        """A generation batch's rows, some P: prompts replaced; and the figures to log."""
        return rows, {}

    def after_scoring(self, ctx: StepContext, batch: ScoredBatch, score) -> ScoredBatch | None:
        """The batch TRL scored (training only): what the option learns from it, and a batch in its place, or None
        to keep it. `score(rows)`: the step's own scoring of other rows (a ScoredBatch, advantages shaped)."""

    def shape(self, ctx: StepContext, shaping: Shaping) -> None:
        """Advantages: change `shaping.output["advantages"]` in place (training only)."""

    def loss_term(self, ctx: StepContext, model, inputs: dict, hidden):
        """A tensor added to TRL's loss of this micro-batch, or None. `hidden`: the policy's completion hidden
        states when an option reads them (exact KL, value head), else None."""
        return None

    def saved_state(self) -> dict:
        """The STATE_FILE keys this option owns, JSON-serialisable."""
        return {}

    def restore_state(self, state: dict) -> None:
        """From a checkpoint's whole STATE_FILE dict (keys of other options ignored)."""

    def write_files(self, checkpoint: str) -> None:
        """Files of its own into the checkpoint directory."""

    def read_files(self, checkpoint: str) -> None:
        """Its files back from a checkpoint directory (called whether or not a STATE_FILE was there)."""
