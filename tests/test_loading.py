"""Model specs: the random-init control representation of a checkpoint."""
from __future__ import annotations

import pytest
import torch

from xlprobe.errors import ConfigError
from xlprobe.loading import load_model, random_init_spec

KEY = "model.encoder.layers.0.self_attn.q_proj.weight"


def test_random_init_is_the_same_architecture_with_seeded_fresh_weights():
    trained, tok = load_model("toy:lm")
    rand, rand_tok = load_model("random-init:toy:lm")
    again, _ = load_model("random-init:toy:lm")
    other_seed, _ = load_model("random-init@3:toy:lm")
    assert type(rand) is type(trained) and rand.config.to_dict() == trained.config.to_dict()
    assert rand_tok.get_vocab() == tok.get_vocab()
    a, b = rand.state_dict(), trained.state_dict()
    assert a.keys() == b.keys()
    assert not torch.equal(a[KEY], b[KEY])
    assert torch.equal(a[KEY], again.state_dict()[KEY])
    assert not torch.equal(a[KEY], other_seed.state_dict()[KEY])
    assert not rand.training


def test_checkpoints_of_one_architecture_share_their_random_init():
    a, _ = load_model("random-init:toy:lm")
    b, _ = load_model("random-init:toy:mt")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_random_init_spec_parsing():
    assert random_init_spec("random-init:toy:lm") == ("toy:lm", 0)
    assert random_init_spec("random-init@12:facebook/mbart-large-50") == ("facebook/mbart-large-50", 12)
    assert random_init_spec("toy:lm") is None
    for bad in ("random-init:", "random-init@x:toy:lm", "random-initx:toy:lm"):
        with pytest.raises(ConfigError, match="random-init"):
            random_init_spec(bad)
