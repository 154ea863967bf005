"""Load RookWorld-LM (a transformers GPT2LMHeadModel) and its tokenizer, or make a new small GPT-2.

    from rookworld_trl.model.loading import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer("jrahn/RookWorld-LM-124M")   # hub id (cached or online)
    model, tokenizer = load_model_and_tokenizer("runs/sft/checkpoint-500")   # a local HF model directory

One loader for every stage; what cannot load fails with one `ModelLoadError` saying what was tried and what to do.
"""

from __future__ import annotations

import os
import pickle

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerBase
from transformers.activations import ACT2FN

from rookworld_trl.common.quiet_logs import dropping
from rookworld_trl.model.reference_gpt2 import position_ids
from rookworld_trl.model.source import ModelLoadError, is_hub_id, model_source, safetensors_problem

EOS_TOKEN = "<|endoftext|>"
FEN_WIDTH_KEY = "rookworld_fen_width"  # in config.json: the P: FEN width of a model's training data
DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout")


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer_name_or_path: str | None = None,
    revision: str | None = None,
    model_kwargs: dict | None = None,
) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerBase]:
    """Load a GPT2LMHeadModel and its fast tokenizer from a local directory or a hub id.

    dtype defaults to float32 (transformers 5 would use the checkpoint's): fp32 master weights, bf16 autocast
    for the fast math. tokenizer_name_or_path: where to take the tokenizer from when the model directory has
    none (e.g. "openai-community/gpt2"). `model_kwargs`: more for from_pretrained (e.g. attn_implementation).
    """
    kwargs = {"revision": revision} if revision else {}
    tok_source = tokenizer_name_or_path or name_or_path
    # every part of a local folder, or one request to the hub, before any weights are read
    if model_source(name_or_path, revision, tokenizer=tokenizer_name_or_path is None) == "cache":
        kwargs["local_files_only"] = True  # the hub cannot be reached: no minute of retries
    if tokenizer_name_or_path and model_source(tokenizer_name_or_path, revision) == "cache":
        kwargs["local_files_only"] = True
    # Mismatched sizes are loaded (random) and reported by check_weights_match in one line, in place of
    # transformers' table of tensors (a warning it logs before raising)
    with dropping("transformers.modeling_utils", "LOAD REPORT"):
        model, info = _from_pretrained(
            GPT2LMHeadModel.from_pretrained, name_or_path, "model", dtype=dtype or torch.float32,
            output_loading_info=True, ignore_mismatched_sizes=True, **kwargs, **(model_kwargs or {}),
        )  # fmt: skip
    check_weights_match(model, info, name_or_path)
    check_finite_weights(model, name_or_path)
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, tok_source, "tokenizer", **kwargs)
    if tokenizer.eos_token is None:
        raise ModelLoadError(f"tokenizer from {tok_source!r} has no eos token; RookWorld needs {EOS_TOKEN!r}")
    if len(tokenizer) > model.config.vocab_size:
        raise ModelLoadError(
            f"tokenizer from {tok_source!r} has {len(tokenizer)} tokens but the model only "
            f"{model.config.vocab_size}: they do not belong together"
        )
    # Left padding keeps every prompt's last token in the last column, where generation continues.
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.eos_token
    # config and generation config as the tokenizer says (pad = eos), so generate() does not guess
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        config.bos_token_id = bos
    model.loss_type = CAUSAL_LM_LOSS
    use_fused_gelu(model)
    if device is not None:
        model.to(device)
    return model, tokenizer


def init_kwargs(model_init_kwargs: dict | None) -> dict:
    """load_model_and_tokenizer's keywords from TRL's `model_init_kwargs`, as TRL loads the reference.

    >>> init_kwargs({"dtype": "bfloat16", "attn_implementation": "eager"})
    {'dtype': torch.bfloat16, 'revision': None, 'model_kwargs': {'attn_implementation': 'eager'}}
    """
    rest = dict(model_init_kwargs or {})
    dtype, revision = rest.pop("dtype", None), rest.pop("revision", None)
    dtype = None if dtype == "auto" else getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return {"dtype": dtype, "revision": revision, "model_kwargs": rest}


# GPT2LMHeadModel's class name maps to no transformers loss ("`loss_type=None` ... unrecognized" in every run with
# labels): it is the causal LM loss, said outright
CAUSAL_LM_LOSS = "ForCausalLM"


def check_weights_match(model: nn.Module, info: dict, name_or_path: str) -> None:
    """ModelLoadError when the weights file holds other tensors than config.json describes: transformers
    would start the missing ones from random values with a log line, and train on."""
    missing = sorted(k for k in info.get("missing_keys", ()) if k not in tied_parameter_names(model))
    unexpected = sorted(info.get("unexpected_keys", ()))
    sizes = sorted(info.get("mismatched_keys", ()))  # (name, size in the file, size of config.json), ...
    if missing or unexpected or sizes:
        found = [f"{_tensors(missing)} missing (e.g. {', '.join(missing[:2])})" if missing else "",
                 f"{_tensors(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})" if unexpected else "",
                 f"{_tensors(sizes)} of other sizes (e.g. {_size_text(sizes[0])})" if sizes else ""]  # fmt: skip
        raise ModelLoadError(
            f"the weights in {name_or_path!r} do not match its config.json: {'; '.join(filter(None, found))}; "
            "use the config.json the weights were saved with"
        )


def check_finite_weights(model: nn.Module, name_or_path: str) -> None:
    """ModelLoadError when a weight is NaN or infinite (a diverged run's): its eval would read as a table of 0%."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ModelLoadError(
            f"the weights in {name_or_path!r} hold NaN or Inf values ({_tensors(bad)}, e.g. {bad[0]}): a diverged "
            "model; use an earlier checkpoint (a run's stable/ holds the last verified one) or retrain"
        )


def _tensors(names: list) -> str:
    return f"{len(names)} tensor{'s' * (len(names) != 1)}"


def _size_text(mismatch) -> str:
    name, *shapes = mismatch
    return (
        f"{name}: {' in the file, '.join(str(tuple(s)) for s in shapes)} by config.json" if shapes else name
    )


def _from_pretrained(loader, name_or_path: str, what: str, **kwargs):
    """Call a transformers from_pretrained; turn any failure into one ModelLoadError with a fix."""
    if os.path.isdir(name_or_path):
        # safetensors reports a truncated file without naming it: check each header first
        for name in sorted(os.listdir(name_or_path)) if what == "model" else ():
            path = os.path.join(name_or_path, name)
            if name.endswith(".safetensors") and (problem := safetensors_problem(path)):
                raise ModelLoadError(
                    f"model weights {path} are damaged: {problem}; replace it (re-copy or re-download the model "
                    "directory)"
                )
        try:
            return loader(name_or_path, **kwargs)
        except (OSError, ValueError, SafetensorError, pickle.UnpicklingError) as e:
            raise ModelLoadError(
                f"could not load the {what} from local directory {name_or_path!r}: {_first_line(e)}\n"
                "A model directory needs config.json, model.safetensors and the tokenizer files "
                "(as written by save_pretrained)."
            ) from None
    if not is_hub_id(name_or_path):
        raise ModelLoadError(
            f"local model directory {name_or_path!r} does not exist (and it is not a hub id like "
            "'jrahn/RookWorld-LM-124M'). Check the path."
        )
    try:
        return loader(name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"could not load the {what} {name_or_path!r}: there is no local directory of that name, and "
            f"loading it as a Hugging Face hub id failed: {_first_line(e)}\n"
            "Fix: check the hub id; or pass a local model directory; or, without network, download it once "
            "where there is network (it lands in the HF cache) and set HF_HUB_OFFLINE=1 to use the cache. "
            "Without network and without HF_HUB_OFFLINE=1, hub calls retry for a long time before failing."
        ) from None


def tied_parameter_names(model: nn.Module) -> set[str]:
    """Names of parameters that are another parameter under a second name (GPT-2's lm_head.weight is
    transformer.wte.weight): save_pretrained stores them once, so loaders may report them missing."""
    first = {name for name, _ in model.named_parameters()}
    return {name for name, _ in model.named_parameters(remove_duplicate=False) if name not in first}


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def trained_fen_width(model: nn.Module) -> int | None:
    """The P: FEN field width of the data `model` was trained on, as its config.json records it (None: not
    recorded, e.g. a model trained elsewhere such as RookWorld-LM-124M)."""
    return getattr(getattr(model, "config", None), FEN_WIDTH_KEY, None)


def train_at_fen_width(model: nn.Module, width: int | None) -> int | None:
    """Record a run's P: FEN width in the model's config, so checkpoints say how to prompt them
    (docs/FORMATS.md); None (no P: prompts) keeps what the model was trained on before."""
    if width is None:
        return trained_fen_width(model)
    before = trained_fen_width(model)
    if before not in (None, width):
        print(f"the model was trained on P: prompts at FEN width {before}; this run prompts at {width} "
              "(its data's; set fen_width to choose)")  # fmt: skip
    setattr(model.config, FEN_WIDTH_KEY, width)
    return width


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout probability to p, in the config (saved with the model) and in the live modules."""
    config = getattr(model, "config", None)
    for key in DROPOUT_KEYS:
        if config is not None and hasattr(config, key):
            setattr(config, key, p)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def gpt2_backbone(model: nn.Module, required: bool = True) -> GPT2Model | None:
    """The GPT2Model inside `model` (through PEFT, DDP and compile wrappers); None (or ValueError when
    `required`) when there is none."""
    backbone = next((m for m in model.modules() if isinstance(m, GPT2Model)), None)
    if backbone is None and required:
        raise ValueError(f"no GPT2Model inside {type(model).__name__}")
    return backbone


def use_fused_gelu(model: nn.Module) -> None:
    """Replace GPT-2's `gelu_new` with `gelu_pytorch_tanh` (config too, so checkpoints keep it): the same
    formula in one fused kernel instead of five elementwise ops, a CPU forward+backward ~1.2x faster, logits
    within ~1e-5 (`python scripts/bench/bench_gelu.py`)."""
    backbone = gpt2_backbone(model, required=False)
    if backbone is not None and backbone.config.activation_function == "gelu_new":
        backbone.config.activation_function = "gelu_pytorch_tanh"
        for block in backbone.h:
            block.mlp.act = ACT2FN["gelu_pytorch_tanh"]


def use_padding_aware_positions(model: nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Make forward calls that pass no position_ids number positions from the attention mask; the hook's
    handle (.remove() undoes it).

    Why: GPT-2's forward counts the left padding in its positions, generate() does not, and TRL scores GRPO
    completions with a plain forward over left-padded rows: a padded row would be scored at other positions
    than it was sampled at. Apply it to the policy AND the reference model (TRL builds the reference itself).
    """
    return gpt2_backbone(model).register_forward_pre_hook(_positions_from_mask, with_kwargs=True)


def _positions_from_mask(module, args, kwargs):
    mask = kwargs.get("attention_mask")
    if kwargs.get("position_ids") is not None or mask is None or mask.dim() != 2:
        return None  # given explicitly (generate does), or nothing to derive them from
    tokens = args[0] if args else kwargs.get("input_ids")
    length = (tokens if tokens is not None else kwargs["inputs_embeds"]).shape[1]
    kwargs["position_ids"] = position_ids(mask)[:, -length:]  # the mask also covers cached tokens
    return args, kwargs


def new_gpt2_model(tokenizer, n_layer: int, n_head: int, n_embd: int, n_positions: int, *, dropout=0.0):
    """A freshly initialised GPT-2 sized for `tokenizer` (vocab, eos/bos/pad ids from it), float32."""
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer needs an eos token ({EOS_TOKEN!r})")
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        activation_function="gelu_pytorch_tanh",  # GPT-2's tanh GELU as one fused kernel (see use_fused_gelu)
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)  # its generation_config copies the token ids from config
    model.loss_type = CAUSAL_LM_LOSS
    return model
