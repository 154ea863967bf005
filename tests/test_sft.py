"""SFT stage: tiny runs from scratch on a generated P:/A: set, the saved model, early stop, resume, recipes."""

from __future__ import annotations

import glob
import json
import math
import os

import pytest
import torch
from sft_fixtures import STOCKFISH, mixed_lines, to_dataset
from trl import TrlParser
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from rookworld_trl.chess.formats import EOS
from rookworld_trl.data.tokenizer import train_tokenizer
from rookworld_trl.model.loading import load_model_and_tokenizer, new_gpt2_model
from rookworld_trl.stages.sft import RookWorldSFTConfig, SFTScriptArguments, policy_checks, run_sft
from rookworld_trl.training import checkpoints
from rookworld_trl.training.sft import cooldown_max_steps, decay_steps

pytestmark = pytest.mark.skipif(not os.path.exists(STOCKFISH), reason="needs Stockfish")
ROOT = os.path.join(os.path.dirname(__file__), "..")
RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "sft_*.yaml")))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(train, eval) prompt/completion datasets and a saved tokenizer trained on the training lines."""
    lines = mixed_lines(n_policy=90, n_env=90, seed=7)
    tok_dir = str(tmp_path_factory.mktemp("tok"))
    train_tokenizer(lines[:150], vocab_size=400).save_pretrained(tok_dir)
    train, held_out = to_dataset(lines[:150]), to_dataset(lines[150:])
    return (
        train.select_columns(["prompt", "completion"]),
        held_out.select_columns(["prompt", "completion"]),
        tok_dir,
    )


def tiny_args(tok_dir: str, **kw) -> SFTScriptArguments:
    return SFTScriptArguments(
        tokenizer_name_or_path=tok_dir, n_layer=2, n_head=2, n_embd=64, n_positions=256, **kw
    )


def tiny_config(out, **kw) -> RookWorldSFTConfig:
    defaults = dict(
        output_dir=str(out),
        max_length=256,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        warmup_steps=3,
        max_grad_norm=1.0,
        logging_steps=5,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        format_check_samples=0,
        seed=0,
    )
    return RookWorldSFTConfig(**{**defaults, **kw})


def read_metrics(out) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_tiny_sft_lowers_eval_loss_and_saves_a_loadable_model(data, tmp_path):
    train, held_out, tok_dir = data
    config = tiny_config(
        tmp_path,
        max_steps=40,
        eval_strategy="steps",
        eval_steps=40,
        eval_on_start=True,
        report_to="tensorboard",
    )
    trainer = run_sft(tiny_args(tok_dir), config, train, held_out)

    # SFTTrainer's preparation: EOS appended to the completion, loss on the completion tokens only
    tok = trainer.processing_class
    row, example = trainer.train_dataset[0], train[0]
    n_prompt = len(tok(example["prompt"])["input_ids"])
    assert row["input_ids"] == tok(example["prompt"] + example["completion"] + EOS)["input_ids"]
    assert (
        row["labels"][:n_prompt] == [-100] * n_prompt
        and row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
    )
    assert row["labels"][-1] == tok.eos_token_id

    metrics = read_metrics(tmp_path)
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    # from ~ln(400)=6 to well below: runs land at 3.5-3.7 (0.6x was at the edge of run-to-run spread)
    assert len(evals) == 2 and evals[1] < evals[0] - 1.5, evals
    assert any(m.get("tokens_per_second", 0) > 0 for m in metrics)
    assert glob.glob(os.path.join(tmp_path, "**", "events.out.tfevents*"), recursive=True)

    model, tokenizer = load_model_and_tokenizer(str(tmp_path))
    assert model.config.n_layer == 2 and len(tokenizer) == len(tok)
    batch = tokenizer([held_out[0]["prompt"], held_out[1]["prompt"]], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert (
        out.shape[0] == 2 and batch["input_ids"].shape[1] < out.shape[1] <= batch["input_ids"].shape[1] + 20
    )


def test_packed_rows_give_the_padded_batchs_loss_and_train(data, tmp_path):
    """`packing: true`: each packed row holds several samples, told apart by position ids; the loss of the packed batch
    is the padded batch's (attention masked sample by sample), and a run trains on packed rows."""
    from rookworld_trl.training.sft import PackedRows, RookWorldSFTTrainer

    train, held_out, tok_dir = data
    model, tok = load_model_and_tokenizer(os.path.join(ROOT, "rookworld_trl", "assets", "model"))
    rows = []
    for example in train.select(range(6)):
        prompt = tok(example["prompt"])["input_ids"]
        completion = tok(example["completion"] + EOS)["input_ids"]
        rows.append({"input_ids": prompt + completion, "labels": [-100] * len(prompt) + completion})
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    packs = [
        {key: sum((r[key] for r in rows[i : i + 3]), []) for key in ("input_ids", "labels")} for i in (0, 3)
    ]
    for pack, i in zip(packs, (0, 3), strict=True):
        pack["seq_lengths"] = [len(r["input_ids"]) for r in rows[i : i + 3]]
    packed = PackedRows(tok.pad_token_id)(packs)
    assert packed["input_ids"].shape[0] == 2 and "attention_mask" not in packed
    with torch.no_grad():
        assert model(**packed).loss.item() == pytest.approx(model(**padded).loss.item(), rel=1e-5)

    config = tiny_config(tmp_path, max_steps=3, packing=True, per_device_train_batch_size=4)
    trainer = run_sft(tiny_args(tok_dir), config, train, held_out)
    assert isinstance(trainer, RookWorldSFTTrainer) and isinstance(trainer.data_collator, PackedRows)
    assert len(trainer.train_dataset) < 0.8 * len(train)  # samples share rows
    assert trainer.state.global_step == 3 and all(
        math.isfinite(m.get("loss", 0)) for m in read_metrics(tmp_path)
    )


def test_overfit_policy_lines_give_valid_formats(data, tmp_path):
    # A model that has memorised a few P: lines must complete their prompts into valid P: completions:
    # this checks the whole generation path (left padding, greedy decode, EOS stop, parse).
    train, _, tok_dir = data
    policy = train.filter(lambda row: row["prompt"].startswith("P:")).select(range(4))
    config = tiny_config(
        tmp_path,
        max_steps=80,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
    )
    trainer = run_sft(tiny_args(tok_dir), config, policy, policy)
    model, tokenizer = trainer.model, trainer.processing_class
    assert policy_checks(model, tokenizer, list(policy["prompt"]), max_new_tokens=80) == {
        "parsed": 1.0,
        "layout": 1.0,
        "legal_best_move": 1.0,
    }
    # and an untrained model of the same shape does not produce them
    untrained = new_gpt2_model(tokenizer, n_layer=2, n_head=2, n_embd=64, n_positions=256)
    assert policy_checks(untrained, tokenizer, list(policy["prompt"]), max_new_tokens=80)["parsed"] == 0.0


def test_early_stopping_stops_when_eval_loss_stalls(data, tmp_path):
    train, held_out, tok_dir = data
    # learning rate ~0: the eval loss cannot improve, so training stops after 1 + patience evaluations
    config = tiny_config(
        tmp_path,
        max_steps=50,
        learning_rate=1e-12,
        eval_strategy="steps",
        eval_steps=2,
        early_stopping_patience=2,
        early_stopping_threshold=1e-4,  # float noise of a ~1e-12 update must not count as an improvement
    )
    trainer = run_sft(tiny_args(tok_dir), config, train, held_out)
    assert config.metric_for_best_model == "eval_loss"
    assert trainer.state.global_step == 6


def test_continue_a_saved_model_with_dropout(data, tmp_path):
    train, held_out, tok_dir = data
    first = tiny_config(tmp_path / "a", max_steps=10, eval_strategy="steps", eval_steps=10)
    run_sft(tiny_args(tok_dir), first, train, held_out)
    second = tiny_config(tmp_path / "b", max_steps=2, eval_strategy="steps", eval_steps=2, eval_on_start=True)
    trainer = run_sft(
        SFTScriptArguments(model_name_or_path=str(tmp_path / "a"), dropout=0.1), second, train, held_out
    )
    # the continued run starts from the saved weights: its first eval loss is the first run's last
    loss_a = [m["eval_loss"] for m in read_metrics(tmp_path / "a") if "eval_loss" in m][-1]
    loss_b = [m["eval_loss"] for m in read_metrics(tmp_path / "b") if "eval_loss" in m][0]
    assert loss_b == pytest.approx(loss_a, rel=1e-4)
    # with the requested dropout, in the saved config and in the modules
    model = trainer.model
    assert model.config.resid_pdrop == model.config.attn_pdrop == 0.1
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}


def test_resume_auto_takes_the_newest_verified_checkpoint(data, tmp_path):
    train, held_out, tok_dir = data
    kw = dict(save_strategy="steps", save_steps=4, logging_steps=1)
    run_sft(tiny_args(tok_dir), tiny_config(tmp_path, max_steps=8, **kw), train, held_out)
    # checkpoints carry GRPO's verified completion markers; a damaged newest one is skipped on resume
    assert checkpoints.checkpoint_problem(str(tmp_path / "checkpoint-8")) is None
    with open(tmp_path / "checkpoint-8" / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    trainer = run_sft(
        tiny_args(tok_dir),
        tiny_config(tmp_path, max_steps=8, resume_from_checkpoint="auto", **kw),
        train,
        held_out,
    )
    assert trainer.state.global_step == 8
    assert os.listdir(tmp_path / "damaged")  # checkpoint-8 moved aside, never trained from
    # the second run went on from step 4 (no step trained twice) ...
    assert [m["step"] for m in read_metrics(tmp_path) if "loss" in m] == [1, 2, 3, 4, 5, 6, 7, 8]
    # ... with the checkpoint's weights, the LM head still tied to the embedding (not saved separately)
    model = trainer.model
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_script_arguments_checks():
    with pytest.raises(ValueError, match="tokenizer_name_or_path"):
        SFTScriptArguments()
    with pytest.raises(ValueError, match="divisible"):
        SFTScriptArguments(tokenizer_name_or_path="t", n_head=3, n_embd=64)
    with pytest.raises(ValueError, match="early stopping needs evaluations"):
        RookWorldSFTConfig(output_dir="/tmp/x", early_stopping_patience=2, eval_strategy="no")


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipes_parse_with_overrides(recipe):
    overrides = ["--max_steps", "7"]
    if "gpu" in os.path.basename(recipe) and not torch.cuda.is_available():
        overrides += ["--bf16", "false"]  # transformers refuses bf16 on a machine without a GPU
    parser = TrlParser((SFTScriptArguments, RookWorldSFTConfig))
    script_args, config = parser.parse_args_and_config(args=["--config", recipe, *overrides])
    assert config.max_steps == 7
    assert config.max_length <= script_args.n_positions or script_args.model_name_or_path
    assert config.lr_scheduler_type in ("cosine", "warmup_stable_decay") and config.max_grad_norm > 0
    # each recipe evaluates as it goes, and either stops early on its best step or keeps every checkpoint (a curve)
    assert config.eval_strategy == "steps"
    assert config.early_stopping_patience or (
        config.save_total_limit is None and not config.load_best_model_at_end
    )


def test_the_strong_recipe_decays_its_last_fifth_so_a_cooldown_is_a_longer_run():
    """warmup_stable_decay with num_decay_steps 0.2: the rate holds until 80% of max_steps, then falls to 0; the
    same recipe run to 5/4 of a checkpoint's step (the build's cooldown) holds the rate up to that checkpoint."""
    from transformers import get_scheduler

    def rates(max_steps: int, at: list[int]) -> list[float]:
        parser = TrlParser((SFTScriptArguments, RookWorldSFTConfig))
        recipe = os.path.join(ROOT, "recipes", "sft_strong_model.yaml")
        _, config = parser.parse_args_and_config(args=["--config", recipe, "--max_steps", str(max_steps)])
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler = get_scheduler(
            config.lr_scheduler_type, optimizer, config.get_warmup_steps(max_steps), max_steps,
            scheduler_specific_kwargs=config.lr_scheduler_kwargs,
        )  # fmt: skip
        return [scheduler.lr_lambdas[0](step) for step in at]

    assert rates(13000, [100, 10399, 10400, 11700, 13000]) == pytest.approx(
        [0.38, 1, 1, 1 - 0.5**0.5, 0], abs=0.01
    )
    cooldown_of_4000 = rates(5000, [3999, 4000, 4500, 5000])
    assert cooldown_of_4000 == pytest.approx([1, 1, 1 - 0.5**0.5, 0])
    assert cooldown_max_steps(4000, 0.2) == 5000
    for step in (408, 409, 1003):  # not multiples of 4: the decay still starts at the checkpoint
        before, after = rates(cooldown_max_steps(step, 0.2), [step, step + 1])
        assert before == 1 > after
    for share in (0.1, 0.2, 0.33):
        assert all(
            (total := cooldown_max_steps(step, share)) - decay_steps(total, share) == step
            for step in range(1, 3000)
        )
    with pytest.raises(ValueError, match="fraction of max_steps: set max_steps"):
        RookWorldSFTConfig(
            output_dir="/tmp/x",
            use_cpu=True,
            lr_scheduler_type="warmup_stable_decay",
            lr_scheduler_kwargs={"num_decay_steps": 0.2},
        )


def test_the_two_documented_recipes_train_what_their_names_say():
    def parse(name):  # a fresh parser each time: TrlParser keeps a recipe's values as its defaults
        parser = TrlParser((SFTScriptArguments, RookWorldSFTConfig))
        extra = [] if "cpu" in name or torch.cuda.is_available() else ["--bf16", "false"]
        return parser.parse_args_and_config(args=["--config", os.path.join(ROOT, "recipes", name), *extra])

    tiny, tiny_config = parse("sft_tiny_cpu.yaml")  # a small model from scratch, on CPU, in fp32
    assert (
        tiny.model_name_or_path is None and tiny.n_embd < 768 and tiny_config.use_cpu and not tiny_config.bf16
    )
    gpu, _ = parse("sft_rookworld_124m_gpu.yaml")  # continues RookWorld-LM-124M
    assert gpu.model_name_or_path == "jrahn/RookWorld-LM-124M" and gpu.mix_env_ratio == 0.3


def test_sft_exclude_drops_training_rows_through_the_data_pipeline(tmp_path, capsys):
    """--exclude means what it means in `rookworld train`: no training row on one of the files' positions (the
    held-out split is evaluated as it is); the count is said in one line."""
    from rookworld_trl import assets
    from rookworld_trl.chess.formats import parse_policy_prompt
    from rookworld_trl.data.files import fen4
    from rookworld_trl.data.layout import column
    from rookworld_trl.stages.sft import load_splits

    def positions(rows) -> list[str]:
        return [fen4(parse_policy_prompt(p)) for p in column(rows, "prompt") if p.startswith("P: ")]

    args = dict(tokenizer_name_or_path="gpt2", dataset_name=assets.DATA, max_eval_samples=None)
    train, evaluation = load_splits(SFTScriptArguments(**args), seed=0)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("\n".join(positions(train)[:200]) + "\n")
    kept, kept_evaluation = load_splits(SFTScriptArguments(**args, exclude=[str(held_out)]), seed=0)
    assert "--exclude" in capsys.readouterr().out
    assert len(kept) < len(train) and not set(positions(kept)) & set(positions(train)[:200])
    assert len(kept_evaluation) == len(evaluation)
