"""Where a model comes from, checked in a second before any weights load or an engine starts (no torch here):
a local folder with every part a model needs, or a hub id the hub knows. A name that looks local is never
tried on the hub; the hub is asked once (no retries), and a hub that cannot be reached is one line, or the
cached copy when there is one.

    from rookworld_trl.model.source import model_source
    model_source("runs/grpo_tiny_cpu/final")    # 'local'; ModelLoadError naming every missing part
    model_source("jrahn/RookWorld-LM-124M")     # 'hub', or 'cache' (unreachable hub, cached copy)
"""

from __future__ import annotations

import json
import os
import re
import struct

from rookworld_trl.common.errors import UserError

# "name" or "owner/name": what the hub accepts as a model id; anything else must be a local path
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
HUB_TIMEOUT = 4.0  # seconds for the one request to the hub


class ModelLoadError(UserError):
    """A model or tokenizer could not be loaded; the message says what was tried and how to fix it."""


def is_hub_id(name: str) -> bool:
    return HUB_ID.fullmatch(name) is not None and ".." not in name


def looks_local(name: str) -> bool:
    """A path, not a hub id: it exists here, starts with . / or ~, or has more than one /.

    >>> looks_local("runs/nosuch/final"), looks_local("./mymodel"), looks_local("jrahn/RookWorld-LM-124M")
    (True, True, False)
    """
    return (
        os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1 or not is_hub_id(name)
    )


def model_source(name: str, revision: str | None = None, tokenizer: bool = True) -> str:
    """'local', 'hub' or 'cache' (the hub cannot be reached: load the cached copy with local_files_only) for a
    model name; ModelLoadError when it is none of them. `tokenizer`: the folder must hold the tokenizer too."""
    if os.path.isdir(name):
        check_model_dir(name, tokenizer)
        return "local"
    if looks_local(name):
        kind = "is a file, not a model directory" if os.path.isfile(name) else "does not exist"
        raise ModelLoadError(
            f"local model directory {name!r} {kind} (looked in {os.getcwd()}; a path is never tried on the hub); "
            "check the path, e.g. a run's final/ (runs/grpo_tiny_cpu/final)"
        )
    return hub_source(name, revision)


def check_model_dir(path: str, tokenizer: bool = True) -> None:
    """ModelLoadError naming every part a model folder lacks (config.json, the weights, the tokenizer files)."""
    have = set(os.listdir(path))
    missing = [
        "config.json" if "config.json" not in have else "",
        "weights (model.safetensors)" if not have & set(WEIGHT_FILES) else "",
        f"tokenizer files (any of {', '.join(TOKENIZER_FILES)})" if tokenizer and not have & set(TOKENIZER_FILES) else "",
    ]  # fmt: skip
    missing = [part for part in missing if part]
    if not missing:
        if not have & {"model.safetensors", "model.safetensors.index.json"}:  # pytorch_model.bin alone
            raise ModelLoadError(
                f"model directory {path!r} holds its weights only as pytorch_model.bin, a pickle, which is not "
                'loaded (unpickling can run code); if you trust the file, convert it once: `python -c "from '
                f"transformers import GPT2LMHeadModel as M; M.from_pretrained('{path}', use_safetensors=False)."
                f"save_pretrained('{path}')\"` writes model.safetensors"
            )
        check_config(path)
        return
    held = ", ".join(n if len(n) < 30 else n[:27] + "..." for n in sorted(have)[:5]) or "nothing"
    if "config.json" in have and len(missing) == 1 and missing[0].startswith("tokenizer"):
        raise ModelLoadError(
            f"model directory {path!r} has no {missing[0]}: copy them from the model it was trained from "
            "(save_pretrained writes them), or name that model or tokenizer with tokenizer_name_or_path"
        )
    what = "is not a model directory" if "config.json" not in have else "is an incomplete model directory"
    raise ModelLoadError(
        f"{path!r} {what}: it has no {', no '.join(missing)} (it holds {held}); point model_name_or_path at "
        "a directory written by save_pretrained (config.json, model.safetensors, tokenizer files), e.g. a run's final/"
    )


def hub_source(name: str, revision: str | None = None) -> str:
    """'hub' when the hub knows `name`, 'cache' when it cannot be reached but a copy is cached; else one
    ModelLoadError: no such model, a private one without a token, or no network and no cached copy."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cached = isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    nowhere = f"no local folder {name!r} here ({os.getcwd()}) and"
    if constants.HF_HUB_OFFLINE:
        if cached:
            return "cache"
        raise ModelLoadError(
            f"could not load the model {name!r}: {nowhere} HF_HUB_OFFLINE=1 is set but it is not in the Hugging "
            "Face cache; check the hub id, pass a local model directory, or download it once with network"
        )
    try:
        model_info(name, revision=revision, timeout=HUB_TIMEOUT)
    except GatedRepoError:
        raise ModelLoadError(
            f"model {name!r} is gated on the hub: accept its terms on its page, then `hf auth login`"
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(
            f"model {name!r} has no revision {revision!r} on the hub; check model_revision"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"could not load the model {name!r}: {nowhere} the hub ({constants.ENDPOINT}) has no model of that "
            "name (or it is private: `hf auth login`); check the name, or pass a local model directory"
        ) from None
    except Exception as e:  # no network, DNS, a proxy, a hub error: the hub cannot answer now
        if cached:
            print(
                f"rookworld: the hub cannot be reached ({type(e).__name__}); loading the cached copy of {name}"
            )
            return "cache"
        raise ModelLoadError(
            f"could not load the model {name!r}: {nowhere} the hub ({constants.ENDPOINT}) cannot be reached "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}), so it was tried "
            "once; connect and retry, pass a local model directory, or download it where there is network and "
            "set HF_HUB_OFFLINE=1 to use the cache"
        ) from None
    return "hub"


def safetensors_problem(path: str) -> str | None:
    """None when a .safetensors file's header parses and its tensors exactly fill the file, else why not
    (the loader's own error for a truncated file names no file)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short for a safetensors header (truncated)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{size} bytes, its header claims {n} bytes of metadata (truncated or not safetensors)"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        return f"unreadable safetensors header ({e})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{size} bytes, but its header describes {8 + n + end} (truncated or damaged)"
    return None


MAX_CONFIG_BYTES = 1 << 20  # a model's config.json is a few kB
# what config.json may describe (GPT-2 XL: 1.5e9): beyond it, building the model takes minutes
MAX_PARAMETERS = 3e9


def check_config(path: str) -> None:
    """ModelLoadError for a config.json too large, not a JSON object, or beyond MAX_PARAMETERS."""
    file = os.path.join(path, "config.json")
    if os.path.getsize(file) > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{file} is {os.path.getsize(file)} bytes, not a model config (a few kB); replace it "
                             "with the config.json the weights were saved with")  # fmt: skip
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, OSError) as e:
        raise ModelLoadError(f"{file} is not readable JSON ({str(e)[:120]}); replace it with the config.json the "
                             "weights were saved with") from None  # fmt: skip
    if not isinstance(config, dict):
        raise ModelLoadError(f"{file} holds a JSON {type(config).__name__}, not an object of settings; replace it "
                             "with the config.json the weights were saved with")  # fmt: skip
    sizes = {k: config.get(k) for k in ("n_layer", "n_embd", "vocab_size")}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in sizes.values()):
        count = sizes["n_layer"] * 12 * sizes["n_embd"] ** 2 + sizes["vocab_size"] * sizes["n_embd"]
        if count > MAX_PARAMETERS or min(sizes.values()) < 1:
            shown = ", ".join(f"{k} {v}" for k, v in sizes.items())
            raise ModelLoadError(f"{file} describes a model of ~{count:.3g} parameters ({shown}); no weights file "
                                 "of this package's models is that size: replace it with the config.json the "
                                 "weights were saved with")  # fmt: skip
