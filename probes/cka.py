"""Centred kernel alignment (CKA) between two representations of the same items.

CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", ICML) compares
``X`` [n, d1] and ``Y`` [n, d2] whose rows are the same n items::

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   HSIC(K, L) = tr(K H L H) / (n - 1)^2

with K, L the n x n kernel (Gram) matrices of X and Y and H = I - 11'/n the centring matrix.

*Linear kernel* (K = X X'): with centred columns (Xc = H X), tr(K H L H) = ||Yc' Xc||_F^2, so::

    CKA_lin = ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F)

which needs only d x d matrices (Kornblith et al. 2019, eq. 5). That *feature-space* form is used
when n >= min(d1, d2); below that the n x n Gram form is smaller and cheaper, and is used instead
(the value is the same). Everything is accumulated in float64 (float32 is about 2e-6 off).

*RBF kernel*: K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)), sigma by default the median distance
between distinct rows (the median heuristic; computed separately for X and Y), on n x n matrices.

*Debiased* CKA replaces each HSIC by the unbiased estimator of Song et al. 2012 ("Feature Selection
via Dependence Maximization", JMLR 13, Thm. 2), as proposed for CKA by Nguyen, Raghu & Kornblith
2021 ("Do Wide and Deep Networks Learn the Same Things?", ICLR, appendix)::

    HSIC_u(K, L) = [tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))

with K~ = K with its diagonal set to zero. It is invariant to shifting the features, so for the
linear kernel the features are centred first; then K~1 = -a with a_i = ||xc_i||^2, and it reduces to
``||Yc'Xc||^2 - n/(n-2) a.b + (sum a)(sum b) / ((n-1)(n-2))`` (over n(n-3)), again without any
n x n matrix (Kornblith's reference code uses the same reduction). Debiased CKA is 1 for identical
inputs and near 0 for independent ones at any d/n, where the biased estimate is pulled up when n is
not much larger than d.

:func:`cka_streaming` / :func:`cka_from_store` accumulate X'X, Y'Y, Y'X and column sums (and, when
debiased, a few O(d) sums of row norms) in float64 over row chunks, so memory is O(d^2) whatever n.
:func:`cka_matrix` prepares each layer once (centred features or Gram matrix, and its self term) and
then fills the layer x layer table with one cross term per pair.

:func:`cka` and :func:`cka_matrix` also take torch tensors: given a tensor (or ``device="cuda"``), the
same formulas run with torch on that device (float64; float32 on Apple's MPS, which has no float64),
and only the scalars come back. Inputs on the CPU take the numpy path unless a device is named.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_rep
from xlprobe.registry import register_measure
from xlprobe.store import ActivationStore
from xlprobe.types import StoreKey

__all__ = ["cka", "cka_matrix", "cka_streaming", "cka_from_store", "KERNELS"]

logger = logging.getLogger(__name__)

KERNELS = ("linear", "rbf")
#: Largest n for which an n x n Gram matrix is built (float64: 3.2 GB per matrix at this size).
GRAM_MAX_N = 20_000


# ------------------------------------------------------------------------------------------ validation
def _check_options(kernel: str, debiased: bool, sigma: Any) -> tuple[float | None, float | None]:
    if kernel not in KERNELS:
        raise ConfigError(f"kernel must be one of {list(KERNELS)}; got {kernel!r}", hint="kernel='linear' or 'rbf'")
    if not isinstance(debiased, (bool, np.bool_)):
        raise ConfigError(f"debiased must be True or False; got {debiased!r}")
    if sigma is None:
        return None, None
    if kernel != "rbf":
        raise ConfigError(f"sigma is the RBF bandwidth; it means nothing for kernel={kernel!r} (got sigma={sigma!r})",
                          hint="drop sigma, or pass kernel='rbf'")
    pair = tuple(sigma) if isinstance(sigma, (tuple, list)) else (sigma, sigma)
    if len(pair) != 2 or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ConfigError(f"sigma must be a positive number, a (sigma_x, sigma_y) pair or None; got {sigma!r}",
                          hint="None uses the median distance between rows of each side")
    return float(pair[0]), float(pair[1])


def _min_n(debiased: bool) -> int:
    return 4 if debiased else 2


def _check_n(n: int, debiased: bool, what: str) -> None:
    need = _min_n(debiased)
    if n < need:
        raise DataError(f"{what} has {n} rows; {'debiased ' if debiased else ''}CKA needs at least {need}",
                        hint="the unbiased HSIC estimator divides by n(n-3)" if debiased else None)


# ------------------------------------------------------------------------------------------ torch inputs
def _target_device(device: Any, arrays: Iterable[Any]) -> Any:
    """The torch device to compute on (``device``, else that of the first tensor among ``arrays``), or None: numpy."""
    if device is not None:
        import torch

        try:
            return torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ConfigError(f"device must be a torch device ('cpu', 'cuda', 'cuda:1') or None; got {device!r}",
                              hint="None computes with numpy, or on the device of tensor inputs") from None
    torch = sys.modules.get("torch")  # no tensor can be passed unless torch is imported
    if torch is None:
        return None
    return next((a.device for a in arrays if isinstance(a, torch.Tensor)), None)


def _rep(X: Any, name: str, dev: Any) -> Any:
    """A private float64 copy of ``X`` [n, d], checked as :func:`as_rep`: numpy, or a torch tensor on ``dev``."""
    if dev is None:
        return as_rep(X, name, copy=True)
    import torch

    dtype = torch.float32 if dev.type == "mps" else torch.float64
    if not isinstance(X, torch.Tensor):
        return torch.from_numpy(as_rep(X, name)).to(device=dev, dtype=dtype)
    if X.dim() != 2 or X.shape[1] == 0:
        as_rep(np.empty(tuple(X.shape)), name)  # the same error as for an array of that shape
    if X.is_complex() or X.dtype == torch.bool:
        raise DataError(f"{name} must be a real-valued tensor [n, d]; got dtype {X.dtype}")
    T = X.detach().to(device=dev, dtype=dtype, copy=True)
    bad = int((~torch.isfinite(T)).sum())
    if bad:
        raise DataError(f"{name} contains NaN or inf ({bad} values)",
                        hint="check the activations (float16 overflow?) or drop those rows")
    return T


def _is_tensor(M: Any) -> bool:
    return not isinstance(M, np.ndarray)


def _einsum(spec: str, *ops: Any) -> Any:
    if _is_tensor(ops[0]):
        import torch

        return torch.einsum(spec, *ops)
    return np.einsum(spec, *ops)


def _zero_diagonal(K: Any) -> None:
    if _is_tensor(K):
        K.fill_diagonal_(0.0)
    else:
        np.fill_diagonal(K, 0.0)


# ------------------------------------------------------------------------------------------ prepared sides
@dataclass
class _Side:
    """One representation, prepared once: centred features or a Gram matrix, and its self term.

    ``mode`` is ``"feature"`` (M = centred X [n, d]) or ``"gram"`` (M = the centred Gram matrix, or
    for the debiased estimator the uncentred Gram matrix with a zero diagonal). ``vec`` / ``tot`` are
    the debiasing terms: the centred rows' squared norms a and sum(a) (feature), or K~1 and 1'K~1 (gram).
    """

    mode: str
    M: Any  # np.ndarray, or a torch tensor on the device the measure runs on
    vec: Any = None
    tot: float = 0.0
    self_term: float = float("nan")


def _rbf_gram(Xc: np.ndarray, sigma: float | None, name: str) -> np.ndarray:
    """exp(-||x_i - x_j||^2 / (2 sigma^2)); sigma None: the median distance between distinct rows.

    Built in place in one n x n buffer (plus n(n-1)/2 distances for the median).
    """
    if _is_tensor(Xc):
        return _rbf_gram_torch(Xc, sigma, name)
    n = Xc.shape[0]
    sq = np.einsum("ij,ij->i", Xc, Xc)
    D2 = Xc @ Xc.T
    D2 *= -2.0
    D2 += sq[:, None]
    D2 += sq[None, :]
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    if sigma is None:
        dist = np.sqrt(np.concatenate([D2[i, i + 1:] for i in range(n - 1)]))
        med = float(np.median(dist, overwrite_input=True))  # the median distance, not sqrt(median(D2))
        del dist
        sigma = _bandwidth(med, name)
    D2 *= -1.0 / (2.0 * sigma * sigma)
    return np.exp(D2, out=D2)


def _bandwidth(median: float, name: str) -> float:
    """The median heuristic's bandwidth, or DataError when most rows coincide (a median distance of 0)."""
    if median <= 0:
        raise DataError(f"{name}: the median distance between rows is 0 (most rows are identical), so the "
                        "median-heuristic RBF bandwidth is undefined",
                        hint="pass sigma= explicitly, or drop duplicate rows")
    return median


def _rbf_gram_torch(Xc: Any, sigma: float | None, name: str) -> Any:
    """:func:`_rbf_gram` with torch on the tensor's device (the median as numpy's: the mean of the two middles)."""
    import torch

    n = Xc.shape[0]
    sq = torch.einsum("ij,ij->i", Xc, Xc)
    D2 = Xc @ Xc.T
    D2.mul_(-2.0).add_(sq[:, None]).add_(sq[None, :]).clamp_(min=0.0).fill_diagonal_(0.0)
    if sigma is None:
        rows, cols = torch.triu_indices(n, n, 1, device=D2.device)
        dist = D2[rows, cols].sqrt_()
        del rows, cols
        k = dist.numel()
        med = float((torch.kthvalue(dist, (k + 1) // 2).values + torch.kthvalue(dist, k // 2 + 1).values) / 2)
        del dist
        sigma = _bandwidth(med, name)
    D2.mul_(-1.0 / (2.0 * sigma * sigma))
    return D2.exp_()


def _prepare(X: Any, *, kernel: str, debiased: bool, mode: str, sigma: float | None,
             name: str) -> _Side:
    """Centre ``X`` (in place: pass a private copy) and build what the cross terms need."""
    Xc = X
    Xc -= X.mean(axis=0, keepdims=True)
    if mode == "feature":
        side = _Side("feature", Xc)
        if debiased:
            side.vec = _einsum("ij,ij->i", Xc, Xc)
            side.tot = float(side.vec.sum())
    else:
        if X.shape[0] > GRAM_MAX_N:
            gib = X.shape[0] ** 2 * 8 / 2**30
            raise DataError(f"{name} has {X.shape[0]} rows; the {kernel} kernel needs n x n Gram matrices "
                            f"({gib:.1f} GiB each), above the limit of n = {GRAM_MAX_N}",
                            hint="subsample rows (the same rows on both sides), or use kernel='linear', "
                                 "which works in feature space")
        K = Xc @ Xc.T if kernel == "linear" else _rbf_gram(Xc, sigma, name)
        if debiased:
            _zero_diagonal(K)
            side = _Side("gram", K, vec=K.sum(axis=1))
            side.tot = float(side.vec.sum())
        else:
            if kernel != "linear":  # the linear Gram of centred features is already centred
                K -= K.mean(axis=0, keepdims=True)
                K -= K.mean(axis=1, keepdims=True)
            side = _Side("gram", K)
    return side


def _cross(A: _Side, B: _Side, debiased: bool) -> float:
    """n(n-3) HSIC_u (debiased) or (n-1)^2 HSIC (biased) of two prepared sides (same mode)."""
    n = A.M.shape[0]
    if A.mode == "feature":
        C = B.M.T @ A.M if B.M.shape[1] <= A.M.shape[1] else A.M.T @ B.M
        t = float(_einsum("ij,ij->", C, C))
        if not debiased:
            return t
        return t - n / (n - 2) * float(A.vec @ B.vec) + A.tot * B.tot / ((n - 1) * (n - 2))
    t = float(_einsum("ij,ij->", A.M, B.M))  # tr(K L) for symmetric K, L
    if not debiased:
        return t
    return t + A.tot * B.tot / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(A.vec @ B.vec)


def _self_term(side: _Side, debiased: bool, name: str) -> float:
    s = _cross(side, side, debiased)
    if not s > 0:
        raise DataError(f"{name} has no variance across rows (its {'unbiased ' if debiased else ''}HSIC with "
                        f"itself is {s!r}), so CKA is undefined",
                        hint="a constant representation (e.g. a dead layer, or a single repeated item) cannot be "
                             "compared; check the layer and the rows")
    return s


def _ratio(cross: float, sa: float, sb: float) -> float:
    return float(cross / np.sqrt(sa * sb))


def _choose_mode(kernel: str, n: int, dims: Iterable[int]) -> str:
    """Gram form for RBF; for linear, the feature form unless n < the smallest d (smaller matrices)."""
    if kernel == "rbf":
        return "gram"
    return "gram" if n < min(dims) else "feature"


# ------------------------------------------------------------------------------------------ public API
@register_measure("cka", kind="paired", direction="similarity")
@register_measure("cka.linear", kind="paired", direction="similarity", kernel="linear")
@register_measure("cka.rbf", kind="paired", direction="similarity", kernel="rbf")
@register_measure("cka.linear.debiased", kind="paired", direction="similarity", kernel="linear", debiased=True)
@register_measure("cka.rbf.debiased", kind="paired", direction="similarity", kernel="rbf", debiased=True)
def cka(X: Any, Y: Any, *, kernel: str = "linear", debiased: bool = False,
        sigma: float | tuple[float, float] | None = None, seed: int = 0, device: Any = None) -> float:
    """Centred kernel alignment between two representations of the same items (Kornblith et al. 2019).

    Parameters
    ----------
    X : array [n, d1]
        First representation, one row per item (float32 is fine; the work is done in float64).
    Y : array [n, d2]
        Second representation, the same items in the same order.
    kernel : {"linear", "rbf"}, default "linear"
        Linear uses the feature-space closed form (or the n x n form when n < min(d1, d2)); RBF
        builds n x n Gram matrices.
    debiased : bool, default False
        Use the unbiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021). Needs n >= 4.
    sigma : float or (float, float), optional
        RBF bandwidth, absolute (one for both sides or one per side). Default: the median distance
        between distinct rows, per side.
    seed : int, default 0
        Unused (CKA is deterministic); accepted because every measure takes ``seed``.
    device : str or torch.device, optional
        Compute with torch there (``"cuda"``, ``"cuda:1"``, ``"cpu"``). Default: on the device of
        ``X`` (or ``Y``) when it is a torch tensor, else with numpy. Same value either way (to ~1e-12).

    Returns
    -------
    float
        In [0, 1] for the biased estimate (1 when X = Y up to rotation and scale); the debiased
        estimate is 1 for identical inputs and may be slightly negative for unrelated ones.

    Raises
    ------
    DataError
        On shapes that are not [n, d] with the same n, NaN / inf, too few rows, or a constant side.
    ConfigError
        On an unknown kernel or a bad sigma.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 8))
    >>> Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    >>> round(cka(X, 3.0 * X @ Q), 12)
    1.0
    """
    sx, sy = _check_options(kernel, debiased, sigma)
    dev = _target_device(device, (X, Y))
    A, B = _rep(X, "X", dev), _rep(Y, "Y", dev)
    if A.shape[0] != B.shape[0]:
        raise DataError(f"X and Y must have the same rows (items); got X {tuple(A.shape)} and Y {tuple(B.shape)}",
                        hint="take both representations on the same items, in the same order")
    _check_n(A.shape[0], debiased, "X")
    mode = _choose_mode(kernel, A.shape[0], (A.shape[1], B.shape[1]))
    pa = _prepare(A, kernel=kernel, debiased=debiased, mode=mode, sigma=sx, name="X")
    pb = _prepare(B, kernel=kernel, debiased=debiased, mode=mode, sigma=sy, name="Y")
    return _ratio(_cross(pa, pb, debiased), _self_term(pa, debiased, "X"), _self_term(pb, debiased, "Y"))


def cka_matrix(reps_a: Mapping[str, Any], reps_b: Mapping[str, Any] | None = None, *,
               kernel: str = "linear", debiased: bool = False,
               sigma: float | tuple[float, float] | None = None, constant: str = "raise",
               device: Any = None) -> pd.DataFrame:
    """CKA between every layer of ``reps_a`` and every layer of ``reps_b`` (layer x layer table).

    Each layer is prepared once (centred features or its Gram matrix, and its self term), so a
    table of La x Lb layers costs La + Lb preparations and La x Lb cross terms, not 3 La Lb products.

    Parameters
    ----------
    reps_a : dict of str to array [n, d] (numpy arrays or torch tensors)
        Layer name -> representation; every array has the same n rows (the same items).
    reps_b : dict of str to array [n, d], optional
        The other side (e.g. another checkpoint). Default: ``reps_a`` itself (a symmetric table,
        each pair computed once).
    kernel, debiased, sigma
        As in :func:`cka`; the linear form (feature or Gram) is chosen once for the whole table.
    constant : {"raise", "nan"}, default "raise"
        What a layer with no variance across rows gets (CKA is undefined there, e.g. the decoder input
        of a model read without targets): a DataError naming it, or NaN in its row / column of the
        table, leaving every other cell computed (the layer is named in ``df.attrs["constant"]``).
    device : str or torch.device, optional
        Compute with torch there. Default: on the device of the first torch tensor among the layers
        (the others are moved there), else with numpy.

    Returns
    -------
    pandas.DataFrame
        Index: the layers of ``reps_a`` (in order); columns: the layers of ``reps_b``.
    """
    sx, sy = _check_options(kernel, debiased, sigma)
    if constant not in ("raise", "nan"):
        raise ConfigError(f"constant must be 'raise' or 'nan'; got {constant!r}")
    same = reps_b is None or reps_b is reps_a
    if same and sigma is not None and sx != sy:
        raise ConfigError("a (sigma_x, sigma_y) pair needs two sides; got reps_b=None", hint="pass one sigma")
    sides = {"reps_a": reps_a} if same else {"reps_a": reps_a, "reps_b": reps_b}
    shapes: dict[str, tuple[int, ...]] = {}
    for what, reps in sides.items():
        if not isinstance(reps, Mapping) or not reps:
            raise DataError(f"{what} must be a non-empty dict of layer name -> array [n, d]; got {type(reps).__name__}"
                            + ("" if not isinstance(reps, Mapping) else " (empty)"))
        for k, v in reps.items():
            shape = np.shape(v)
            if len(shape) != 2:
                raise DataError(f"{what}[{k!r}] must be 2-D [n items, d features]; got shape {shape}")
            shapes[f"{what}[{k!r}]"] = shape
    ns = {name: shape[0] for name, shape in shapes.items()}
    if len(set(ns.values())) != 1:
        raise DataError(f"every representation must have the same rows (items); got row counts {ns}",
                        hint="take every layer on the same items, in the same order")
    n = next(iter(ns.values()))
    _check_n(n, debiased, "each representation")
    dev = _target_device(device, (v for reps in sides.values() for v in reps.values()))
    mode = _choose_mode(kernel, n, (shape[1] for shape in shapes.values()))
    prepared: dict[str, dict[str, _Side | None]] = {}
    degenerate: list[str] = []
    for what, reps in sides.items():  # one layer in float64 at a time, besides the prepared ones
        s = sx if what == "reps_a" else sy
        prepared[what] = {}
        for k, v in reps.items():
            name = f"{what}[{k!r}]"
            side = _prepare(_rep(v, name, dev), kernel=kernel, debiased=debiased, mode=mode, sigma=s,
                            name=name)
            try:
                side.self_term = _self_term(side, debiased, name)
            except DataError:
                if constant == "raise":
                    raise
                side = None
                degenerate.append(name)
            prepared[what][str(k)] = side
    pa = prepared["reps_a"]
    pb = pa if same else prepared["reps_b"]
    out = np.full((len(pa), len(pb)), np.nan)
    for i, a in enumerate(pa.values()):
        for j, b in enumerate(pb.values()):
            if a is None or b is None:
                continue
            if same and j < i:
                out[i, j] = out[j, i]
            elif same and i == j:
                out[i, j] = _ratio(a.self_term, a.self_term, a.self_term)
            else:
                out[i, j] = _ratio(_cross(a, b, debiased), a.self_term, b.self_term)
    df = pd.DataFrame(out, index=pd.Index(list(pa), name="layer"), columns=pd.Index(list(pb), name="ref_layer"))
    df.attrs["constant"] = degenerate
    return df


# ------------------------------------------------------------------------------------------ streaming
class _LinearCKAStream:
    """Float64 sums over row chunks from which linear CKA (biased or debiased) follows exactly.

    Rows are shifted by the first chunk's column means before summing (the classic shifted-data
    trick): covariances do not change, and the uncentred sums no longer cancel catastrophically when
    a feature's mean is large against its spread (common in transformer activations).
    """

    def __init__(self, debiased: bool) -> None:
        self.debiased = debiased
        self.n = 0
        self.started = False

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        if not self.started:
            self.dx, self.dy = x.shape[1], y.shape[1]
            self.cx, self.cy = x.mean(axis=0), y.mean(axis=0)
            self.sx, self.sy = np.zeros(self.dx), np.zeros(self.dy)
            self.Sxx, self.Syy, self.Syx = np.zeros((self.dx, self.dx)), np.zeros((self.dy, self.dy)), \
                np.zeros((self.dy, self.dx))
            if self.debiased:
                self.A = self.B = self.Aa = self.Bb = self.Ab = 0.0
                self.ax, self.bx = np.zeros(self.dx), np.zeros(self.dx)
                self.ay, self.by = np.zeros(self.dy), np.zeros(self.dy)
            self.started = True
        x -= self.cx  # in place: _stream passes private float64 copies
        y -= self.cy
        self.n += x.shape[0]
        self.sx += x.sum(axis=0)
        self.sy += y.sum(axis=0)
        self.Sxx += x.T @ x
        self.Syy += y.T @ y
        self.Syx += y.T @ x
        if self.debiased:
            a, b = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
            self.A += float(a.sum())
            self.B += float(b.sum())
            self.Aa += float(a @ a)
            self.Bb += float(b @ b)
            self.Ab += float(a @ b)
            self.ax += a @ x
            self.bx += b @ x
            self.ay += a @ y
            self.by += b @ y

    @staticmethod
    def _sum_pq(n: int, ab: float, ay: np.ndarray, bx: np.ndarray, A: float, B: float, mSm: float,
                sx: np.ndarray, sy: np.ndarray, mx: np.ndarray, my: np.ndarray) -> float:
        """sum_i p_i q_i, p_i = ||x_i - mx||^2, q_i = ||y_i - my||^2, from uncentred sums.

        ``ab`` = sum a_i b_i (a, b the uncentred squared row norms), ``ay`` = sum a_i y_i,
        ``bx`` = sum b_i x_i, ``mSm`` = mx' (sum x_i y_i') my.
        """
        m2x, m2y = float(mx @ mx), float(my @ my)
        return (ab - 2 * float(ay @ my) + m2y * A - 2 * float(bx @ mx) + 4 * mSm
                - 2 * m2y * float(sx @ mx) + m2x * B - 2 * m2x * float(sy @ my) + n * m2x * m2y)

    def value(self) -> float:
        n = self.n
        _check_n(n, self.debiased, "the streamed data")
        mx, my = self.sx / n, self.sy / n
        Cxx = self.Sxx - n * np.outer(mx, mx)
        Cyy = self.Syy - n * np.outer(my, my)
        Cyx = self.Syx - n * np.outer(my, mx)
        txy, txx, tyy = (float(np.einsum("ij,ij->", C, C)) for C in (Cyx, Cxx, Cyy))
        if self.debiased:
            pa, pb = self.A - n * float(mx @ mx), self.B - n * float(my @ my)  # sums of centred row norms
            pq = self._sum_pq(n, self.Ab, self.ay, self.bx, self.A, self.B, float(my @ self.Syx @ mx),
                              self.sx, self.sy, mx, my)
            pp = self._sum_pq(n, self.Aa, self.ax, self.ax, self.A, self.A, float(mx @ self.Sxx @ mx),
                              self.sx, self.sx, mx, mx)
            qq = self._sum_pq(n, self.Bb, self.by, self.by, self.B, self.B, float(my @ self.Syy @ my),
                              self.sy, self.sy, my, my)
            c1, c2 = n / (n - 2), 1.0 / ((n - 1) * (n - 2))
            txy = txy - c1 * pq + c2 * pa * pb
            txx = txx - c1 * pp + c2 * pa * pa
            tyy = tyy - c1 * qq + c2 * pb * pb
        for t, name in ((txx, "X"), (tyy, "Y")):
            if not t > 0:
                raise DataError(f"{name} has no variance across rows, so CKA is undefined",
                                hint="a constant representation cannot be compared; check the layer and the rows")
        return _ratio(txy, txx, tyy)


def _chunk_pairs(X: Any, Y: Any, chunk_rows: int) -> Iterator[tuple[Any, Any]]:
    """Pairs of row chunks: slices of two arrays, or the items of two iterables in lockstep."""
    x_arr, y_arr = hasattr(X, "shape") and hasattr(X, "__getitem__"), hasattr(Y, "shape") and hasattr(Y, "__getitem__")
    if x_arr != y_arr:
        raise DataError("X and Y must both be arrays or both be iterables of row chunks; got "
                        f"{type(X).__name__} and {type(Y).__name__}")
    if x_arr:
        if len(X.shape) != 2 or len(Y.shape) != 2:
            raise DataError(f"X and Y must be 2-D [n, d]; got shapes {tuple(X.shape)} and {tuple(Y.shape)}")
        if X.shape[0] != Y.shape[0]:
            raise DataError(f"X and Y must have the same rows (items); got X {tuple(X.shape)} and Y {tuple(Y.shape)}",
                            hint="take both representations on the same items, in the same order")
        for s in range(0, X.shape[0], chunk_rows):
            yield X[s:s + chunk_rows], Y[s:s + chunk_rows]
        return
    ix, iy = iter(X), iter(Y)
    sentinel = object()
    while True:
        x, y = next(ix, sentinel), next(iy, sentinel)
        if x is sentinel and y is sentinel:
            return
        if x is sentinel or y is sentinel:
            raise DataError("the chunk iterables of X and Y have different lengths",
                            hint="yield the same rows of X and Y in each step")
        yield x, y


def _stream(pairs: Iterable[tuple[Any, Any]], debiased: bool) -> float:
    acc = _LinearCKAStream(debiased)
    for i, (x, y) in enumerate(pairs):
        x, y = as_rep(x, f"X chunk {i}", copy=True), as_rep(y, f"Y chunk {i}", copy=True)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"chunk {i} has {x.shape[0]} rows of X but {y.shape[0]} rows of Y",
                            hint="yield the same rows of X and Y in each step")
        if acc.started and (x.shape[1] != acc.dx or y.shape[1] != acc.dy):
            raise DataError(f"chunk {i} has widths ({x.shape[1]}, {y.shape[1]}); earlier chunks had "
                            f"({acc.dx}, {acc.dy})")
        if x.shape[0]:
            acc.update(x, y)
    if not acc.started:
        raise DataError("no rows to compare: the chunks were empty", hint="pass at least 2 rows")
    return acc.value()


def _check_chunk_rows(chunk_rows: int) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be a positive integer; got {chunk_rows!r}")
    return int(chunk_rows)


def cka_streaming(X: np.ndarray | Iterable[np.ndarray], Y: np.ndarray | Iterable[np.ndarray], *,
                  chunk_rows: int = 4096, debiased: bool = False) -> float:
    """Linear CKA accumulated over row chunks in float64: O(d^2) memory, the value of :func:`cka`.

    Parameters
    ----------
    X, Y : array [n, d] or iterable of arrays [m_i, d]
        Two arrays (memory maps welcome: only ``chunk_rows`` rows are copied at a time), or two
        iterables yielding row chunks in lockstep (the same rows of X and Y in each step).
    chunk_rows : int, default 4096
        Rows per chunk when X and Y are arrays.
    debiased : bool, default False
        Use the unbiased HSIC estimator, as in :func:`cka`.

    Returns
    -------
    float
        Equal to ``cka(X, Y, debiased=debiased)`` up to float64 rounding (about 1e-12).
    """
    return _stream(_chunk_pairs(X, Y, _check_chunk_rows(chunk_rows)), bool(debiased))


def _store_chunks(store: ActivationStore, key: StoreKey, n: int, chunk_rows: int) -> Iterator[np.ndarray]:
    """Row chunks of a shard, each from a fresh memory map that is dropped after it is copied.

    Mapping anew per chunk (a stat and a header read) lets the pages already read leave the
    process's resident set, so RSS stays O(chunk) instead of growing to the shard's size.
    """
    for s in range(0, n, chunk_rows):
        mm = store.read(key, verify=False)
        chunk = np.array(mm[s:s + chunk_rows])  # a float32 copy; the map is dropped before the next one
        del mm
        yield chunk


def cka_from_store(store: ActivationStore, key_a: StoreKey, key_b: StoreKey, *, chunk_rows: int = 4096,
                   debiased: bool = False, verify: bool = True) -> float:
    """Linear CKA between two shards of an :class:`~xlprobe.store.ActivationStore`, streamed in row chunks.

    Parameters
    ----------
    store : ActivationStore
        The store holding both shards.
    key_a, key_b : StoreKey
        The two shards (same items, same order: the same ``data`` fingerprint).
    chunk_rows : int, default 4096
        Rows read per step; memory is O(d^2 + chunk_rows * d).
    debiased : bool, default False
        Use the unbiased HSIC estimator.
    verify : bool, default True
        Check each shard's checksum before reading (see :meth:`ActivationStore.read`).

    Raises
    ------
    DataError
        If the shards have different numbers of rows.
    StoreError
        If a shard is missing or corrupt.
    """
    chunk_rows = _check_chunk_rows(chunk_rows)
    shape_a, shape_b = store.read(key_a, verify=verify).shape, store.read(key_b, verify=verify).shape
    if shape_a[0] != shape_b[0]:
        raise DataError(f"shards have different numbers of rows: {shape_a} for point {key_a.point!r} and "
                        f"{shape_b} for point {key_b.point!r}",
                        hint="compare shards extracted from the same data (same key.data fingerprint)")
    if key_a.data != key_b.data:
        logger.warning("comparing shards of different data fingerprints (%s, %s): rows must be the same items",
                       key_a.data, key_b.data)
    n = shape_a[0]
    pairs = zip(_store_chunks(store, key_a, n, chunk_rows), _store_chunks(store, key_b, n, chunk_rows))
    return _stream(pairs, bool(debiased))
