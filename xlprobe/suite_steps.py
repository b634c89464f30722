"""The steps of a suite run that load models or read the store: capture, weights, transfer, attribution.

Each returns the step's rows (tidy results); :func:`xlprobe.suite_run.run_suite` decides when a step
runs (once: a finished step's folder holds its ``done.json``) and joins the rows.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from xlprobe.errors import ConfigError
from xlprobe.suite import Suite
from xlprobe.suite_plan import data_spec

__all__ = ["suite_device", "capture_checkpoints", "weights_step", "spectra_params", "transfer_step",
           "attribution_step", "gap_per_group", "store_reps"]

log = logging.getLogger(__name__)

def suite_device(suite: Suite) -> str:
    """The torch device the suite's ``device:`` names on this machine (``auto`` resolved; ConfigError if absent).

    Under torchrun a bare ``cuda`` is this process's GPU (``cuda:$LOCAL_RANK``).
    """
    from xlprobe.devices import rank_device, resolve_device

    return rank_device(resolve_device(suite.device))


def capture_checkpoints(suite: Suite, out: Path, ds: Any, prog: Any = None) -> dict[str, float]:
    """Capture every checkpoint into ``out/store`` (the store skips shards already written)."""
    from xlprobe.hooks import extract
    from xlprobe.loading import load_model
    from xlprobe.store import ActivationStore

    store = ActivationStore.open(out / "store")
    device = suite_device(suite)
    seconds = {}
    for c in suite.checkpoints:
        if prog:
            prog.start(f"capture {c.label}")
        t0 = time.perf_counter()
        model, tok = load_model(c.model, device=device)
        extract(model, tok, ds, suite.layers, pooling=suite.pooling, store=store,
                provenance={"model_spec": c.label, "data_spec": data_spec(suite), "seed": suite.seeds[0],
                            "suite": suite.name})
        seconds[c.label] = round(time.perf_counter() - t0, 2)
        if prog:
            prog.finish(f"capture {c.label}", seconds[c.label])
    return seconds


def weights_step(suite: Suite, names: list[str], folder: Path | None = None, *, spectra: bool = False
                 ) -> pd.DataFrame:
    """compare_weights of every checkpoint of the base's architecture against the base.

    With ``spectra`` (the suite draws ``weight_spectra``), the singular values of up to three matrices
    (:func:`spectra_params`) are written to ``folder/spectra.parquet`` while both models are loaded, so the
    figure reads a table instead of loading every checkpoint again.
    """
    from xlprobe.durable import atomic_write
    from xlprobe.loading import load_model
    from xlprobe.probes.weights import compare_weights, weight_spectra

    base = suite.role("base") or suite.checkpoints[0]
    a, _ = load_model(base.model)
    frames, side, params = [], [], None
    for c in suite.checkpoints:
        if c is base or c.model.startswith("random-init"):
            continue
        b, _ = load_model(c.model)
        if type(b) is not type(a):
            log.info("weights: %s is another architecture than %s, left out", c.label, base.label)
            continue
        frames.append(compare_weights(a, b, checkpoint=c.label, ref_checkpoint=base.label))
        if spectra:
            params = spectra_params(frames[-1]) if params is None else params
            side.append(weight_spectra(a, b, params).assign(checkpoint=c.label, ref_checkpoint=base.label))
    if spectra and folder is not None and side:
        table = pd.concat(side, ignore_index=True)
        rank = {name: i for i, name in enumerate(params or [])}  # rows in the order the figure draws them
        table = table.sort_values("param", key=lambda col: col.map(rank), kind="stable", ignore_index=True)
        atomic_write(folder / "spectra.parquet", lambda path: table.to_parquet(path))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return df[df.measure.isin(names)] if not df.empty else df


def spectra_params(weights: pd.DataFrame) -> list[str]:
    """Up to three matrices whose spectra a suite draws: the middle encoder block's fc1 and q, a decoder's cross_v."""
    rows = weights[weights.measure == "weights.rel_change"] if "measure" in weights else weights
    params: list[str] = []
    for side, modules, k in (("encoder", ("fc1", "q"), 2), ("decoder", ("cross_v", "fc1"), 1)):
        mine = rows[(rows.side == side) & rows.param.str.endswith(".weight")]
        blocks = sorted({la for la in mine.layer if la.rsplit(".", 1)[-1].isdigit()},
                        key=lambda la: int(la.rsplit(".", 1)[-1]))
        if blocks:
            middle = mine[mine.layer == blocks[len(blocks) // 2]]
            found = [middle[middle.module == m].param.iloc[0] for m in modules if (middle.module == m).any()]
            params += found[:k]
    return list(dict.fromkeys(params))[:3]


def store_reps(store: Any, names: dict[str, str], data_fp: str, pooling: str) -> dict[str, dict[str, Any]]:
    """``{checkpoint: {layer: X}}`` of one dataset's shards with this pooling (as the probe step reads them)."""
    out: dict[str, dict[str, Any]] = {}
    for key in store.keys(data=data_fp, pooling=pooling):
        alias = store.entry(key).get("info", {}).get("alias") or key.point
        out.setdefault(names[key.model], {})[alias] = store.read(key)
    return out


def gap_per_group(correct: Any, langs: Any, groups: Any, train_lang: str) -> pd.Series:
    """Per parallel group: correct(train_lang) - mean correct of the other languages (groups tested in all).

    Averaged over groups this is the mean gap over languages of the transfer.gap rows when every tested
    group has every language (parallel data); groups missing a language are left out, not reweighted.
    """
    import numpy as np

    df = pd.DataFrame({"c": correct, "lang": langs, "g": groups}).dropna(subset=["c"])
    wide = df.pivot_table(index="g", columns="lang", values="c", aggfunc="mean").dropna()
    others = [c for c in wide.columns if c != train_lang]
    if train_lang not in wide.columns or not others:
        return pd.Series(dtype=np.float64)
    return wide[train_lang] - wide[others].mean(axis=1)


def transfer_step(suite: Suite, out: Path, params: dict[str, Any], folder: Path) -> pd.DataFrame:
    """transfer_probe on every checkpoint's stored states; paired contrasts of the mean gap over languages."""
    from xlprobe.comparisons import compare_items, contrasts, resolve_checkpoint
    from xlprobe.probe_suite import is_control_rep
    from xlprobe.probes.transfer import transfer_probe
    from xlprobe.results import results_frame, write_results
    from xlprobe.runs import checkpoint_names, labels_for, open_store
    from xlprobe.tasks.splits import group_ids

    store = open_store(out / "store")
    names = checkpoint_names(store)
    keys = store.keys(pooling=suite.pooling)
    task, train_lang = params["task"], params["train_lang"]
    frames, rows = [], []
    base, control = suite.role("base"), suite.role("control")
    for data_fp in dict.fromkeys(k.data for k in keys):
        data = store.records(data_fp)
        y, langs = labels_for(data, task), labels_for(data, "language")
        groups = group_ids(data, "group")
        reps = store_reps(store, names, data_fp, suite.pooling)
        scores: dict = {}
        df = transfer_probe(reps, y, langs, groups, n_boot=suite.n_boot, seed=suite.seeds[0], scores=scores,
                            **params)
        df["pooling"], df["data"] = suite.pooling, data_fp
        frames.append(df)
        per_group = {("transfer.gap", c, layer): gap_per_group(v, langs, groups, train_lang)
                     for (c, layer), v in scores.items() if not is_control_rep(c)}
        per_group = {k: v for k, v in per_group.items() if len(v)}  # one language only: no gap to contrast
        checkpoints = list(dict.fromkeys(c for _, c, _ in per_group))
        if len(checkpoints) < 2:
            continue
        triples = contrasts(checkpoints, resolve_checkpoint(base.label if base else None, checkpoints, "base"),
                            resolve_checkpoint(control.label if control else None, checkpoints, "control"))
        ids = next(iter(per_group.values())).index
        rows += compare_items(per_group, pd.Series(ids, index=ids), triples, n_boot=suite.n_boot or 1000,
                              seed=suite.seeds[0], task=task)
    results = pd.concat(frames, ignore_index=True)
    if rows:
        comparisons = results_frame(rows)
        comparisons["train_lang"] = train_lang
        comparisons["statistic"] = "mean gap over languages"  # value: the difference of the two mean gaps
        write_results(comparisons, folder, name="comparisons")
    return results


def _read_point(model: Any, layers: Any, asked: str | None) -> str:
    """The attribution's read point: the one asked for, else the last encoder block among the suite's layers."""
    from xlprobe.hooks.points import resolve_points

    if asked:
        return resolve_points(model, asked)[0].alias
    points = resolve_points(model, layers)
    blocks = [p for p in points if p.side == "encoder" and p.where == "block_out"]
    if not blocks:
        raise ConfigError(f"the suite's layers {layers!r} hold no encoder block to read the transfer gap at",
                          hint="give attribution.path: {layer: encoder.N}")
    return max(blocks, key=lambda p: p.index).alias


def attribution_step(suite: Suite, ds: Any, params: dict[str, Any], report: Any = None) -> pd.DataFrame:
    """Path attribution of the TransferGap change from the base to every other checkpoint, on the suite's device."""
    import torch

    from xlprobe.loading import load_model, random_init_spec
    from xlprobe.path_metrics import TransferGap
    from xlprobe.probes.attribution import ParameterPathAttribution
    from xlprobe.tasks.sampling import balanced_groups

    base = suite.role("base") or suite.checkpoints[0]
    device = suite_device(suite)  # both models, the path and the metric's inputs live there
    a, tok = load_model(base.model, device=device)
    layer = _read_point(a, suite.layers, params.get("layer"))
    task, train_lang = params["task"], params["train_lang"]
    if params.get("languages"):  # the metric reads these languages only: more verses each for the same cost
        keep = set(map(str, params["languages"]))
        ds = ds.subset([i for i, r in enumerate(ds) if r.lang in keep], name=f"{ds.name}|langs={','.join(sorted(keep))}")
    data = balanced_groups(ds, task, seed=suite.seeds[0])
    n_classes = len({str(r.labels[task]) for r in data})
    per_class = len({r.group for r in data}) // n_classes
    per_lang = max(1, len({r.lang for r in data}))
    cap = max(2, params["max_items"] // (n_classes * per_lang))
    if cap < per_class:
        data = balanced_groups(ds, task, per_class=cap, seed=suite.seeds[0])
    metric = TransferGap(tok, data, layer=layer, task=task, train_lang=train_lang, ridge=params["ridge"],
                         tau=params["tau"], seed=suite.seeds[0])
    frames = []
    others = [c for c in suite.checkpoints if c is not base and not random_init_spec(c.model)]
    for i, c in enumerate(others):
        if report:
            report(f"attribution {base.label} -> {c.label}", i, len(others))
        b, _ = load_model(c.model, device=device)
        if type(b) is not type(a) or {n: p.shape for n, p in a.named_parameters()} != {
                n: p.shape for n, p in b.named_parameters()}:
            log.info("attribution: %s is another architecture than %s, left out", c.label, base.label)
            continue
        torch.manual_seed(suite.seeds[0])
        rows, delta = ParameterPathAttribution(metric).attribute(
            a, b, groups=params["groups"], n_steps=params["n_steps"], return_convergence_delta=True,
            checkpoint=c.label, ref_checkpoint=base.label)
        log.info("attribution %s -> %s: change %+.4f, completeness error %.2e", base.label, c.label,
                 rows.metric_b.iloc[0] - rows.metric_a.iloc[0], delta)
        rows["task"], rows["train_lang"], rows["read_point"] = task, train_lang, layer
        rows["n_items"], rows["seed"] = len(data), suite.seeds[0]
        frames.append(rows)
    if not frames:
        log.warning("attribution.path: no checkpoint shares the architecture of the base %s", base.label)
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


