"""vLLM server mode: the start-up check (rookworld_trl/stages/vllm_server.py) against a port with nothing listening
(through the GRPO stage and its one-line error) and against a stand-in HTTP server that answers vLLM's /health
and /server_info the way TRL 1.16's client reads them (vLLM itself needs a GPU); the `[vllm]` extra is TRL's range.

    .venv/bin/python -m pytest tests/test_vllm_server.py
"""

import http.server
import importlib.metadata
import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement

from rookworld_trl.common.errors import UserError
from rookworld_trl.stages import vllm_server

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "grpo_vllm_server.yaml"


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_args(port: int, **more) -> SimpleNamespace:
    fields = dict(use_vllm=True, vllm_mode="server", vllm_server_base_url=None, vllm_server_host="127.0.0.1")
    fields.update(vllm_server_port=port, vllm_server_timeout=0.0, vllm_importance_sampling_correction=True)
    return SimpleNamespace(**{**fields, **more})


def test_the_stage_stops_with_one_line_when_no_server_answers(capsys):
    from rookworld_trl.common.entry import run_stage
    from rookworld_trl.stages import grpo as stage

    port = closed_port()
    argv = ["--config", str(RECIPE), "--vllm_server_port", str(port), "--vllm_server_timeout", "0"]
    argv += ["--use_cpu", "true", "--bf16", "false", "--output_dir", "/tmp/rookworld-vllm-check-unused"]
    assert run_stage("train", stage.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"no vLLM server answers at http://127.0.0.1:{port}" in err
    assert "vllm_server_host/vllm_server_port" in err
    assert "trl vllm-serve --model jrahn/RookWorld-LM-124M" in err


def test_the_check_waits_up_to_the_timeout_then_names_the_url():
    port = closed_port()
    with pytest.raises(UserError, match=rf"http://localhost:{port} .*waited 1 s") as e:
        vllm_server.check_vllm_server(server_args(port, vllm_server_base_url=f"http://localhost:{port}/",
                                                  vllm_server_timeout=1.0), "m")  # fmt: skip
    assert "vllm_server_base_url" in str(e.value)


def test_colocate_mode_and_no_vllm_check_nothing():
    vllm_server.check_vllm_server(server_args(closed_port(), vllm_mode="colocate"), "m")
    vllm_server.check_vllm_server(server_args(closed_port(), use_vllm=False), "m")


class StandIn(http.server.BaseHTTPRequestHandler):
    """Answers /health and /server_info as vLLM's dev-mode server does for TRL (model_config.logprobs_mode)."""

    logprobs_mode: str | None = "processed_logprobs"

    def do_GET(self):
        if self.path == "/health":
            body = b""
        elif self.path.startswith("/server_info") and self.logprobs_mode:
            config = {"model_config": {"logprobs_mode": self.logprobs_mode}}
            body = json.dumps({"vllm_config": config}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    StandIn.logprobs_mode = "processed_logprobs"


def test_a_server_with_processed_logprobs_passes(stand_in):
    vllm_server.check_vllm_server(server_args(stand_in.server_address[1]), "m")


def test_raw_logprobs_stop_the_run_unless_the_correction_is_off(stand_in):
    StandIn.logprobs_mode = "raw_logprobs"
    args = server_args(stand_in.server_address[1])
    with pytest.raises(UserError, match="runs --logprobs-mode raw_logprobs.*processed_logprobs"):
        vllm_server.check_vllm_server(args, "m")
    args.vllm_importance_sampling_correction = False
    vllm_server.check_vllm_server(args, "m")


def test_a_server_without_dev_endpoints_is_named(stand_in):
    StandIn.logprobs_mode = None  # /server_info: 404, as vLLM without VLLM_SERVER_DEV_MODE=1
    with pytest.raises(UserError, match="dev endpoints"):
        vllm_server.check_vllm_server(server_args(stand_in.server_address[1]), "m")


def test_the_vllm_extra_is_trls_range():
    import tomllib

    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    trls = [Requirement(r) for r in importlib.metadata.requires("trl") if 'extra == "vllm"' in r]
    assert sorted(str(Requirement(r)) for r in ours) == sorted(f"{r.name}{r.specifier}" for r in trls)
    assert any(r.name == "vllm" and "0.31.0" in str(r.specifier) for r in trls)  # TRL 1.16: vllm <= 0.31
