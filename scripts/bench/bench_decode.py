"""The sampler of a git commit against the working tree's: bench_step.py's 64 rows (8 prompts x 8 samples,
temperature 0.25, <= 80 new tokens, the embedded model), the same seeds, the two alternating in one process.

    python scripts/bench/bench_decode.py --against 2bae80a            # P: prompts, 16 rounds
    python scripts/bench/bench_decode.py --against 2bae80a --task A
    python scripts/bench/bench_decode.py --against 904b3b3 --profile  # also where each side's time goes

Prints each side's median milliseconds per call and the median of the per-round speedups (old / new), with
their middle half and range: the ratio holds when the machine's speed drifts, which a run-to-run comparison of
tokens/s does not. Also counts the rows whose tokens differ (floating-point rounding can move a draw that falls
on a boundary)."""

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from measure import DATA, MAX_NEW, MODEL, PROMPTS, ROOT, SAMPLES, TEMPERATURE

sys.path.insert(0, str(ROOT))


def load_at(commit: str, tmp: str):
    """rookworld_trl's sampler modules (decoding, and sampling and kv_cache where they exist: later commits hold
    them in decoding) as they were at `commit`, importing each other, not the working tree's."""
    names = ("sampling", "kv_cache", "decoding")  # each after what it imports
    sources = {n: source_at(commit, n) for n in names}
    if sources["decoding"] is None:
        sys.exit(
            f"bench_decode: no rookworld_trl/[model/]decoding.py at {commit!r}: pass a commit of "
            "this repository from after the sampler was split out (a634d12 or later)"
        )
    loaded = {}
    for name in (n for n in names if sources[n] is not None):
        source = sources[name]
        for other in loaded:  # relative (older layout) and absolute (model/) imports of its siblings
            for old in (f"from .{other} import", f"from rookworld_trl.model.{other} import"):
                source = source.replace(old, f"from rookworld_trl._old_{other} import")
        source = source.replace("from .", "from rookworld_trl.model.")  # the rest: the working tree's model/
        path = Path(tmp) / f"_old_{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"rookworld_trl._old_{name}", path)
        loaded[name] = module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return loaded["decoding"], loaded.get("sampling", loaded["decoding"])


def source_at(commit: str, name: str) -> str | None:
    """rookworld_trl/model/NAME.py at `commit`, or rookworld_trl/NAME.py (before the model/ folder); None: neither."""
    for path in (f"rookworld_trl/model/{name}.py", f"rookworld_trl/{name}.py"):
        shown = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if not shown.returncode:
            return shown.stdout
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--against", required=True, help="a commit whose sampler to compare with")
    p.add_argument("--task", choices=("P", "A"), default="P")
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--profile", action="store_true", help="also print each side's ops by self time")
    a = p.parse_args()
    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.model import decoding
    from rookworld_trl.model.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(MODEL)
    model.eval()
    rows = load_rookworld_dataset(DATA, split="train", mix_env_ratio=float(a.task == "A"), seed=0)
    prompts = [
        tokenizer(p)["input_ids"] for p in rows.select(range(PROMPTS))["prompt"] for _ in range(SAMPLES)
    ]
    eos = tokenizer.eos_token_id
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"old": load_at(a.against, tmp), "new": (decoding, decoding)}

        def call(side: str, seed: int):
            dec, smp = sides[side]
            torch.manual_seed(seed)
            sampling_ = smp.Sampling(temperature=TEMPERATURE)
            return dec.sample(model, prompts, max_new_tokens=MAX_NEW, sampling=sampling_, eos_token_ids=[eos],
                              pad_token_id=eos)  # fmt: skip

        seconds, ratios, differing = {"old": [], "new": []}, [], 0
        for i in range(a.rounds + 1):  # round 0 warms up both
            outs = {}
            for side in sides:
                start = time.perf_counter()
                outs[side] = call(side, i)
                if i:
                    seconds[side].append(time.perf_counter() - start)
            if i:
                ratios.append(seconds["old"][-1] / seconds["new"][-1])
            differing += sum(
                x != y for x, y in zip(outs["old"].completion_ids, outs["new"].completion_ids, strict=True)
            )
        if a.profile:
            profile_calls(call, list(sides), calls=4)
    old_ms, new_ms = (statistics.median(seconds[s]) * 1000 for s in ("old", "new"))
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(
        f"{a.task}: prompts, {a.against} {old_ms:.0f} ms, working tree {new_ms:.0f} ms per call; speedup "
        f"{statistics.median(ratios):.3f}x (half the rounds {q1:.2f}-{q3:.2f}, all {min(ratios):.2f}-{max(ratios):.2f}); "
        f"{differing} of {len(prompts) * (a.rounds + 1)} rows differ"
    )


def profile_calls(call, sides: list[str], calls: int, top: int = 12) -> None:
    """Where each side's calls go: the ops with the most self time (torch.profiler), ms per call and share of
    all ops'. The sides alternate call by call, so that both see the same machine."""
    from torch.profiler import ProfilerActivity, profile

    ms = {side: defaultdict(float) for side in sides}
    for seed in range(calls):
        for side in sides:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                call(side, seed)
            for op in prof.key_averages():
                ms[side][op.key] += op.self_cpu_time_total / 1e3 / calls
    for side in sides:
        total = sum(ms[side].values())
        print(
            f"{side}: a call's ops by self time (torch.profiler, mean of {calls} calls, its overhead included)"
        )
        for key, value in sorted(ms[side].items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {value:7.1f} ms {value / total:6.1%}  {key}")
        print(f"  {total:7.1f} ms in all")


if __name__ == "__main__":
    main()
