"""Publishing a GRPO run: the model card of output_dir/final and its upload to the Hugging Face hub.

    rookworld push runs/grpo_tiny_cpu --hub_model_id me/rookworld-grpo     # a finished run, any time later
    rookworld train --push_to_hub true --hub_model_id me/rookworld-grpo    # at the end of training

Only final/'s model files and README.md model card go up, once, at the end (with `push_checkpoints` also each
complete checkpoint's, under checkpoints/checkpoint-N); never optimizer states, logs or caches.
"""

from __future__ import annotations

import argparse
import os
import sys

from rookworld_trl.chess.formats import FEN_WIDTH
from rookworld_trl.common.errors import UserError
from rookworld_trl.common.flags import FlagParser
from rookworld_trl.training.checkpoints import FINAL_DIR, MARKER, checkpoint_problem

# what a model directory needs to load: weights, config, generation config, tokenizer files, the card
MODEL_FILES = ["*.safetensors", "*.json", "merges.txt", "vocab.*", "README.md"]
CARD_SETTINGS = (
    ("reward_funcs", "reward_weights", "reward_shaping", "field_credit", "mix_env_ratio", "engine_depth")
    + ("learning_rate", "beta", "adaptive_kl", "kl_target", "num_generations", "temperature", "epsilon")
    + ("loss_type", "max_completion_length", "per_device_train_batch_size", "max_steps", "seed")
)


def model_card(args, steps: int, base_model: str | None, eval_md: str | None, script_args=None):
    """A huggingface_hub ModelCard: base model, data, the recipe's GRPO settings, the eval table if any."""
    from huggingface_hub import ModelCard, ModelCardData

    recipe = [c for c in (args, script_args) if c is not None]

    def setting(name: str, default=None):
        return next((getattr(c, name) for c in recipe if hasattr(c, name)), default)

    dataset = setting("dataset_name")
    data = ModelCardData(
        library_name="transformers",
        tags=["rookworld", "chess", "grpo", "trl", "rlvr"],
        base_model=base_model if _on_hub(base_model) else None,
        datasets=[dataset] if _on_hub(dataset) else None,
    )
    name = os.path.basename(os.path.abspath(args.output_dir))
    lines = [
        f"# {name}",
        "",
        f"GRPO fine-tune of `{base_model}` with RookWorld-TRL: rewards verified by python-chess (A: task) "
        "and Stockfish (P: task).",
        "",
        f"- data: `{dataset}` (split `{setting('dataset_train_split', 'train')}`)",
        f"- steps trained: {steps}",
        "",
        "## Settings",
        "",
        *[f"- `{k}`: {setting(k)}" for k in CARD_SETTINGS if any(hasattr(c, k) for c in recipe)],
        "",
    ]
    where = setting("hub_model_id") or os.path.join(args.output_dir, FINAL_DIR)
    lines += USAGE.format(where=where, width=setting("fen_width") or FEN_WIDTH).splitlines() + [""]
    if eval_md:
        lines += ["## Held-out evaluation (this model vs. the base model)", "", eval_md]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines))


# the card's usage section: the prompt format at the model's FEN width and a transformers snippet
USAGE = """## Usage

The task is the prompt's prefix (RookWorld-TRL's docs/FORMATS.md has every field):

- `P: ` + the FEN padded with spaces to {width} characters + `M:` -> ` <top-5 moves> E: <their evaluations> B: <best move>`
- `A: ` + FEN + `+` + a UCI move + `+` + the recent moves, space-separated + `+` -> `<next FEN>+<reward>+<terminated>+<truncated>`

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

path = "{where}"
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
fen = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
prompt = "P: " + fen.ljust({width}) + "M:"  # the padding matters: a bare "P: " + fen gives garbage
ids = tokenizer(prompt, return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=96, do_sample=False, pad_token_id=tokenizer.eos_token_id)
print(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))  # " e2e4 ... E: ... B: e2e4"
```
"""


def _on_hub(name: str | None) -> bool:
    from rookworld_trl.model.loading import is_hub_id

    return bool(name) and is_hub_id(name) and not os.path.exists(name)


def hub_repo(args) -> str:
    """The repo to publish to: hub_model_id, else the output_dir's name (under the token's user)."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def retry_command(args) -> str:
    """The command that pushes this run's final/ again (the run stays on disk whatever the hub says)."""
    return f"rookworld push {args.output_dir} --hub_model_id {hub_repo(args)}"


def check_hub(args, training: bool = True) -> None:
    """Before training (or `rookworld push`): one UserError now, not after hours of training, unless the
    network, a token, a valid repo name and the hub's answer are there."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if constants.HF_HUB_OFFLINE:
        fix = "unset it or drop --push_to_hub" if training else "unset it (the run stays on disk)"
        raise UserError(f"pushing needs the network but HF_HUB_OFFLINE is set: {fix}")
    repo = hub_repo(args)
    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise UserError(f"hub_model_id {repo!r} is no valid repo name ({e}); use NAME or USER/NAME") from None
    if not (args.hub_token or get_token()):
        raise UserError(
            "pushing needs a Hugging Face token: run `hf auth login` or set HF_TOKEN (or --hub_token)"
        )
    try:
        HfApi(token=args.hub_token).whoami()
    except Exception as e:  # offline, a refused token: one line, before any training
        raise UserError(_hub_problem(e, args, training)) from None


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _hub_problem(e: Exception, args, training: bool) -> str:
    """What the hub's answer to whoami means, and what to do about it."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(e, HfHubHTTPError) and e.response is not None and e.response.status_code == 401:
        return "the hub does not accept the token: log in again with `hf auth login` or set a valid HF_TOKEN"
    push_later = "drop --push_to_hub and push the finished run with `rookworld push`"
    later = push_later if training else f"retry with: {retry_command(args)}"
    return f"cannot reach the hub at {constants.ENDPOINT} ({_reason(e)}); check the network, or {later}"


def upload(args, folder: str, path_in_repo: str | None = None, message: str = "RookWorld GRPO final") -> bool:
    """Upload a model directory to the run's hub repo; whether it went up (a failure is one line, not a crash)."""

    from huggingface_hub import HfApi

    try:
        api = HfApi(token=args.hub_token)
        repo = api.create_repo(hub_repo(args), private=args.hub_private_repo, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo,
            folder_path=folder,
            path_in_repo=path_in_repo,
            allow_patterns=MODEL_FILES,
            ignore_patterns=[MARKER],  # our local proof that the files are whole, not a model file
            commit_message=message,
        )
        return True
    except Exception as e:  # network, auth, offline: say so instead of a traceback
        print(
            f"push_to_hub failed ({_reason(e)}); the model is saved in {folder}; retry with: "
            f"{retry_command(args)}",
            file=sys.stderr,
        )
        return False


def push_checkpoint(args, checkpoint_dir: str) -> None:
    """A complete checkpoint's model files to checkpoints/<name> (push_checkpoints)."""
    name = os.path.basename(checkpoint_dir)
    upload(args, checkpoint_dir, f"checkpoints/{name}", f"RookWorld GRPO {name}")


def push_run(run: str, hub_model_id: str | None, hub_token: str | None = None, private: bool = False) -> int:
    """`rookworld push`: upload a finished run's final/ (model and card) to the hub; an exit code."""
    final = os.path.join(run, FINAL_DIR)
    if not os.path.isdir(run):
        raise UserError(f"no run folder at {run}: pass a training run's output_dir (e.g. runs/grpo_tiny_cpu)")
    if problem := checkpoint_problem(final):
        raise UserError(
            f"{run} has no finished model to push ({final}: {problem}); finish the run first (the same "
            "`rookworld train` command resumes it)"
        )
    if not os.path.isfile(os.path.join(final, "README.md")):
        raise UserError(f"{final} has no model card (README.md); finish the run with `rookworld train` first")
    args = argparse.Namespace(
        output_dir=run, hub_model_id=hub_model_id, hub_token=hub_token, hub_private_repo=private
    )
    check_hub(args, training=False)
    if not upload(args, final):
        return 1
    print(f"rookworld push: {final} is on the hub as {hub_repo(args)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(
        prog="rookworld push",
        description="Upload a finished run's final/ model with its model card (eval table and recipe settings) "
        "to the Hugging Face hub.",
        epilog="example: rookworld push runs/grpo_tiny_cpu --hub_model_id me/rookworld-grpo",
    )
    parser.add_argument("run", help="the run's output_dir (it holds final/)")
    parser.add_argument("--hub_model_id", help="USER/NAME or NAME (default: the run folder's name)")
    parser.add_argument("--hub_token", help="default: HF_TOKEN or `hf auth login`'s token")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    args = parser.parse_args(argv)
    return push_run(args.run.rstrip("/") or args.run, args.hub_model_id, args.hub_token, args.private)


if __name__ == "__main__":
    from rookworld_trl.common.entry import run_stage

    sys.exit(run_stage("push", main))
