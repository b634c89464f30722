"""The MLP probe as a scikit-learn classifier.

* :class:`MLPProbe`: Dropout -> Linear(d, hidden) -> GELU -> Linear(hidden, K), the probe of the
  follow-up study; AdamW (decoupled L2 as ``weight_decay``), minibatches, early stopping on a held-out
  part of the training data (split by group when groups are given), the best epoch's weights kept.
  Shared parts: :mod:`xlprobe.probes.estimator`.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import check_float, check_int, to_host
from xlprobe.probes.estimator import TorchProbe, check_random_state

__all__ = ["MLPProbe"]


class _MLP(nn.Module):
    def __init__(self, d: int, hidden: int, k: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPProbe(TorchProbe):
    """Dropout -> Linear(d, hidden) -> GELU -> Linear(hidden, K) probe, AdamW, early stopping.

    Parameters
    ----------
    hidden : int, default 256
    dropout : float, default 0.1
        Dropout on the input features.
    lr : float, default 1e-3
    weight_decay : float, default 1e-2
        AdamW's decoupled L2.
    batch_size : int, default 64
    max_epochs : int, default 100
    early_stopping : bool, default True
        Hold out ``validation_fraction`` of the training items (whole groups when ``fit`` gets groups)
        and keep the weights of the epoch with the lowest validation loss; stop after ``patience``
        epochs without improvement.
    validation_fraction : float, default 0.1
    patience : int, default 10
    standardize, class_weight, device : as :class:`LinearProbe`.
        ``X``, ``y`` (and ``groups``) may be torch tensors on any device and of any float dtype: they are
        read once onto the host, the fit then runs on ``device`` and equals the fit on the same numpy arrays.
    random_state : int or None, default None
        Seeds initialisation, dropout, minibatch order and the validation split (None: 0).

    Attributes
    ----------
    classes_, n_features_in_, mean_, scale_, n_epochs_, best_epoch_, best_val_loss_ (NaN without early
    stopping), train_loss_ (per epoch), val_loss_ (per epoch).

    See Also
    --------
    LinearProbe : the linear probe with the same interface.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((20, 2)), np.ones((20, 2))] + np.random.default_rng(0).normal(0, 0.1, (40, 2))
    >>> m = MLPProbe(hidden=8, lr=1e-2, max_epochs=50, random_state=0).fit(X, [0] * 20 + [1] * 20)
    >>> m.predict([[0.0, 0.0], [1.0, 1.0]]).tolist(), m.decision_function([[1.0, 1.0]]).shape
    ([0, 1], (1,))
    """

    def __init__(self, hidden: int = 256, *, dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 1e-2,
                 batch_size: int = 64, max_epochs: int = 100, early_stopping: bool = True,
                 validation_fraction: float = 0.1, patience: int = 10, standardize: bool = True,
                 class_weight: Any = None, random_state: int | None = None, device: str = "cpu") -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.class_weight = class_weight
        self.random_state = random_state
        self.device = device

    def _check(self) -> None:
        self._check_common()
        check_int("hidden", self.hidden, 1)
        check_float("dropout", self.dropout, 0.0, 1.0, open_high=True)
        check_float("lr", self.lr, 0.0, math.inf, open_low=True)
        check_float("weight_decay", self.weight_decay, 0.0, math.inf)
        check_int("batch_size", self.batch_size, 1)
        check_int("max_epochs", self.max_epochs, 1)
        check_int("patience", self.patience, 1)
        check_float("validation_fraction", self.validation_fraction, 0.0, 1.0, open_low=True, open_high=True)
        if not isinstance(self.early_stopping, bool):
            raise ConfigError(f"early_stopping must be True or False; got {self.early_stopping!r}")

    def _split(self, n: int, groups: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Train / validation item indices (whole groups on one side when groups are given)."""
        if groups is None:
            perm = rng.permutation(n)
            k = max(1, int(round(self.validation_fraction * n)))
            return np.sort(perm[k:]), np.sort(perm[:k])
        g = np.asarray(to_host(groups))
        if g.ndim != 1 or g.shape[0] != n:
            raise DataError(f"groups must be 1-D with one entry per row of X ({n}); got shape {g.shape}")
        units, inv = np.unique(g, return_inverse=True)
        inv = inv.reshape(-1)
        if units.size < 2:
            raise DataError("early stopping by groups needs at least 2 groups",
                            hint="pass more groups or early_stopping=False")
        order = rng.permutation(units.size)
        k = max(1, int(round(self.validation_fraction * units.size)))
        is_val = np.isin(inv, order[:k])
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)

    def fit(self, X: Any, y: Any, groups: Any = None) -> MLPProbe:
        """Fit on X [n, d] and labels y [n]; ``groups`` (optional) keeps groups whole in the validation split."""
        self._check()
        Z, codes = self._fit_input(X, y)
        weights = self._sample_weights(codes)
        seed = check_random_state(self.random_state)
        rng = np.random.default_rng(seed)
        n = len(codes)
        if self.early_stopping:
            tr, va = self._split(n, groups, rng)
        else:
            tr, va = np.arange(n), np.empty(0, np.int64)
        dev = self.device
        Zt, yt, wt = (torch.from_numpy(a).to(dev) for a in (Z, codes, weights))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _MLP(Z.shape[1], self.hidden, len(self.classes_), self.dropout).to(dev)
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            best = (math.inf, -1, None)
            self.train_loss_, self.val_loss_ = [], []
            bad = 0
            for epoch in range(self.max_epochs):
                net.train()
                perm = tr[rng.permutation(len(tr))]
                total = 0.0
                for s in range(0, len(perm), self.batch_size):
                    idx = torch.from_numpy(perm[s:s + self.batch_size]).to(dev)
                    ce = nn.functional.cross_entropy(net(Zt[idx]), yt[idx], reduction="none")
                    loss = (wt[idx] * ce).sum() / len(idx)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                self.train_loss_.append(total / len(perm))
                if not len(va):
                    continue
                net.eval()
                with torch.no_grad():
                    vi = torch.from_numpy(va).to(dev)
                    ce = nn.functional.cross_entropy(net(Zt[vi]), yt[vi], reduction="none")
                    vloss = float((wt[vi] * ce).sum() / len(va))
                self.val_loss_.append(vloss)
                if vloss < best[0] - 1e-6:
                    best, bad = (vloss, epoch, copy.deepcopy(net.state_dict())), 0
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
        if best[2] is not None:
            net.load_state_dict(best[2])
        self.n_epochs_ = len(self.train_loss_)
        self.best_epoch_ = best[1] if best[2] is not None else self.n_epochs_ - 1
        self.best_val_loss_ = best[0] if best[2] is not None else float("nan")
        if not all(np.isfinite(self.train_loss_)):
            raise DataError("MLPProbe diverged (non-finite training loss)",
                            hint="lower lr, or use standardize=True")
        self._net = copy.deepcopy(net).cpu().double().eval()  # float64 on the CPU for prediction
        return self

    def _scores(self, Z: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            s = self._net(torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float64))).numpy()
        return s[:, 1] - s[:, 0] if s.shape[1] == 2 else s


