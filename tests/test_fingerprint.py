"""model_fingerprint's memo: reused while the weights are untouched, recomputed after any change."""
from __future__ import annotations

import pytest

from xlprobe import fingerprint

torch = pytest.importorskip("torch")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


@pytest.fixture
def fed(monkeypatch):
    """The tensors hashed byte by byte (a memo hit hashes none)."""
    out: list[tuple[int, ...]] = []
    real = fingerprint._feed_tensor
    monkeypatch.setattr(fingerprint, "_feed_tensor", lambda h, t: (out.append(tuple(t.shape)), real(h, t)))
    return out


def test_untouched_weights_are_not_hashed_again(fed):
    m = _model()
    first = fingerprint.model_fingerprint(m)
    assert len(fed) == 4
    assert fingerprint.model_fingerprint(m) == first and len(fed) == 4
    assert fingerprint.model_fingerprint(m, n_chars=64).startswith(first) and len(fed) == 4
    assert fingerprint.model_fingerprint(_model()) == first  # another object with equal weights: same hash


@pytest.mark.parametrize("change", ["in_place", "optimizer_step", "new_tensor", "train_mode_only"])
def test_every_change_of_the_weights_is_seen(fed, change):
    m = _model()
    before = fingerprint.model_fingerprint(m)
    if change == "in_place":
        with torch.no_grad():
            m[0].weight[0, 0] += 1.0
    elif change == "optimizer_step":
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        m(torch.ones(3, 4)).sum().backward()
        opt.step()
    elif change == "new_tensor":
        m[2].bias = torch.nn.Parameter(m[2].bias.detach() + 1.0)
    else:
        m.train(not m.training)  # not a weight: the memo is reused
    after = fingerprint.model_fingerprint(m)
    assert (after == before) == (change == "train_mode_only")
    if change != "train_mode_only":
        assert after == fingerprint._hash_state(m, m.state_dict())[:16]  # recomputed, not stale
