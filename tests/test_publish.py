"""Publishing a GRPO run: exactly final/'s model files go up, once, at the end (and checkpoints on request).

    .venv/bin/python -m pytest tests/test_publish.py

The hub client is a recording stand-in (the hub is not reachable here): it records each upload and the files
the folder upload would send, after huggingface_hub's own allow_patterns filtering.
"""

from __future__ import annotations

import os

import pytest
from huggingface_hub.utils import filter_repo_objects
from tiny_grpo import make_trainer

from rookworld_trl.stages.grpo import train
from rookworld_trl.training import publish


class RecordingHub:
    """Stands in for huggingface_hub.HfApi: records repos created and the files each upload would send."""

    uploads: list[tuple[str, str | None, list[str]]] = []

    def __init__(self, token=None):
        pass

    def create_repo(self, repo_id, private=None, exist_ok=False):
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(
        self, repo_id, folder_path, path_in_repo=None, allow_patterns=None, ignore_patterns=None,
        commit_message=None,
    ):  # fmt: skip
        files = [
            os.path.relpath(os.path.join(d, f), folder_path) for d, _, fs in os.walk(folder_path) for f in fs
        ]
        sent = sorted(
            filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
        )
        RecordingHub.uploads.append((repo_id, path_in_repo, sent))


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub
    import transformers.trainer

    RecordingHub.uploads = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHub)

    def trainer_push(*args, **kwargs):
        raise AssertionError("Trainer's own push ran: it uploads output_dir, not final/")

    monkeypatch.setattr(transformers.trainer, "hf_api", trainer_push)
    return RecordingHub.uploads


MODEL = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]


def test_push_uploads_final_only_once_at_the_end(model_dir, tmp_path, hub):
    trainer = make_trainer(model_dir, tmp_path, max_steps=2, save_strategy="steps", save_steps=1,
                           push_to_hub=True, hub_model_id="me/rookworld-grpo", eval_samples=0)  # fmt: skip
    assert train(trainer) == 0
    assert len(hub) == 1
    repo, path_in_repo, files = hub[0]
    assert repo == "me/rookworld-grpo" and path_in_repo is None
    assert files == sorted(MODEL + ["README.md"])  # no stable/, optimizer, Parquet, engine cache, nan_batches
    card = (tmp_path / "final" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "steps trained: 2" in card


def test_push_checkpoints_adds_each_checkpoints_model_files(model_dir, tmp_path, hub):
    trainer = make_trainer(model_dir, tmp_path, max_steps=2, save_strategy="steps", save_steps=1,
                           push_to_hub=True, hub_model_id="me/rookworld-grpo", push_checkpoints=True,
                           eval_samples=0)  # fmt: skip
    assert train(trainer) == 0
    assert [path for _, path, _ in hub] == ["checkpoints/checkpoint-1", "checkpoints/checkpoint-2", None]
    assert "optimizer.pt" not in hub[0][2] and "model.safetensors" in hub[0][2]


def test_a_failed_upload_is_one_line_and_the_model_stays(tmp_path, capsys):
    class Offline:
        hub_token, hub_private_repo, hub_model_id, output_dir = None, False, "me/x", str(tmp_path)

    (tmp_path / "final").mkdir()
    assert publish.upload(Offline, str(tmp_path / "final")) is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "push_to_hub failed" in err and str(tmp_path / "final") in err
