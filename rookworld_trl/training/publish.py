"""Publishing a GRPO run: the model card of output_dir/final and its upload to the Hugging Face hub.

Only final/ goes up (weights, tokenizer, config, generation config and the README.md model card), once, at
the end; with `push_checkpoints`, each complete checkpoint's model files go up too, under
checkpoints/checkpoint-N. Never stable/, optimizer states, the completions Parquet, the engine cache or
nan_batches/. Trainer's own push is switched off by the trainer (it would upload output_dir at every save).
"""

from __future__ import annotations

import os
import sys

from rookworld_trl.training.checkpoints import MARKER

# what a model directory needs to load: weights, config, generation config, tokenizer files, the card
MODEL_FILES = ["*.safetensors", "*.json", "merges.txt", "vocab.*", "README.md"]
CARD_SETTINGS = (
    ("reward_funcs", "reward_weights", "reward_shaping", "field_credit", "mix_env_ratio", "engine_depth")
    + ("learning_rate", "beta", "adaptive_kl", "kl_target", "num_generations", "temperature", "epsilon")
    + ("loss_type", "max_completion_length", "per_device_train_batch_size", "max_steps", "seed")
)


def model_card(args, steps: int, base_model: str | None, eval_md: str | None, script_args=None):
    """A huggingface_hub ModelCard: base model, data, the recipe's GRPO settings, the eval table if any.
    `args`: the trainer's config; `script_args`: the stage's (data, engine), when the stage has them apart."""
    from huggingface_hub import ModelCard, ModelCardData

    recipe = [c for c in (args, script_args) if c is not None]

    def setting(name: str, default=None):
        return next((getattr(c, name) for c in recipe if hasattr(c, name)), default)

    dataset = setting("dataset_path")
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
        f"- data: `{dataset}` (split `{setting('dataset_split', 'train')}`)",
        f"- steps trained: {steps}",
        "",
        "## Settings",
        "",
        *[f"- `{k}`: {setting(k)}" for k in CARD_SETTINGS if any(hasattr(c, k) for c in recipe)],
        "",
    ]
    if eval_md:
        lines += ["## Held-out evaluation (this model vs. the base model)", "", eval_md]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines))


def _on_hub(name: str | None) -> bool:
    from rookworld_trl.model.loading import is_hub_id

    return bool(name) and is_hub_id(name) and not os.path.exists(name)


def write_model_card(
    trainer, final_dir: str, base_model: str | None, eval_md: str | None, script_args=None
) -> str:
    """README.md in final_dir (see model_card)."""
    path = os.path.join(final_dir, "README.md")
    model_card(trainer.args, trainer.state.global_step, base_model, eval_md, script_args).save(path)
    return path


def hub_repo(args) -> str:
    """The repo to publish to: hub_model_id, else the output_dir's name (under the token's user)."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def upload(args, folder: str, path_in_repo: str | None = None, message: str = "RookWorld GRPO final") -> bool:
    """Upload a model directory's MODEL_FILES to the run's hub repo; a failure is one line, never a crash
    (the local files are safe). Returns whether it went up."""
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
            f"push_to_hub failed ({type(e).__name__}: {e}); the model is saved in {folder}", file=sys.stderr
        )
        return False


def push_checkpoint(args, checkpoint_dir: str) -> None:
    """A complete checkpoint's model files to checkpoints/<name> (push_checkpoints)."""
    name = os.path.basename(checkpoint_dir)
    upload(args, checkpoint_dir, f"checkpoints/{name}", f"RookWorld GRPO {name}")
