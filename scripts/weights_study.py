#!/usr/bin/env python
"""Issue 12's first result on the toy family: which parameters diverge after MT training, and which matter.

    python scripts/weights_study.py [--out runs/weights-study] [--layer encoder.2] [--steps 16]

Data: the held-out books (Ruth, Jonah, John) in the family's eight languages, balanced to 48 verses per
book (Jonah has 48): a three-way book task whose majority guess is 1/3 (the genre task is 87 % John).
Every checkpoint is compared with ``toy:lm``; ``toy:lm-cont`` (as many denoising steps as ``mt``) is the
control. Steps, each written to ``OUT`` as a parquet table (a finished table is not recomputed):

1. ``weights``: compare_weights of every checkpoint against lm, pooled per (layer, module);
2. ``transfer``: zero-shot transfer of a linear probe (trained on English, tested on the seven others)
   at every encoder point of every checkpoint, with cluster-bootstrap intervals; before and after LEACE
   erases the language (``erasure``);
3. ``attribution``: the change of a differentiable transfer gap (:class:`TransferGap`, at ``--layer``)
   from lm to each checkpoint, attributed to (layer, module) groups along the weight path, with the
   completeness error;
4. ``transplant``: lm with one group taken from a checkpoint (the top attributed groups, embeddings,
   each encoder layer, all encoder, all decoder), and the reverse: how much of the gap change moves;
5. ``cka_mlm``: debiased CKA of every encoder point with the encoder-only ``mlm`` (the paper's "other
   multilingual model"), half-sampling intervals, paired differences from ``lm-cont``;
6. ``summary.json``: the numbers the closing note quotes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

MT = ("mt", "mt-o2m", "mt-m2o")
SEQ2SEQ = ("lm", "lm-cont", *MT)
DATA = "bible:en,es,fr,de,it,ru,ar,vi?books=Ruth,Jonah,John"


def cached(out: Path, name: str, make) -> pd.DataFrame:
    """The table ``out/name.parquet``, made (and written atomically) when it is not there."""
    file = out / f"{name}.parquet"
    if file.is_file():
        return pd.read_parquet(file)
    t0 = time.perf_counter()
    df = make()
    tmp = file.with_suffix(".tmp")
    df.to_parquet(tmp)
    tmp.replace(file)
    print(f"{name}: {len(df)} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    return df


def models() -> dict[str, tuple[torch.nn.Module, object]]:
    """Every shipped checkpoint, float32, eval mode."""
    from xlprobe.loading import load_model

    return {name: load_model(f"toy:{name}") for name in (*SEQ2SEQ, "mlm")}


def weights_table(family: dict) -> pd.DataFrame:
    """compare_weights of every seq2seq checkpoint against lm."""
    from xlprobe.probes.weights import compare_weights

    lm = family["lm"][0]
    return pd.concat([compare_weights(lm, family[n][0], checkpoint=n, ref_checkpoint="lm")
                      for n in SEQ2SEQ[1:]], ignore_index=True)


def representations(out: Path, family: dict, data) -> dict[str, dict[str, np.ndarray]]:
    """Mean-pooled states of every encoder point of every checkpoint (cached in ``out/reps``)."""
    from xlprobe.hooks import extract

    folder = out / "reps"
    folder.mkdir(exist_ok=True)
    reps = {}
    for name, (model, tok) in family.items():
        file = folder / f"{name}.npz"
        if not file.is_file():
            acts = {str(k): np.asarray(v) for k, v in extract(model, tok, data, "encoder.*").items()}
            np.savez(folder / f"{name}.tmp.npz", **acts)
            (folder / f"{name}.tmp.npz").replace(file)
        with np.load(file) as f:
            reps[name] = {k: f[k] for k in f.files}
    return reps


def transfer_tables(reps: dict, data) -> pd.DataFrame:
    """Zero-shot book transfer from English per encoder point, before and after LEACE erases the language."""
    from xlprobe.probes.interventions import erased_transfer
    from xlprobe.runs import labels_for
    from xlprobe.tasks.splits import group_ids

    y, langs, groups = labels_for(data, "book"), labels_for(data, "language"), group_ids(data, "group")
    parts = []
    for name, layers in reps.items():
        parts.append(erased_transfer(layers, y, langs, groups, train_lang="en", checkpoint=f"toy:{name}",
                                     task="book", n_boot=1000, seed=0))
    return pd.concat(parts, ignore_index=True)


def cka_to_mlm(reps: dict, data, n_half: int = 50, seed: int = 0) -> pd.DataFrame:
    """Debiased CKA of each seq2seq encoder point with mlm's point at the same relative depth, and with its
    last layer; the interval and the paired difference from lm-cont by half-sampling the verse groups."""
    from xlprobe.probes.cka import cka

    groups = np.asarray([str(r.group) for r in data])
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    halves = [np.isin(groups, rng.choice(uniq, size=len(uniq) // 2, replace=False)) for _ in range(n_half)]
    mlm = reps["mlm"]
    rows = []
    for layer in reps["lm"]:
        depth = layer.split(".")[-1]
        match = {"embeddings": "encoder.embeddings", "final_norm": "encoder.5"}.get(
            depth, f"encoder.{2 * int(depth) + 1}" if depth.isdigit() else None)
        for target in dict.fromkeys((match, "encoder.5")):
            values = {n: [cka(reps[n][layer][h], mlm[target][h], debiased=True) for h in halves] for n in SEQ2SEQ}
            full = {n: cka(reps[n][layer], mlm[target], debiased=True) for n in SEQ2SEQ}
            for n in SEQ2SEQ:
                diff = np.asarray(values[n]) - np.asarray(values["lm-cont"])
                rows.append({"checkpoint": n, "layer": layer, "mlm_layer": target, "value": full[n],
                             "ci_low": float(np.quantile(values[n], 0.025)),
                             "ci_high": float(np.quantile(values[n], 0.975)),
                             "minus_control": full[n] - full["lm-cont"],
                             "minus_control_low": float(np.quantile(diff, 0.025)),
                             "minus_control_high": float(np.quantile(diff, 0.975))})
    return pd.DataFrame(rows)


def attribution_table(family: dict, metric, steps: int) -> pd.DataFrame:
    """Path attribution of the transfer-gap change from lm to each checkpoint, per (layer, module)."""
    from xlprobe.probes.attribution import ParameterPathAttribution

    lm = family["lm"][0]
    parts = []
    for name in SEQ2SEQ[1:]:
        rows, delta = ParameterPathAttribution(metric).attribute(lm, family[name][0], groups="layer_module",
                                                                 n_steps=steps, checkpoint=name,
                                                                 ref_checkpoint="lm")
        print(f"  attribution lm -> {name}: change {rows.metric_b[0] - rows.metric_a[0]:+.4f}, delta {delta:.2e}",
              flush=True)
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def transplant_table(family: dict, metric, attribution: pd.DataFrame) -> pd.DataFrame:
    """lm with a group from each MT checkpoint (and the reverse): soft and hard transfer gaps at the layer."""
    from xlprobe.probes.interventions import transplant
    from xlprobe.probes.weights import parameter_place

    lm = family["lm"][0]
    rows = []
    for name in (*MT, "lm-cont"):
        other = family[name][0]
        top = attribution[attribution.checkpoint == name].sort_values("value")["group"].head(3).tolist()
        plan = {g: g for g in top}
        plan |= {"embeddings": "embeddings", "encoder.0": "encoder.0", "encoder.1": "encoder.1",
                 "encoder.2": "encoder.2",
                 "all encoder": lambda n: parameter_place(n)[0] == "encoder",
                 "all decoder": lambda n: parameter_place(n)[0] == "decoder"}
        for direction, (a, b) in ((f"{name} into lm", (lm, other)), (f"lm into {name}", (other, lm))):
            for label, group in plan.items():
                model, moved = transplant(a, b, group)
                with torch.no_grad():
                    soft = float(metric(model))
                rows.append({"checkpoint": name, "direction": direction, "group": label,
                             "tensors": len(moved), "soft_gap": soft, "accuracy_gap": metric.accuracy_gap(model)})
    return pd.DataFrame(rows)


def summary(out: Path, weights: pd.DataFrame, transfer: pd.DataFrame, erasure: pd.DataFrame,
            attribution: pd.DataFrame, transplants: pd.DataFrame, ends: dict, layer: str) -> dict:
    """The closing note's numbers, from the tables."""
    from xlprobe.cli_weights import top_changes

    gap = transfer[(transfer.measure == "transfer.gap")]
    mean_gap = gap.groupby(["checkpoint", "layer"]).value.mean().unstack().round(3).to_dict(orient="index")
    acc = transfer[(transfer.measure == "transfer.accuracy") & transfer.control.isna() & (transfer.lang != "en")]
    mean_acc = acc.groupby(["checkpoint", "layer"]).value.mean().unstack().round(3).to_dict(orient="index")
    er = erasure[erasure.measure == "transfer.gap"].groupby(["checkpoint", "layer", "intervention"]
                                                            ).value.mean().unstack().round(3)
    beyond = {n: top_changes(weights, n, "lm-cont", n=5).round(4).to_dict(orient="records") for n in MT}
    attr = {}
    for name in SEQ2SEQ[1:]:
        a = attribution[attribution.checkpoint == name]
        attr[name] = {"change": round(float(a.metric_b.iloc[0] - a.metric_a.iloc[0]), 4),
                      "delta": float(a.delta.iloc[0]),
                      "top": a.sort_values("value").head(5)[["group", "value", "share"]].round(4).to_dict("records")}
    result = {"layer": layer, "soft_gap_ends": ends, "mean_transfer_gap": mean_gap,
              "mean_zero_shot_accuracy": mean_acc, "erasure_gap": {f"{c}|{la}": r for (c, la), r in
                                                                   er.to_dict(orient="index").items()},
              "weights_beyond_control": beyond, "attribution": attr,
              "transplant": transplants.round(4).to_dict(orient="records")}
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def main() -> None:
    """Run every step (resuming from the tables already written) and print the summary's headline."""
    from xlprobe.path_metrics import TransferGap
    from xlprobe.tasks.sampling import balanced_groups
    from xlprobe.tasks.spec import load_data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/weights-study")
    ap.add_argument("--layer", default="encoder.2")
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    data = balanced_groups(load_data(DATA), "book", seed=0)
    print(f"data: {len(data)} records, {len({r.group for r in data})} verses x 8 languages", flush=True)
    family = models()
    weights = cached(out, "weights", lambda: weights_table(family))
    reps = representations(out, family, data)
    erasure = cached(out, "erasure", lambda: transfer_tables(reps, data))
    transfer = erasure[erasure.intervention == "none"]
    similarity = cached(out, "cka_mlm", lambda: cka_to_mlm(reps, data))
    metric = TransferGap(family["lm"][1], data, layer=args.layer, task="book")
    with torch.no_grad():
        ends = {n: {"soft": round(float(metric(family[n][0])), 4),
                    "accuracy": round(metric.accuracy_gap(family[n][0]), 4)} for n in SEQ2SEQ}
    attribution = cached(out, "attribution", lambda: attribution_table(family, metric, args.steps))
    transplants = cached(out, "transplant", lambda: transplant_table(family, metric, attribution))
    result = summary(out, weights, transfer, erasure, attribution, transplants, ends, args.layer)
    result["cka_to_mlm"] = similarity.round(4).to_dict(orient="records")
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: result[k] for k in ("soft_gap_ends", "mean_transfer_gap")}, indent=1))


if __name__ == "__main__":
    main()
