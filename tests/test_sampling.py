"""model/decoding.py's Decoding: the one object of a decode call's settings that the sampler, its fallbacks and
transformers' generate() read (the sampler against generate() itself: tests/test_decoding.py)."""

import pytest

from rookworld_trl.model.decoding import Decoding, Sampling, decoding_of


def test_generate_gets_every_warper_explicitly():
    d = Decoding(80, Sampling(temperature=0.4, top_k=0), [5, 7], pad_token_id=5)
    assert d.eos_token_ids == (5, 7)  # frozen all the way down: a list given is kept as a tuple
    # top_k 0, not None: generate() would fill None from the model's generation config (50)
    assert d.generate_kwargs() == dict(max_new_tokens=80, eos_token_id=[5, 7], pad_token_id=5, do_sample=True,
                                       temperature=0.4, top_k=0, top_p=1.0, min_p=None)  # fmt: skip


def test_the_sampler_takes_a_decoding_or_its_fields_not_both():
    fields = dict(max_new_tokens=8, sampling=Sampling(do_sample=False), eos_token_ids=[0], pad_token_id=0)
    d = Decoding(**fields)
    assert decoding_of(None, fields) == d and decoding_of(d, {}) is d
    with pytest.raises(TypeError, match="given together"):
        decoding_of(d, {"max_new_tokens": 9})
    with pytest.raises(TypeError):
        decoding_of(None, {**fields, "temprature": 0.5})  # a misspelt field is refused, not ignored
