"""Every file path a doc (README.md, docs/*.md) or a docstring/comment of the package, scripts and tests names
exists: a path that moved or was renamed fails here, naming where it is cited. A path is a slash-joined name
ending in a known suffix (`grpo/trainer.py`, `docs/FORMATS.md`, `recipes/grpo_tiny_cpu.yaml`), read from the
repository root or from the package folder (the docs say `grpo/trainer.py` for rookworld_trl/grpo/trainer.py).
Paths a run writes (runs/, build/, an output dir) and placeholders (`X`, `NAME`)
are not files of the repository and are skipped by their first folder."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rookworld_trl"
PATH = re.compile(r"(?<![\w/.$-])((?:[\w.-]+/)+[\w.-]+\.(?:py|md|yaml|yml|sh|toml|json|txt))\b")
# first folders of paths that a run, a user or another machine makes, not this repository
WRITTEN = {"runs", "build", "data", "out", "OUT", "tmp", "eval_results", "DIR", "output_dir", "path", "your",
           "my", "site-packages", "trl", "transformers", "accelerate", "torch", "home", "usr", "work", "root",
           "checkpoint-N", "final", "stable", "report", "completions", "shards", "lichess", "wandb", "models",
           "OUTPUT_DIR", "OUT_DIR", "SFT_DIR", "MODEL", "RUN", "run", "missing", "no", "~", ".", ".gpu"}  # fmt: skip


def cited_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("rookworld_trl", "scripts", "tests", "examples"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh", ".md", ".yaml"))
    return [f for f in files if f.is_file() and f.name != Path(__file__).name]


def exists(path: str) -> bool:
    return any((base / path).exists() for base in (ROOT, PACKAGE, ROOT / "tests"))


def test_every_path_a_doc_or_docstring_names_exists():
    missing = []
    for file in cited_files():
        for line_no, line in enumerate(file.read_text(errors="replace").splitlines(), start=1):
            for path in PATH.findall(line):
                first = path.split("/")[0]
                if (
                    first in WRITTEN
                    or any(c in path for c in "<>{}*X")
                    or "NAME" in path
                    or path.startswith("http")
                ):
                    continue
                if not exists(path):
                    missing.append(f"{file.relative_to(ROOT)}:{line_no}: {path}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


def test_the_check_finds_a_path_that_does_not_exist(tmp_path):
    """The pattern reads the paths the docs write, so a moved file is caught."""
    assert PATH.findall("see rookworld_trl/grpo/no_such.py and docs/FORMATS.md.") == [
        "rookworld_trl/grpo/no_such.py",
        "docs/FORMATS.md",
    ]
    assert not exists("rookworld_trl/grpo/no_such.py") and exists("grpo/trainer.py")
