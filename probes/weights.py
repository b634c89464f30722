"""Which parameters diverge between two checkpoints of one architecture: tidy rows per parameter tensor.

The paper looked at an SVD of mBART-50's weights before and after MT continued training. For every
parameter tensor A (checkpoint a) and B (checkpoint b) of the same name and shape, with D = B - A:

=============================== ==========================================================================
measure                         what it says
=============================== ==========================================================================
``weights.rel_change``          ||D||_F / ||A||_F: how far training moved the tensor, relative to its size
``weights.cosine``              <A, B> / (||A|| ||B||): 1 when B is A rescaled
``weights.effective_rank.a``    exp(entropy of the normalised singular values) of A (``.b``: of B,
                                ``.delta``: of D; Roy & Vetterli 2007): how many directions carry it
``weights.stable_rank.a``       ||M||_F^2 / sigma_max^2 of A (``.b``, ``.delta``): a rank robust to the tail
``weights.subspace_overlap``    mean cos^2 of the principal angles between the top-k left singular
                                subspaces of A and B: 1 the same k directions, k / m for random ones
``weights.update_in_top_k``     ||U_k' D V_k||_F^2 / ||D||_F^2, U_k, V_k A's top-k singular vectors: the
                                share of the update inside what pretraining built (k^2 / (m n) for a
                                random update: the ``chance`` column)
=============================== ==========================================================================

Matrices get every row, vectors (biases, layer norms) the first two. Tied tensors (shared embeddings and
LM head) are one parameter, named as ``named_parameters`` names it. Each row says its ``param`` (full
name), ``side`` (encoder / decoder / shared), ``layer`` (``encoder.3``, ``decoder.embeddings``,
``lm_head``) and ``module`` (q, k, v, out, cross_q ... fc1, fc2, layer_norm, embeddings, positions,
lm_head), so that :func:`aggregate_weights` can pool them per layer or module type (energy-weighted:
sqrt(sum ||D||^2) / sqrt(sum ||A||^2)). Singular values go to a side table, :func:`weight_spectra`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import DataError
from xlprobe.probes.arrays import check_int
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame

__all__ = ["compare_weights", "aggregate_weights", "weight_spectra", "parameter_place", "relative_change",
           "WEIGHT_MEASURES"]

WEIGHT_MEASURES = ("weights.rel_change", "weights.cosine", "weights.effective_rank.a", "weights.effective_rank.b",
                   "weights.effective_rank.delta", "weights.stable_rank.a", "weights.stable_rank.b",
                   "weights.stable_rank.delta", "weights.subspace_overlap", "weights.update_in_top_k")

_LAYER = re.compile(r"(?:^|\.)(encoder|decoder)?\.?(?:layers?|block|h)\.(\d+)\.")
_MODULES = (  # (pattern in the name, module type), first match wins
    ("encoder_attn.q_proj", "cross_q"), ("encoder_attn.k_proj", "cross_k"), ("encoder_attn.v_proj", "cross_v"),
    ("encoder_attn.out_proj", "cross_out"), ("encoder_attn_layer_norm", "layer_norm"),
    ("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("out_proj", "out"),
    ("attention.self.query", "q"), ("attention.self.key", "k"), ("attention.self.value", "v"),
    ("attention.output.dense", "out"), ("intermediate.dense", "fc1"), ("output.dense", "fc2"),
    ("fc1", "fc1"), ("fc2", "fc2"), ("layer_norm", "layer_norm"), ("layernorm", "layer_norm"),
    ("LayerNorm", "layer_norm"), ("embed_positions", "positions"), ("position_embeddings", "positions"),
    ("embed_tokens", "embeddings"), ("shared", "embeddings"), ("word_embeddings", "embeddings"),
    ("lm_head", "lm_head"),
)


def parameter_place(name: str) -> tuple[str, str, str]:
    """``(side, layer, module)`` of a parameter from its name (``model.encoder.layers.3.fc1.weight``)."""
    module = next((m for pat, m in _MODULES if pat in name), "other")
    side = "encoder" if ".encoder." in f".{name}" else "decoder" if ".decoder." in f".{name}" else "shared"
    match = _LAYER.search(name)
    if match:
        return side, f"{side}.{match.group(2)}" if side != "shared" else f"layer.{match.group(2)}", module
    if module == "lm_head":
        return "shared", "lm_head", module
    if side == "shared":
        return side, "embeddings", module
    final = module == "layer_norm" and "embedding" not in name
    return side, f"{side}.final_norm" if final else f"{side}.embeddings", module


def _svd_gram(M: np.ndarray, k: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Singular values (descending) of M and its top-k left / right singular vectors, from the Gram matrix of
    its smaller side (one eigendecomposition of a min(m, n)-square matrix: cheap for a 250k x 1024
    embedding, where a full SVD is not)."""
    from scipy.linalg import eigh

    wide = M.shape[0] <= M.shape[1]
    G = M @ M.T if wide else M.T @ M
    s = np.sqrt(np.clip(np.linalg.eigvalsh(G)[::-1], 0.0, None))  # values only: the cheap LAPACK path
    if k == 0:
        return s, np.empty((M.shape[0], 0)), np.empty((M.shape[1], 0))
    m = G.shape[0]
    top = eigh(G, subset_by_index=[m - k, m - 1])[1][:, ::-1]  # only the k leading eigenvectors
    safe = np.where(s[:k] > 0, s[:k], 1.0)
    other = (M.T @ top if wide else M @ top) / safe  # the other side's singular vectors
    return (s, top, other) if wide else (s, other, top)


def _spectrum(M: np.ndarray) -> np.ndarray:
    """Singular values of a matrix, descending (float64)."""
    return _svd_gram(M)[0]


def _effective_rank(s: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values (NaN for a zero matrix)."""
    total = s.sum()
    if total <= 0:
        return float("nan")
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def _stable_rank(s: np.ndarray) -> float:
    """||M||_F^2 / sigma_max^2 (NaN for a zero matrix)."""
    return float((s ** 2).sum() / s[0] ** 2) if s.size and s[0] > 0 else float("nan")


def _matrix_rows(A: np.ndarray, B: np.ndarray, k: int) -> dict[str, float]:
    """The matrix measures of one tensor pair (k clipped to its smaller side)."""
    D = B - A
    k = min(k, *A.shape)
    (sa, Ua, Va), (sb, Ub, _), sd = _svd_gram(A, k), _svd_gram(B, k), _spectrum(D)
    overlap = float((np.linalg.svd(Ua.T @ Ub, compute_uv=False) ** 2).mean())
    energy = float((D ** 2).sum())
    inside = float(((Ua.T @ D @ Va) ** 2).sum() / energy) if energy > 0 else float("nan")
    return {"weights.effective_rank.a": _effective_rank(sa), "weights.effective_rank.b": _effective_rank(sb),
            "weights.effective_rank.delta": _effective_rank(sd), "weights.stable_rank.a": _stable_rank(sa),
            "weights.stable_rank.b": _stable_rank(sb), "weights.stable_rank.delta": _stable_rank(sd),
            "weights.subspace_overlap": overlap, "weights.update_in_top_k": inside}


def _pairs(model_a: Any, model_b: Any) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """(name, A, B) float64 for every parameter of a (tied ones once), checked against b's."""
    params_b = dict(model_b.named_parameters())
    for name, pa in model_a.named_parameters():
        if name not in params_b:
            raise DataError(f"parameter {name!r} of the first model is not in the second",
                            hint="compare checkpoints of one architecture (the same parameter names)")
        pb = params_b[name]
        if tuple(pa.shape) != tuple(pb.shape):
            raise DataError(f"parameter {name!r} has shape {tuple(pa.shape)} in the first model and "
                            f"{tuple(pb.shape)} in the second",
                            hint="a different vocabulary or width: compare checkpoints of one architecture")
        yield name, pa.detach().double().cpu().numpy(), pb.detach().double().cpu().numpy()


def compare_weights(model_a: Any, model_b: Any, *, k: int = 16, checkpoint: str = "b",
                    ref_checkpoint: str = "a") -> pd.DataFrame:
    """Tidy rows per parameter tensor: how B differs from A (see the module docstring for the measures).

    Rows carry ``checkpoint`` (b) and ``ref_checkpoint`` (a), ``param``, ``side``, ``layer``,
    ``module``, ``n`` (the tensor's size), ``norm_a`` and ``norm_delta`` (for aggregation) and, on
    ``weights.update_in_top_k``, the ``chance`` share of a random update (k^2 / (m n)).
    """
    k = check_int("k", k, 1)
    rows = []
    for name, A, B in _pairs(model_a, model_b):
        side, layer, module = parameter_place(name)
        base = dict(checkpoint=checkpoint, ref_checkpoint=ref_checkpoint, layer=layer, param=name, side=side,
                    module=module, n=int(A.size))
        na, nb, nd = (float(np.linalg.norm(M)) for M in (A, B, B - A))
        # a tensor at zero (a bias initialised to 0): no change is 0, any change is infinitely large
        values = {"weights.rel_change": nd / na if na > 0 else (0.0 if nd == 0 else float("inf")),
                  "weights.cosine": float((A * B).sum() / (na * nb)) if na > 0 and nb > 0 else float("nan")}
        if A.ndim == 2 and min(A.shape) > 1:
            values.update(_matrix_rows(A, B, k))
        for measure, value in values.items():
            extra: dict[str, Any] = {"norm_a": na, "norm_delta": nd} if measure == "weights.rel_change" else {}
            if measure == "weights.update_in_top_k":
                kk = min(k, *A.shape)
                extra["chance"] = kk * kk / (A.shape[0] * A.shape[1])
            rows.append(make_row(measure=measure, value=value, **base, **extra))
    if not rows:
        raise DataError("the models have no parameters to compare", hint="pass two torch modules")
    return results_frame(rows)


def aggregate_weights(df: pd.DataFrame, by: str | Sequence[str] = "layer") -> pd.DataFrame:
    """Relative change pooled per group: sqrt(sum ||D||^2) / sqrt(sum ||A||^2) over the group's tensors."""
    keys = [by] if isinstance(by, str) else list(by)
    rel = df[df.measure == "weights.rel_change"]
    if rel.empty:
        raise DataError("no weights.rel_change rows to aggregate", hint="pass the table of compare_weights")
    grouped = rel.groupby(["checkpoint", "ref_checkpoint", *keys], sort=False)
    out = grouped.apply(lambda g: pd.Series({
        "value": float(np.sqrt((g.norm_delta ** 2).sum()) / np.sqrt((g.norm_a ** 2).sum())),
        "n": int(g.n.sum()), "tensors": len(g)}), include_groups=False).reset_index()
    out["measure"] = "weights.rel_change"
    return out


def weight_spectra(model_a: Any, model_b: Any, params: Sequence[str] | None = None) -> pd.DataFrame:
    """Singular values of A, B and B - A for every matrix (or the named ones): the side table for figures."""
    rows = []
    for name, A, B in _pairs(model_a, model_b):
        if A.ndim != 2 or (params is not None and name not in params):
            continue
        for which, M in (("a", A), ("b", B), ("delta", B - A)):
            s = _spectrum(M)
            rows += [{"param": name, "which": which, "index": i, "sigma": float(v)} for i, v in enumerate(s)]
    return pd.DataFrame(rows, columns=["param", "which", "index", "sigma"])


@register_measure("weights.rel_change", kind="weights", direction="distance")
def relative_change(model_a: Any, model_b: Any, *, seed: int = 0) -> float:
    """Relative Frobenius change of all parameters together: ||theta_b - theta_a|| / ||theta_a||."""
    num = den = 0.0
    for _, A, B in _pairs(model_a, model_b):
        num += float(((B - A) ** 2).sum())
        den += float((A ** 2).sum())
    return float(np.sqrt(num / den)) if den > 0 else float("nan")


for _name, _doc in (
    ("weights.cosine", "Cosine between a parameter tensor of two checkpoints."),
    ("weights.effective_rank.a", "Effective rank (entropy of singular values) of the first checkpoint's matrix."),
    ("weights.effective_rank.b", "Effective rank of the second checkpoint's matrix."),
    ("weights.effective_rank.delta", "Effective rank of the update B - A."),
    ("weights.stable_rank.a", "Stable rank ||A||_F^2 / sigma_max^2 of the first checkpoint's matrix."),
    ("weights.stable_rank.b", "Stable rank of the second checkpoint's matrix."),
    ("weights.stable_rank.delta", "Stable rank of the update B - A."),
    ("weights.subspace_overlap", "Mean cos^2 of the principal angles between the top-k singular subspaces."),
    ("weights.update_in_top_k", "Share of the update's energy inside the first matrix's top-k subspace."),
):
    register_measure(_name, kind="table", direction="higher_better", doc=_doc)(compare_weights)
