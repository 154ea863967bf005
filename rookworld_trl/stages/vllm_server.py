"""vLLM server mode (`use_vllm: true`, `vllm_mode: server`): check at start that the server answers and runs the
log-probs mode TRL's importance-sampling correction needs, before TRL's client waits for it (vllm_server_timeout)
and fails with a traceback. The recipe: recipes/grpo_vllm_server.yaml; the topology: docs/GPU.md, docs/SCALING.md.

    check_vllm_server(args, model="jrahn/RookWorld-LM-124M")     # raises UserError with one line, else None
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from rookworld_trl.common.errors import UserError


def wait_for_health(url: str, timeout_s: float, interval_s: float = 2.0) -> str | None:
    """None once GET url/health answers 200 (retrying up to timeout_s, as TRL's client does); else why not."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return None
                why = f"/health answered {response.status}"
        except urllib.error.HTTPError as e:
            why = f"/health answered {e.code}"
        except (urllib.error.URLError, OSError) as e:
            why = str(getattr(e, "reason", e))
        if time.monotonic() + interval_s > deadline:
            return why
        time.sleep(interval_s)


def logprobs_problem(url: str, importance_sampling: bool) -> str | None:
    """What is wrong with the server's setup for TRL, or None: TRL syncs weights through vLLM's dev endpoints
    (/server_info among them), and its importance-sampling correction needs processed log-probs."""
    try:
        with urllib.request.urlopen(f"{url}/server_info?config_format=json", timeout=10) as response:
            info = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return "it does not expose vLLM's dev endpoints TRL syncs weights through (start it with trl vllm-serve)"
        return f"/server_info answered {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"/server_info did not answer ({getattr(e, 'reason', e)})"
    mode = info.get("vllm_config", {}).get("model_config", {}).get("logprobs_mode")
    if importance_sampling and mode != "processed_logprobs":
        return (
            f"it runs --logprobs-mode {mode}, which biases TRL's importance-sampling correction (restart it with "
            "--logprobs-mode processed_logprobs, or set vllm_importance_sampling_correction: false)"
        )
    return None


def check_vllm_server(args, model: str) -> None:
    """In server mode: one UserError line when the server does not answer within vllm_server_timeout or is
    not set up as TRL needs."""
    if not (args.use_vllm and args.vllm_mode == "server"):
        return
    # the server's base URL as TRL's VLLMClient builds it: vllm_server_base_url, else host and port
    url = f"http://{args.vllm_server_host}:{args.vllm_server_port}"
    fields = "vllm_server_host/vllm_server_port"
    if args.vllm_server_base_url:
        url, fields = args.vllm_server_base_url.rstrip("/"), "vllm_server_base_url"
    why = wait_for_health(url, args.vllm_server_timeout)
    if why is not None:  # `trl vllm-serve`: the weight transfer, log-probs mode and dev endpoints TRL needs
        port = args.vllm_server_port if not args.vllm_server_base_url else "PORT"
        raise UserError(
            f"no vLLM server answers at {url} ({why}; waited {args.vllm_server_timeout:g} s, vllm_server_timeout): "
            f"start one on the generation GPU with `CUDA_VISIBLE_DEVICES=N trl vllm-serve --model {model} --port "
            f"{port} --max_model_len 256`, or fix {fields} in the recipe "
            "(docs/GPU.md: vLLM server mode)"
        )
    problem = logprobs_problem(url, args.vllm_importance_sampling_correction)
    if problem:
        raise UserError(f"the vLLM server at {url} cannot serve this run: {problem}")
