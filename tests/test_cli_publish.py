"""The CLI around a run: publishing it (`rookworld push`), one's own reward, runs that read at a glance.

    .venv/bin/python -m pytest tests/test_cli_publish.py

The hub is a local stand-in HTTP server (HF_ENDPOINT points at it) that answers the few calls
huggingface_hub's real client makes for a push: whoami, create a repo, preupload, commit. The pushes run
`rookworld push` / the GRPO stage as a user would, in a subprocess.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tiny_grpo import make_trainer

from rookworld_trl.stages.grpo import train

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_standin_token"


class HubStandIn(http.server.BaseHTTPRequestHandler):
    """The hub API calls of a push; `server.files` collects each committed file's path and bytes."""

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        self._reply(401, {"error": "Invalid credentials in Authorization header"})
        return False

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self):
        if self.path.startswith("/api/whoami-v2") and self._authorized():
            self._reply(200, {"type": "user", "name": "me", "auth": {"accessToken": {"role": "write"}}})
        elif not self.path.startswith("/api/whoami-v2"):
            self._reply(404, {"error": f"not in the stand-in: GET {self.path}"})

    def do_POST(self):
        body = self._body()
        if not self._authorized():
            return
        if self.path == "/api/repos/create":
            name = json.loads(body)["name"]
            organization = json.loads(body).get("organization") or "me"
            self.server.repos.append(f"{organization}/{name}")
            self._reply(200, {"url": f"{self.server.url}/{organization}/{name}"})
        elif self.path == "/api/validate-yaml":  # the model card's metadata
            self._reply(200, {"warnings": []})
        elif "/preupload/" in self.path:
            files = json.loads(body)["files"]
            self._reply(
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                },
            )
        elif "/commit/" in self.path:
            for line in body.decode().splitlines():
                op = json.loads(line)
                if op["key"] == "file":
                    self.server.files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
            repo = self.path.split("/api/models/")[1].split("/commit/")[0]
            self._reply(200, {"commitUrl": f"{self.server.url}/{repo}/commit/1", "commitOid": "1" * 40})
        else:
            self._reply(404, {"error": f"not in the stand-in: POST {self.path}"})


@pytest.fixture
def hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubStandIn)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.repos, server.files = [], {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def hub_env(tmp_path, url: str, token: str | None = TOKEN) -> dict:
    """A user's environment pointed at the stand-in: its endpoint, a token or none (an empty HF_HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    if token:
        env["HF_TOKEN"] = token
    return env


def rookworld(*args, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rookworld_trl.stages.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture
def finished_run(model_dir, tmp_path):
    """A finished 1-step GRPO run (final/ with its model card) in tmp_path/run."""
    trainer = make_trainer(model_dir, tmp_path / "run", max_steps=1, eval_samples=0)
    assert train(trainer) == 0
    return tmp_path / "run"


MODEL = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
}


def test_push_uploads_a_finished_runs_final_model_and_card(finished_run, tmp_path, hub):
    done = rookworld(
        "push", str(finished_run), "--hub_model_id", "me/rookworld-grpo", env=hub_env(tmp_path, hub.url)
    )
    assert done.returncode == 0, done.stderr
    assert hub.repos == ["me/rookworld-grpo"]
    assert set(hub.files) == MODEL | {"README.md"}  # no optimizer, checkpoints, metrics, marker
    assert hub.files["README.md"] == (finished_run / "final" / "README.md").read_bytes()
    assert b"steps trained: 1" in hub.files["README.md"] and b"learning_rate" in hub.files["README.md"]
    assert "me/rookworld-grpo" in done.stdout


def test_a_failed_push_exits_nonzero_keeps_the_run_and_names_the_retry(finished_run, tmp_path, hub):
    before = sorted(p.relative_to(finished_run) for p in finished_run.rglob("*"))
    env = hub_env(tmp_path, hub.url)
    hub.shutdown()
    hub.server_close()  # the hub goes away: connection refused
    done = rookworld("push", str(finished_run), "--hub_model_id", "me/x", env=env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"retry with: rookworld push {finished_run} --hub_model_id me/x" in done.stderr
    assert sorted(p.relative_to(finished_run) for p in finished_run.rglob("*")) == before


def test_a_push_at_the_end_of_training_that_fails_exits_nonzero_with_the_retry_command(
    model_dir, tmp_path, hub, capsys, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.shutdown()
    hub.server_close()  # the hub goes away before the end of training: connection refused
    trainer = make_trainer(model_dir, tmp_path / "run", max_steps=1, eval_samples=0, push_to_hub=True,
                           hub_model_id="me/x")  # fmt: skip
    assert train(trainer) == 1
    err = capsys.readouterr().err
    assert f"retry with: rookworld push {tmp_path / 'run'} --hub_model_id me/x" in err
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_push_offline_is_one_line(finished_run, tmp_path, hub):
    done = rookworld("push", str(finished_run), env={**hub_env(tmp_path, hub.url), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "HF_HUB_OFFLINE is set" in done.stderr and not hub.files
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.integration
def test_push_of_an_unfinished_run_is_one_line(tmp_path, hub):
    (tmp_path / "run" / "final").mkdir(parents=True)
    done = rookworld("push", str(tmp_path / "run"), "--hub_model_id", "me/x", env=hub_env(tmp_path, hub.url))
    assert done.returncode == 2 and "no finished model to push" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not hub.files


WRONG_TOKEN = (["--hub_model_id", "me/x", "--hub_token", "hf_wrong"], TOKEN, "does not accept the token")


@pytest.mark.integration
@pytest.mark.parametrize(
    "stage, flags, token, says",
    # `rookworld train`'s preflight, before accelerate; the stage's own check (`accelerate launch -m` users) in a
    # process that imports torch and TRL: the slow tier
    [
        ("stages.cli", ["--hub_model_id", "me/bad name!"], TOKEN, "no valid repo name"),
        ("stages.cli", ["--hub_model_id", "me/x"], None, "needs a Hugging Face token"),
        ("stages.cli", *WRONG_TOKEN),
        pytest.param("stages.grpo", *WRONG_TOKEN, marks=pytest.mark.slow),
    ],
)
def test_push_to_hub_checks_the_token_and_name_before_training(tmp_path, hub, stage, flags, token, says):
    argv = (
        ["train"]
        if stage == "stages.cli"
        else ["--config", "recipes/grpo_tiny_cpu.yaml", "--use_cpu", "true"]
    )
    done = subprocess.run(
        [sys.executable, "-m", f"rookworld_trl.{stage}", *argv, "--output_dir", str(tmp_path / "run"),
         "--push_to_hub", "true", *flags],
        env=hub_env(tmp_path, hub.url, token), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "accelerate.commands.launch" not in done.stdout  # `rookworld train`: refused before accelerate
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained


def test_the_summary_after_a_resume_counts_this_sessions_steps_apart(model_dir, tmp_path, capsys):
    first = make_trainer(
        model_dir, tmp_path, max_steps=2, save_strategy="steps", save_steps=2, eval_samples=0
    )
    assert train(first) == 0
    resumed = make_trainer(model_dir, tmp_path, max_steps=5, save_strategy="steps", save_steps=2,
                           eval_samples=0, resume_from_checkpoint="auto")  # fmt: skip
    capsys.readouterr()
    assert train(resumed) == 0
    steps = next(line for line in capsys.readouterr().out.splitlines() if "steps trained" in line)
    assert "5 in all, 3 this session in" in steps


@pytest.mark.slow  # training with it (~30 s); its checks before accelerate: test_cli_checks.py
def test_own_reward_by_dotted_path_trains_three_steps_on_the_embedded_model(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "rookworld_trl.stages.grpo", "--config", "recipes/grpo_tiny_cpu.yaml",
         "--reward_funcs", "policy_reward", "env_reward", "examples.my_reward.b_gives_check",
         "--reward_weights", "1.0", "1.0", "0.2", "--max_steps", "3", "--per_device_train_batch_size", "8",
         "--num_generations", "4", "--eval_samples", "0", "--eval_every_steps", "0", "--save_steps", "3",
         "--logging_steps", "1", "--engine_workers", "1", "--use_cpu", "true", "--output_dir", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    own = [row["rewards/b_gives_check/mean"] for row in rows if "rewards/b_gives_check/mean" in row]
    assert len(own) == 3 and all(0.0 <= x <= 1.0 for x in own)
    assert (out / "final" / "model.safetensors").is_file()


def test_an_own_reward_that_is_not_there_is_one_line(tmp_path):
    from rookworld_trl.common.errors import UserError
    from rookworld_trl.grpo.rewards.functions import resolve_rewards

    with pytest.raises(UserError, match="'examples.my_reward.no_such'.* has no 'no_such'; check the name"):
        resolve_rewards(["examples.my_reward.no_such"])  # the module imports: the function is missing
    with pytest.raises(UserError, match="no_module.*PYTHONPATH"):
        resolve_rewards(["no_module.reward"])


def test_the_example_reward_scores_p_answers_and_leaves_a_out():
    sys.path.insert(0, str(ROOT))
    from examples.my_reward import b_gives_check

    fen = "4k3/8/8/8/8/8/8/R3K3 w - - 0 1"
    prompt = f"P: {fen:<90}M:"
    answers = [" a1a8 E: 9.0 B: a1a8", " a1a2 E: 1.0 B: a1a2", " a1b8 E: 1.0 B: a1b8", "A: x"]
    assert b_gives_check([prompt] * 3 + ["A: " + fen + "+e1e2+"], answers) == [1.0, 0.0, 0.0, None]


@pytest.mark.slow  # an SFT run (~12 s quiet); the GRPO console stays in the default tier (test_cli.py)
def test_sft_has_trains_console_a_line_per_logging_step_and_a_summary(tmp_path, capsys):
    from rookworld_trl.stages import sft

    flags = ["--max_steps", "4", "--logging_steps", "2", "--eval_steps", "2", "--save_steps", "4",
             "--max_train_samples", "64", "--format_check_samples", "4", "--use_cpu", "true",
             "--report_to", "none", "--output_dir", str(tmp_path / "sft")]  # fmt: skip
    assert sft.main(["--config", str(ROOT / "recipes/sft_embedded_cpu.yaml"), *flags]) == 0
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["2/4", "2/4", "4/4", "4/4"]  # training, held-out, ...
    assert "token accuracy" in steps[0] and "held-out loss" in steps[1]
    assert "{'" not in out  # no raw dicts of TRL's
    summary = out[out.index("sft summary:") :]
    assert "steps trained    4 in" in summary and "held-out loss    first" in summary
    assert "on 4 held-out P: prompts" in summary


RUN_KEYS = [  # the keys a GRPO run of the main recipe logs (metrics.jsonl), plus an in-training eval
    "beta", "clip_ratio/high_max", "clip_ratio/high_mean", "clip_ratio/low_mean", "clip_ratio/low_min",
    "clip_ratio/region_mean", "completions/clipped_ratio", "completions/max_length", "completions/mean_length",
    "completions/min_length", "completions/mean_terminated_length", "entropy", "env/castling", "env/clocks",
    "env/en_passant", "env/fen_exact", "env/fen_similarity", "env/fen_valid", "env/parsed", "env/placement",
    "env/reward_value", "env/side", "env/terminated", "env/truncated", "frac_reward_zero_std", "grad_norm",
    "kl", "learning_rate", "loss", "policy/b_field", "policy/best", "policy/best_legal", "policy/best_top1",
    "policy/best_top5", "policy/candidates", "policy/cp_loss", "policy/evals", "policy/evals_top5",
    "policy/layout", "policy/legal_moves", "policy/parsed", "policy/well_formed", "reward", "reward_std",
    "rewards/env_reward/mean", "rewards/policy_reward/mean", "step_time", "watch/b_best_e", "watch/b_legal",
    "watch/distinct", "watch/err_blocked", "watch/err_empty_square", "watch/err_geometry",
    "watch/err_king_in_check", "watch/err_noncanonical", "watch/err_opponent_piece", "watch/first_share",
    "watch/precision", "watch/selection", "replay_loss",
]  # fmt: skip


def test_every_report_chart_reads_title_units_names_at_most_six_series_one_step_axis(tmp_path):
    import math

    from rookworld_trl.stages.eval.charts import figures, human_name, panel_keys, report, series

    rows = [
        {"step": s, **{k: 0.5 + 0.3 * math.sin(s / 7 + i) for i, k in enumerate(RUN_KEYS)}}
        for s in range(1, 61)
    ]
    rows += [{"step": s, "eval/policy/greedy/legal_best_move": 0.6 + s / 1000} for s in (0, 30, 60)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    charts = figures(panel_keys(series(rows)))
    for name, title, ylabel, keys in charts:
        assert title and ylabel and 1 <= len(keys) <= 6, name
        names = [human_name(k) for k in keys]
        assert len(set(names)) == len(names) and not any("/" in n or "_" in n for n in names), names
    assert {"reward_components_policy", "reward_components_policy_2", "reward_components_env_2"} <= {
        c[0] for c in charts
    }
    written = report(str(tmp_path))
    assert set(written) == {c[0] for c in charts} | {"summary"}


def test_eval_says_the_published_figures_are_124ms():
    from rookworld_trl.stages.eval.evaluate import markdown

    row = {"percent": True, "reference": 0.166, "model": {"value": 0.03, "ci": [0.02, 0.04], "n": 500}}
    text = markdown({"policy": {"greedy/best_move_accuracy": row}}, {"model": "rookworld_trl/assets/model"})
    assert "| published (124M) |" in text and "2.9M" in text and "not expected to reach them" in text
    assert "| published (124M) |" in (ROOT / "rookworld_trl/assets/model/eval.md").read_text()
