"""`rookworld doctor`: the first command to run on a new machine (GPU users above all). It checks the
environment, then runs each path a GPU run takes on the embedded model and prints a PASS/FAIL/SKIP table with
figures; for each FAIL, the recipe line (or setting) that switches that path off.

    rookworld doctor                      # ~1 min on a CPU; GPU rows say SKIP where there is no CUDA
    rookworld doctor --skip_grpo          # everything but the 2-step GRPO run

A check that raises is a FAIL with its one-line cause, never a traceback. Exit code: 0 when nothing FAILed, else 1.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from rookworld_trl.common.flags import FlagParser

MODEL = "rookworld_trl/assets/model"
DATA = "rookworld_trl/assets/data"
NEW_TOKENS = 48


class Skip(Exception):
    """A check that does not apply on this machine (e.g. no CUDA): its message says why."""


@dataclass
class Check:
    name: str
    run: Callable[[dict], str]  # (shared state) -> figures; raises Skip, or anything for a FAIL
    switch_off: str  # what turns this path off, shown for a FAIL
    status: str = ""  # once run: PASS, FAIL or SKIP
    figures: str = ""


def run_checks(checks: list[Check]) -> list[Check]:
    """Each check in turn, printed as it finishes; an exception is a FAIL with its first line."""
    state: dict = {}
    for check in checks:
        start = time.perf_counter()
        try:
            figures, check.status = check.run(state), "PASS"
        except Skip as e:
            figures, check.status = str(e), "SKIP"
        except Exception as e:  # whatever a path raises is that path's FAIL
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            figures, check.status = f"{type(e).__name__}: {first}"[:200], "FAIL"
        check.figures = f"{figures} ({time.perf_counter() - start:.1f} s)"
        print(f"  {check.status:<4}  {check.name}", flush=True)
    return checks


def table(rows: list[Check]) -> str:
    width = max(len(r.name) for r in rows)
    lines = [f"{'check':<{width}}  result  figures", f"{'-' * width}  ------  -------"]
    lines += [f"{r.name:<{width}}  {r.status:<6}  {r.figures}" for r in rows]
    if failed := [r for r in rows if r.status == "FAIL"]:
        lines += ["", "to switch a failing path off:", *(f"  {r.name}: {r.switch_off}" for r in failed)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- environment


def versions(state) -> str:
    import accelerate
    import chess
    import torch
    import transformers
    import trl

    return (f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"trl {trl.__version__}, accelerate {accelerate.__version__}, python-chess {chess.__version__}")  # fmt: skip


def trl_internals(state) -> str:
    from rookworld_trl.training import trl_compat  # runs the check at import too

    trl_compat.check_internals()
    return f"{len(trl_compat.METHODS)} methods, {len(trl_compat.ATTRIBUTES)} attributes found"


def cuda(state) -> str:
    import torch

    needs_cuda()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{len(names)} device(s): {', '.join(names)}; CUDA {torch.version.cuda}"


def bf16(state) -> str:
    import torch

    needs_cuda()
    if not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"{torch.cuda.get_device_name()} has no bf16")
    x = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
    return f"bf16 matmul ok ({(x @ x).dtype})"


def stockfish(state) -> str:
    import chess

    from rookworld_trl.chess.engine import MULTIPV, EngineLimit, EnginePool, find_stockfish

    path = find_stockfish()
    with EnginePool(1, EngineLimit(depth=10), multipv=MULTIPV) as pool:
        start = time.perf_counter()
        best = pool.analyse(chess.STARTING_FEN)
        took = time.perf_counter() - start
    return f"{path}: start position at depth 10, best {best[0].move} in {took * 1000:.0f} ms"


# ----------------------------------------------------------------------------- the GPU paths


def needs_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise Skip("no CUDA")


def embedded(state, device: str):
    """(model on device, tokenizer, prompt ids of 8 P:/A: prompts), loaded once per device."""
    if device not in state:
        from rookworld_trl.common.paths import resolve_path
        from rookworld_trl.data.load import load_rookworld_dataset
        from rookworld_trl.model.loading import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(resolve_path(MODEL))
        rows = load_rookworld_dataset(resolve_path(DATA), split="test")
        prompts = [p for task in "PA" for p in [r["prompt"] for r in rows if r["task"] == task][:4]]
        state[device] = model.to(device).eval(), tokenizer, tokenizer(prompts)["input_ids"]
    return state[device]


def sampler_path(path: str, device: str, bf16: bool = False) -> Callable[[dict], str]:
    """A check of one sampler path: greedy tokens against generate(), the log-prob gap to the forward, tokens/s."""

    def run(state) -> str:
        import torch

        from rookworld_trl.model import decoding
        from rookworld_trl.model import generation as fallback
        from rookworld_trl.model.decoding import Decoding, Sampling

        autocast = torch.bfloat16 if bf16 else None
        if device == "cuda":
            needs_cuda()
        model, tokenizer, ids = embedded(state, device)
        eos = tokenizer.eos_token_id
        greedy = Decoding(NEW_TOKENS, Sampling(do_sample=False), (eos,), eos, autocast_dtype=autocast)
        go = (functools.partial(fallback.generate_sample, model, ids, greedy) if path == "transformers"
              else functools.partial(decoding.sample, model, ids, greedy, cuda_graph=path == "graph"))  # fmt: skip
        go()  # warm-up (a CUDA graph is captured per call: the timed call captures too)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        out = go()
        sync()
        took = time.perf_counter() - start
        reference = state.setdefault(
            ("generate", device, autocast), fallback.generate_sample(model, ids, greedy)
        )
        same = sum(a == b for a, b in zip(out.completion_ids, reference.completion_ids, strict=True))
        batch = fallback.batch(ids, out, eos, model.device)
        scored = fallback.forward_logps(model, batch[0], batch[1], batch[2].size(1), 1.0, autocast)
        gap = fallback.gap_of(batch[2], scored, batch[3].to(model.device))
        tokens = sum(len(c) for c in out.completion_ids)
        figures = (f"greedy = generate() on {same}/{len(ids)} rows, log-prob gap to the forward mean {gap.mean:.2g} "
                   f"max {gap.max:.2g}, {tokens / took:.0f} tokens/s")  # fmt: skip
        # bf16: kernels of other shapes round differently, a row may take another turn
        if same < (len(ids) if autocast is None else len(ids) // 2) or gap.mean > fallback.TOLERANCE:
            raise RuntimeError(figures)
        return figures

    return run


def bf16_scoring(state) -> str:
    """The scoring forward under bf16 autocast against fp32 on the same tokens."""
    import torch

    from rookworld_trl.model import generation as fallback
    from rookworld_trl.model.decoding import Decoding, Sampling

    needs_cuda()
    model, tokenizer, ids = embedded(state, "cuda")
    eos = tokenizer.eos_token_id
    greedy = Decoding(NEW_TOKENS, Sampling(do_sample=False), (eos,), pad_token_id=eos)
    out = state.get(("generate", "cuda", None)) or fallback.generate_sample(model, ids, greedy)
    x, mask, _, completion_mask = fallback.batch(ids, out, tokenizer.eos_token_id, model.device)
    fp32 = fallback.forward_logps(model, x, mask, completion_mask.size(1), 1.0)
    bf16 = fallback.forward_logps(model, x, mask, completion_mask.size(1), 1.0, torch.bfloat16)
    gap = fallback.gap_of(fp32, bf16, completion_mask.to(model.device))
    if gap.mean > fallback.TOLERANCE:
        raise RuntimeError(f"bf16 log-probs {gap.mean:.2g} per token from fp32 (max {gap.max:.2g})")
    return f"log-prob gap bf16 vs fp32 mean {gap.mean:.2g}, max {gap.max:.2g} over {gap.tokens} tokens"


def compiled(state) -> str:
    """torch.compile (inductor, static shapes, as single_gpu_compile.yaml) of the forward against eager."""
    import torch

    needs_cuda()
    model, tokenizer, ids = embedded(state, "cuda")
    x = torch.tensor([ids[0]], device="cuda")
    with torch.no_grad():
        eager = model(x).logits
        start = time.perf_counter()
        fast = torch.compile(model, dynamic=False)(x).logits
        took = time.perf_counter() - start
    diff = (eager - fast).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"compiled logits {diff:.2g} from eager")
    return f"compiled logits within {diff:.2g} of eager; compile + first call {took:.0f} s"


def second_device(state) -> str:
    """The reference model on cuda:1 (ref_model_device) scores as on cuda:0."""
    import copy

    import torch

    from rookworld_trl.model import generation as fallback
    from rookworld_trl.model.decoding import left_pad

    needs_cuda()
    if torch.cuda.device_count() < 2:
        raise Skip("one CUDA device")
    model, tokenizer, ids = embedded(state, "cuda")
    ref = copy.deepcopy(model).to("cuda:1")
    x, mask = left_pad(ids, tokenizer.eos_token_id, "cuda")
    a = fallback.forward_logps(model, x, mask, 8, 1.0)
    b = fallback.forward_logps(ref, x.to("cuda:1"), mask.to("cuda:1"), 8, 1.0).to("cuda")
    diff = (a - b).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"cuda:1 scores {diff:.2g} from cuda:0")
    return f"cuda:1 scores within {diff:.2g} of cuda:0"


def grpo_two_steps(state) -> str:
    """Two GRPO steps of the tiny recipe (on the GPU in bf16 where there is one), in this process."""
    import torch

    from rookworld_trl.common.paths import resolve_path
    from rookworld_trl.stages import grpo

    with tempfile.TemporaryDirectory() as out:
        argv = ["--config", resolve_path("recipes/grpo_tiny_cpu.yaml"), "--output_dir", out, "--max_steps", "2",
                "--dataset_max_samples", "32", "--per_device_train_batch_size", "8", "--num_generations", "4",
                "--max_completion_length", "56", "--engine_depth", "4", "--engine_workers", "1",
                "--eval_samples", "0", "--eval_every_steps", "0", "--report_to", "none", "--disable_tqdm", "true",
                "--save_strategy", "no", "--log_completions", "false"]  # fmt: skip
        if torch.cuda.is_available():
            argv += ["--use_cpu", "false", "--bf16", str(torch.cuda.is_bf16_supported()).lower()]
        chatter = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            trainer, engine, *_ = grpo.build(argv)
            try:
                trainer.train()
            finally:
                engine.close()
        took = time.perf_counter() - start
        steps = [row for row in trainer.state.log_history if "loss" in row]
        if len(steps) != 2:
            raise RuntimeError(f"{len(steps)} of 2 steps logged: {chatter.getvalue().strip()[-200:]}")
        gap = steps[0].get("sampling/logprob_gap/mean")
        device = next(trainer.model.parameters()).device
        return (f"2 steps on {device} in {took:.0f} s, loss {steps[-1]['loss']:.3g}, "
                f"sampler log-prob gap to TRL's scoring {gap:.2g}")  # fmt: skip


def checks(skip_grpo: bool = False) -> list[Check]:
    graph_off = (
        "ROOKWORLD_SAMPLER=eager (every command); in a GRPO recipe also generation_backend: transformers"
    )
    eager_off = "ROOKWORLD_SAMPLER=transformers; in a GRPO recipe generation_backend: transformers"
    found = [
        Check("versions", versions, "bash scripts/setup.sh (installs the pinned versions)"),
        Check("TRL internals", trl_internals, "bash scripts/setup.sh (installs the pinned trl/transformers)"),
        Check("CUDA", cuda, "use_cpu: true with --accelerate_config accelerate_configs/cpu.yaml"),
        Check("bf16", bf16, "bf16: false"),
        Check("Stockfish", stockfish, "apt-get install stockfish, or STOCKFISH_PATH=/path/to/stockfish"),
        Check("sampler: CUDA graph, fp32", sampler_path("graph", "cuda"), graph_off),
        Check("sampler: CUDA graph, bf16", sampler_path("graph", "cuda", bf16=True), graph_off),
        Check("sampler: eager, CUDA bf16", sampler_path("eager", "cuda", bf16=True), eager_off),
        Check("sampler: eager, CPU", sampler_path("eager", "cpu"), eager_off),
        Check("transformers generate, CPU", sampler_path("transformers", "cpu"), "(the reference path)"),
        Check("bf16 scoring vs fp32", bf16_scoring, "bf16: false"),
        Check("torch.compile", compiled, "torch_compile: false, and dynamo_backend: \"NO\" in the accelerate config"),
        Check("reference model on cuda:1", second_device, "ref_model_device: null"),
    ]  # fmt: skip
    if not skip_grpo:
        found.append(Check("GRPO, 2 steps", grpo_two_steps, "(see the line above it that FAILed)"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(
        prog="rookworld doctor",
        description="Check this machine: environment, each GPU path on a tiny model, a 2-step GRPO run.",
        epilog="example: rookworld doctor",
    )
    parser.add_argument(
        "--skip_grpo", action="store_true", help="leave out the 2-step GRPO run (default: run it)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedded model and data: nothing to download
    print("rookworld doctor: checking this machine", flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    rows = run_checks(checks(args.skip_grpo))
    print(f"\n{table(rows)}\n")
    took, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{len(rows)} checks in {took:.0f} s ({cpu:.0f} s of CPU time in this process)")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
