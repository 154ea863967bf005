"""Bundled paths: a recipe, model or data path as given, else relative to the repository root, so the recipes'
`rookworld_trl/assets/...` and `recipes/...` work from any working directory.

    from rookworld_trl.common.paths import resolve_path
"""

from __future__ import annotations

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
