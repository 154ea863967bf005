"""The TRL seam's registry is complete: every attribute of TRL's / Trainer's that grpo/ reads is listed in
training/trl_compat.py's TRL_ATTRIBUTES (checked at import against the installed TRL), and a name TRL drops fails
that check, naming it. The loss normalisation per loss_type is compared with TRL's own loss in
tests/test_rl_options.py (test_kl_term_is_normalised_as_trls_own)."""

import inspect
import re
from pathlib import Path

import pytest
import transformers.trainer
from trl.trainer import grpo_trainer

from rookworld_trl.training import trl_compat

pytestmark = pytest.mark.unit

GRPO = Path(__file__).resolve().parent.parent / "rookworld_trl" / "grpo"
# Names grpo/ reads on its own objects (a snapshot's optimizer, a fault's reset, a config field) that TRL
# happens to set on its trainer too
OWN = {"reset", "pad_to_multiple_of", "add_callback"}


def trl_attributes_read() -> dict[str, set[str]]:
    sources = inspect.getsource(grpo_trainer) + inspect.getsource(transformers.trainer)
    read: dict[str, set[str]] = {}
    for path in sorted(GRPO.glob("*.py")):
        for name in re.findall(r"\b(?:trainer|self)\.([a-zA-Z_]\w*)\b", path.read_text()):
            if not name.startswith("_") and trl_compat.trl_sets(name, sources):
                read.setdefault(name, set()).add(path.name)
    return read


def test_every_trl_attribute_grpo_reads_is_in_the_registry():
    unlisted = {
        n: sorted(f)
        for n, f in trl_attributes_read().items()
        if n not in OWN.union(trl_compat.TRL_ATTRIBUTES)
    }
    assert not unlisted, f"list these in trl_compat.TRL_ATTRIBUTES with why: {unlisted}"


def test_the_registry_lists_only_what_grpo_reads():
    assert set(trl_compat.TRL_ATTRIBUTES) <= set(trl_attributes_read())


def test_an_attribute_trl_drops_fails_the_import_time_check(monkeypatch):
    monkeypatch.setitem(trl_compat.TRL_ATTRIBUTES, "no_such_attribute", "a test")
    with pytest.raises(ImportError, match="no_such_attribute"):
        trl_compat.check_internals()
    monkeypatch.delitem(trl_compat.TRL_ATTRIBUTES, "no_such_attribute")
    monkeypatch.setattr(trl_compat, "OUTPUT_KEYS", (*trl_compat.OUTPUT_KEYS, "no_such_key"))
    with pytest.raises(ImportError, match="no_such_key"):
        trl_compat.check_internals()
