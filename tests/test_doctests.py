"""Every docstring example of the package runs (doctest), module by module: an example that no longer holds
fails here, naming its module.

    .venv/bin/pytest tests/test_doctests.py
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import rookworld_trl

# __main__ modules run their stage when imported
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(rookworld_trl.__path__, "rookworld_trl.")
    if not m.name.endswith("__main__")
)


def test_the_walk_finds_the_modules_with_examples():
    assert {
        "rookworld_trl.chess.formats",
        "rookworld_trl.grpo.rewards.functions",
        "rookworld_trl.grpo.guard",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    results = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples of {name} failed"
