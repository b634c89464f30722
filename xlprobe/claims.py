"""Does this run agree with the paper? Its three claims, each tested on the run's own rows.

Ji, Mickus, Segonne & Tiedemann (2024) found that MT continued training (1) does not help, and lowers,
zero-shot cross-lingual transfer; (2) leaves the models less similar to other multilingual models
(CKA); (3) raises *output separability*, useful for translation and harmful elsewhere. Each claim is
read from paired contrasts of the MT checkpoints against the control (the base continued on its own
objective for as long; the base itself when a suite has no control, as in the paper), at the top layer
the MT checkpoints and the control share:

======================= =========================================== ==========================================
claim                   rows read (comparisons table)               agrees when, for the MT checkpoints
======================= =========================================== ==========================================
lower transfer          ``transfer.gap`` (mean over languages)      gap(MT) - gap(control) > 0, significant
less similar            ``cka.*``, contrast ``CKA(ref, X) - ...``   CKA(ref, MT) - CKA(ref, control) < 0
more output separable   ``retrieval.p_at_1``                        P@1(MT) - P@1(control) > 0
======================= =========================================== ==========================================

"Output separability" is the paper's hypothesis, not a measure it defines; here it is read as how
well the encoder tells each sentence apart from the others, across languages: translation retrieval
(a sentence's nearest neighbour in another language is its translation). Language separability (kNN)
is shown beside it as evidence, not used for the verdict. The verdict is ``agrees`` / ``disagrees``
when most MT checkpoints' contrasts are significant (corrected p < 0.05) in one direction and none in
the other, ``mixed`` when they split, ``inconclusive`` otherwise, and ``not measured`` when the rows
are missing.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from xlprobe.findings import ALPHA, Finding, fmt_interval

__all__ = ["paper_claims", "claim_verdict", "CLAIMS"]

#: (key, the paper's claim, measure prefix, contrast prefix, sign that agrees).
CLAIMS = (
    ("transfer", "MT continued training lowers zero-shot cross-lingual transfer", "transfer.gap", "vs control", +1),
    ("similarity", "MT models are less similar to other multilingual models (CKA)", "cka", "CKA(", -1),
    ("separability", "MT continued training raises output separability", "retrieval.p_at_1", "vs control", +1),
)


def _depth(layer: str) -> tuple[int, int, int]:
    """Sort key: embeddings, blocks in order, final norm; the decoder after the encoder."""
    side = 1 if layer.startswith("decoder") else 0
    tail = layer.rsplit(".", 1)[-1]
    return (side, 1, int(tail)) if tail.isdigit() else (side, 0 if "embed" in tail else 2, 0)


def _top_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Each checkpoint's row at the deepest encoder block every checkpoint of ``rows`` has."""
    if rows.empty:
        return rows
    shared = set.intersection(*(set(g.layer) for _, g in rows.groupby("checkpoint")))
    blocks = [la for la in shared if la.rsplit(".", 1)[-1].isdigit() and not la.startswith("decoder")]
    if not blocks:
        return rows.iloc[:0]
    top = max(blocks, key=_depth)
    return rows[rows.layer == top]


def claim_verdict(rows: pd.DataFrame, sign: int) -> str:
    """agrees / disagrees / mixed / inconclusive from one contrast row per MT checkpoint.

    agrees: most MT checkpoints' contrasts significant in the paper's direction and none against;
    disagrees: most significant against it and none for it; mixed: significant both ways.
    """
    if rows.empty:
        return "not measured"
    sig = rows.p_adjusted < ALPHA
    ups, downs = int((sig & (rows.value * sign > 0)).sum()), int((sig & (rows.value * sign < 0)).sum())
    if ups and downs:
        return "mixed"
    if ups > len(rows) / 2:
        return "agrees"
    if downs > len(rows) / 2:
        return "disagrees"
    return "inconclusive"


def _contrast_rows(comparisons: pd.DataFrame, measure: str, contrast: str, mt: Sequence[str], control: str | None,
                   ref: str | None = None) -> pd.DataFrame:
    """The MT checkpoints' contrast rows of one measure against the control (pooled centring, no per-language rows)."""
    if comparisons.empty or control is None:
        return comparisons.iloc[:0]
    c = comparisons
    rows = c[c.measure.str.startswith(measure) & c.contrast.fillna("").str.startswith(contrast)
             & c.checkpoint.isin(mt) & (c.ref_checkpoint == control)]
    if ref is not None:
        rows = rows[rows.contrast.str.startswith(f"CKA({ref},")]
    if "centring" in rows:
        rows = rows[rows.centring.isna() | (rows.centring == "pooled")]
    if "lang" in rows:
        rows = rows[rows.lang.isna()]
    return rows[rows.value.notna()]


def _evidence(rows: pd.DataFrame, what: str) -> list[str]:
    """One line per MT checkpoint: its difference, interval and corrected p at the layer read."""
    out = []
    for _, r in rows.iterrows():
        p = r.get("p_adjusted")
        out.append(f"{what}: {r.checkpoint} - {r.ref_checkpoint} at {r.layer} = {fmt_interval(r, signed=True)}, "
                   + ("p < 0.0001" if p < 1e-4 else f"p = {p:.2g}") + f" ({r.get('correction', '')})")
    return out


def paper_claims(comparisons: pd.DataFrame, *, mt: Sequence[str], control: str | None,
                 references: Sequence[str] = (), base: str | None = None) -> list[Finding]:
    """The three claims, each with its verdict and the rows behind it (``not measured`` says what is missing).

    Against the control when the suite has one (the base continued on its own objective: what MT
    training adds beyond training longer), else against the base (the paper's own comparison: mBART-50
    has no such control).
    """
    out = []
    against = "vs control" if control else "vs base"
    control = control or base
    for key, claim, measure, contrast, sign in CLAIMS:
        contrast = against if contrast == "vs control" else contrast
        refs = list(references) if key == "similarity" else [None]
        rows = pd.concat([_top_rows(_contrast_rows(comparisons, measure, contrast, mt, control, ref))
                          for ref in refs] or [comparisons.iloc[:0]]) if mt else comparisons.iloc[:0]
        verdict = claim_verdict(rows, sign) if len(refs) else "not measured"
        need = _missing(key, mt, control, references)
        evidence = _evidence(rows, measure) if len(rows) else [need]
        if key == "separability":
            evidence += _evidence(_top_rows(_contrast_rows(comparisons, "separability.knn", against, mt,
                                                           control)), "language separability (kNN, not the verdict)")
        if against == "vs control" and base and key != "similarity":  # the paper's own contrast, beside
            evidence += _evidence(_top_rows(_contrast_rows(comparisons, measure, "vs base", mt, base)),
                                  f"{measure} against the base, as the paper compared (not the verdict)")
        text = f"{claim}: {_say(verdict, rows, sign)}"
        out.append(Finding(topic=key, text=text, evidence=tuple(evidence), verdict=verdict))
    return out


def _say(verdict: str, rows: pd.DataFrame, sign: int) -> str:
    """The verdict in words, with how many MT contrasts point each way."""
    if verdict == "not measured":
        return "not measured in this run"
    sig = rows.p_adjusted < ALPHA
    ups, downs = int((sig & (rows.value * sign > 0)).sum()), int((sig & (rows.value * sign < 0)).sum())
    head = {"agrees": "this run agrees", "disagrees": "this run disagrees", "mixed": "this run is split",
            "inconclusive": "this run cannot tell"}[verdict]
    return (f"{head} ({ups} of {len(rows)} MT contrasts significant in the paper's direction, {downs} against, "
            f"at the top shared layer, corrected p < {ALPHA})")


def _missing(key: str, mt: Sequence[str], control: str | None, references: Sequence[str]) -> str:
    """Why a claim was not measured: the role or the measure the suite lacks."""
    if not mt:
        return "no checkpoint has role mt in the suite"
    if control is None:
        return "the suite has no base or control checkpoint to contrast the MT checkpoints with"
    if key == "similarity" and not references:
        return "no checkpoint has role reference (another multilingual model, e.g. XLM-R)"
    return {"transfer": "the suite did not compute transfer.gap", "similarity": "the suite did not compute cka.*",
            "separability": "the suite did not compute retrieval.p_at_1"}[key]
