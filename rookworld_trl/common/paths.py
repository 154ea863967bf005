"""Bundled paths: a recipe, model or data path as given, else relative to the repository root, so the recipes'
`rookworld_trl/assets/...` and `recipes/...` work from any working directory.

    from rookworld_trl.common.paths import resolve_path

And where a command writes: `out_folder_problem(out, what)`, one line when `--out` cannot become its folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path: str) -> str:
    """A recipe/config path as given, else relative to the repository root (for the bundled ones)."""
    if Path(path).exists() or Path(path).is_absolute():
        return path
    candidate = REPO_ROOT / path
    if candidate.exists():
        return str(candidate)
    bundled = REPO_ROOT / "rookworld_trl" / "assets" / path  # recipes/ ships in the package (assets/recipes)
    return str(bundled) if bundled.exists() else path


def resolve_paths(config, *names: str) -> None:
    """resolve_path on each named field of `config` that is set (a stage's model, data, ... from any cwd)."""
    for name in names:
        if getattr(config, name):
            setattr(config, name, resolve_path(getattr(config, name)))


def out_folder_problem(out: str, what: str) -> str | None:
    """Why `out` cannot become a folder of outputs, as one line with the fix (`what`: its purpose and an example),
    or None. A real write: os.access says yes to root on a read-only mount."""
    if not str(out).strip():
        return f"--out is empty; name the folder {what}"
    if os.path.exists(out) and not os.path.isdir(out):
        return f"--out {out} is a file, not a folder; name a folder (it is made) or remove the file"
    existing = os.path.abspath(out)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return f"--out {out}: cannot write in {existing} ({e.strerror}); choose a folder you can write"
    return None
