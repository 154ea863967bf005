"""How much of a GRPO run's returns a value head can explain: the ceiling behind value_baseline's warm-up.

    python scripts/experiments/value_study.py runs/grpo_tiny_cpu                 # ~10 min for 150 steps on 2 cores

For each logged step of RUN (completions/*.parquet, P: rows) the returns to go are rebuilt as value_baseline
builds them (field terms graded again from RUN's engine cache, token rewards, GAE lambda 1, gamma 1), on the
token states of `--model` (the run's starting model). Prints the explained variance (EV) of these returns, mean
over the last 30 steps, of:
  sibling      the mean return of the same position's other samples at the same token: a value that knows each
               position's difficulty for this policy (an upper mark, not a function of the state alone)
  token index  the previous batch's mean return at each token index
  linear, mlp  heads on the detached last hidden state, one Adam step per batch (linear: the shipped head)
  model        a trainable copy of the whole model with a linear head (a separate value model, as in PPO)
Each head's EV is taken on a batch before it trains on it, as value_baseline's warm-up measures it.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os

import pandas as pd
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from rookworld_trl.chess.engine import EnginePool
from rookworld_trl.grpo import credit, value
from rookworld_trl.grpo.rewards.functions import policy_components
from rookworld_trl.grpo.rewards.policy import PolicyGrader


def batches(run: str, tokenizer, grader, shaping: str):
    """Per logged step: (prompt ids, completion ids, (B, T) returns, (B, T) mask, each row's prompt: its group)."""
    for path in sorted(glob.glob(os.path.join(run, "completions", "completions_*.parquet"))):
        rows = pd.read_parquet(path)
        if "policy_reward" not in rows:
            continue  # step 0's file holds no scored samples
        rows = rows[rows.prompt.astype(str).str.startswith("P:")].reset_index(drop=True)
        prompts, texts = list(rows.prompt), list(rows.completion)
        terms = [credit.field_terms(c, shaping) for c in policy_components(grader, prompts, texts)]
        ids = [tokenizer(t).input_ids + [tokenizer.eos_token_id] for t in texts]
        width = max(map(len, ids))
        mask = torch.zeros(len(ids), width)
        layouts = []
        for i, row in enumerate(ids):
            mask[i, : len(row)] = 1
            layouts.append(credit.token_layout([tokenizer.decode([t]) for t in row]))
        rewards = torch.tensor(rows.policy_reward.to_numpy(), dtype=torch.float32)
        per_token = value.token_rewards(rewards, mask, terms, layouts)
        returns = value.gae(per_token, torch.zeros_like(per_token), mask, 1.0, 1.0)[1]
        yield [tokenizer(p).input_ids for p in prompts], ids, returns, mask, prompts


def states(backbone, prompt_ids, completion_ids) -> torch.Tensor:
    """(B, T, H) last hidden state before each completion token (right-padded)."""
    seqs = [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)]
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], att[i, : len(s)] = torch.tensor(s), 1
    hidden = backbone(ids, attention_mask=att).last_hidden_state
    t = max(map(len, completion_ids))
    out = hidden.new_zeros(len(seqs), t, hidden.shape[-1])
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        out[i, : len(c)] = hidden[i, len(p) - 1 : len(p) + len(c) - 1]
    return out


def sibling_values(returns: torch.Tensor, mask: torch.Tensor, groups: list[str]) -> torch.Tensor:
    """Each token's value: the mean return of the other samples of its position at the same index."""
    out = torch.zeros_like(returns)
    for i, g in enumerate(groups):
        others = [j for j, h in enumerate(groups) if h == g and j != i]
        if others:
            m = mask[others]
            out[i] = (returns[others] * m).sum(0) / m.sum(0).clamp(min=1)
    return out


class Head(torch.nn.Module):
    """A value head on the hidden state: 'linear' (the shipped one) or 'mlp' (normalised input, one layer of
    4H GELU units); starts at the first batch's mean return."""

    def __init__(self, hidden: int, kind: str):
        super().__init__()
        last = torch.nn.Linear(hidden if kind == "linear" else 4 * hidden, 1)
        torch.nn.init.zeros_(last.weight)
        body = [torch.nn.LayerNorm(hidden, elementwise_affine=False), torch.nn.Linear(hidden, 4 * hidden)]
        self.net = torch.nn.Sequential(*([] if kind == "linear" else [*body, torch.nn.GELU()]), last)
        self.last = last

    def forward(self, h):
        return self.net(h).squeeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a GRPO output_dir with completions/ and engine_cache.sqlite")
    parser.add_argument("--model", default="rookworld_trl/assets/model", help="the run's starting model")
    parser.add_argument("--shaping", default="dense", help="the run's reward_shaping")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of every head")
    parser.add_argument("--last", type=int, default=30, help="steps averaged at the end")
    parser.add_argument("--steps", type=int, default=None, help="only the first STEPS logged steps")
    args = parser.parse_args()
    if not glob.glob(os.path.join(args.run, "completions", "completions_*.parquet")):
        parser.exit(2, f"value_study: no completions in {args.run}/completions: give a GRPO output_dir whose "
                    "recipe has log_completions: true\n")  # fmt: skip
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    frozen = GPT2LMHeadModel.from_pretrained(args.model).transformer.eval()
    trained = GPT2LMHeadModel.from_pretrained(args.model).transformer.train()
    hidden = frozen.config.n_embd
    heads = {"linear": Head(hidden, "linear"), "mlp": Head(hidden, "mlp"), "model": Head(hidden, "linear")}
    params = {
        k: list(h.parameters()) + (list(trained.parameters()) if k == "model" else [])
        for k, h in heads.items()
    }
    optims = {k: torch.optim.Adam(p, lr=args.lr) for k, p in params.items()}
    pool = EnginePool(cache=os.path.join(args.run, "engine_cache.sqlite"))
    grader = PolicyGrader(pool, args.shaping)
    ev = {k: [] for k in ("sibling", "token index", *heads)}
    previous = None  # the previous batch's mean return per token index
    steps = itertools.islice(batches(args.run, tokenizer, grader, args.shaping), args.steps)
    for step, (p_ids, c_ids, returns, mask, groups) in enumerate(steps):
        ev["sibling"].append(value.explained_variance(sibling_values(returns, mask, groups), returns, mask))
        index_mean = (returns * mask).sum(0) / mask.sum(0).clamp(min=1)
        if previous is not None:
            width = min(len(previous), returns.shape[1])
            guess = torch.full_like(returns, float(previous.mean()))
            guess[:, :width] = previous[:width]
            ev["token index"].append(value.explained_variance(guess, returns, mask))
        previous = index_mean
        with torch.no_grad():
            fixed = states(frozen, p_ids, c_ids)
        for name, head in heads.items():
            if step == 0:
                head.last.bias.data.fill_(float((returns * mask).sum() / mask.sum()))
            h = states(trained, p_ids, c_ids) if name == "model" else fixed
            values = head(h)
            ev[name].append(value.explained_variance(values.detach(), returns, mask))
            loss = 0.5 * (((values - returns) ** 2) * mask).sum() / mask.sum()
            optims[name].zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params[name], 1.0)
            optims[name].step()
        if (step + 1) % 25 == 0:
            print(f"step {step + 1}: " + ", ".join(f"{k} {v[-1]:+.2f}" for k, v in ev.items()), flush=True)
    print(
        f"explained variance of the returns, mean over the last {args.last} steps ({len(ev['sibling'])} steps):"
    )
    for name, values in ev.items():
        tail = values[-args.last :]
        print(f"  {name:<12}{sum(tail) / len(tail):+.3f}")
    pool.close()


if __name__ == "__main__":
    main()
