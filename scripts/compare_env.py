"""Where two models' A: answers differ: greedy exact next states and the teacher-forced loss of the truth, on the
same drawn transitions of a split, and the transitions one gets right and the other wrong.

    python scripts/compare_env.py rookworld_trl/assets/model runs/grpo_tiny_cpu/final
    python scripts/compare_env.py BASE RUN/final --split train --rows 400 --show 10

Per split: each model's exact next-state rate (python-chess's truth, as `rookworld eval` scores it) and the mean
NLL per completion token of the truth (with EOS; the first `--nll_rows` rows); then the counts of transitions
lost (right before, wrong after) and won, and the first `--show` of them as truth / first / second FEN.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import load_model_and_tokenizer
from rookworld_trl.stages.eval.suites import env_figures


def truth_nll(model, tok, prompts, completions) -> float:
    """Mean NLL per token of each completion (and EOS) after its prompt."""
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions, strict=True):
            head, tail = tok(prompt)["input_ids"], tok(completion)["input_ids"] + [tok.eos_token_id]
            logits = model(torch.tensor([head + tail])).logits[0, len(head) - 1 : -1]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(tail), reduction="sum").item()
            count += len(tail)
    return total / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--data", default="rookworld_trl/assets/data")
    p.add_argument("--split", default="train,test", help="comma-separated splits")
    p.add_argument("--rows", type=int, default=400, help="A: transitions drawn per split (seed 0)")
    p.add_argument("--nll_rows", type=int, default=200)
    p.add_argument("--show", type=int, default=0, help="transitions lost or won to print per split")
    args = p.parse_args()
    names = (args.first, args.second)
    models = [load_model_and_tokenizer(name, device="cpu") for name in names]
    for split in args.split.split(","):
        rows = pd.read_parquet(f"{args.data}/{split}.parquet").query("task == 'A'")
        rows = rows.sample(min(args.rows, len(rows)), random_state=0)
        prompts, truths = list(rows.prompt), list(rows.completion)
        answers, exact = [], []
        for name, (model, tok) in zip(names, models, strict=True):
            answers.append(generate_completions(model, tok, prompts, batch_size=64, max_new_tokens=96,
                                                do_sample=False))  # fmt: skip
            said = zip(prompts, answers[-1], strict=True)
            exact.append([env_figures(q, a)["next_state_accuracy"] for q, a in said])
            nll = truth_nll(model, tok, prompts[: args.nll_rows], truths[: args.nll_rows])
            print(f"{split} {name}: exact {100 * sum(exact[-1]) / len(prompts):.2f}% of {len(prompts)}, "
                  f"truth NLL {nll:.4f} a token (first {min(args.nll_rows, len(prompts))})")  # fmt: skip
        flips = [i for i in range(len(prompts)) if exact[0][i] != exact[1][i]]
        print(f"{split}: lost {sum(exact[0][i] > exact[1][i] for i in flips)}, "
              f"won {sum(exact[1][i] > exact[0][i] for i in flips)}")  # fmt: skip
        for i in flips[: args.show]:
            print(f"  {'lost' if exact[0][i] else 'won '} truth  {truths[i].split('+')[0]}")
            print(f"       first  {answers[0][i].split('+')[0]}\n       second {answers[1][i].split('+')[0]}")


if __name__ == "__main__":
    main()
