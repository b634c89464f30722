"""One dataset of a probe run: probe every checkpoint on shared folds, measure every layer, keep per-item scores.

:func:`xlprobe.runs.probe_run` builds one :class:`ProbeSuite` per run and calls
:meth:`ProbeSuite.probe_dataset` for each dataset of the store. All checkpoints captured on a dataset
are probed in one :func:`~xlprobe.probes.probe_layers` call: the same folds for all of them, and a
``random-init:...`` checkpoint on the same dataset probed once per layer as their control
representation. What the paired comparisons need afterwards stays on the suite: per-item scores
keyed ``(measure, checkpoint, layer)`` (Series indexed by record id), the arrays of set measures, and
each record's parallel group, label and language.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.loading import RANDOM_INIT

__all__ = ["ProbeSuite", "is_control_rep"]

log = logging.getLogger(__name__)


def is_control_rep(checkpoint: str) -> bool:
    """Whether a checkpoint's name says it is a random-weight control representation (``random-init:...``)."""
    return checkpoint.startswith(RANDOM_INIT)


@dataclass
class ProbeSuite:
    """The options of a probe run and what its datasets leave for the comparisons."""

    store: Any
    names: dict[str, str]
    task: str
    est: Any
    k: int
    by: str | None
    n_boot: int
    seed: int
    controls: tuple[str, ...]
    n_draws: int
    measures: tuple[str, ...]
    pooling: str
    units: dict[str, str] = field(default_factory=dict)
    scores: dict[tuple[str, str, str], pd.Series] = field(default_factory=dict)
    set_reps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    ids: dict[str, pd.Index] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)
    label_of: dict[str, str] = field(default_factory=dict)
    lang_of: dict[str, str] = field(default_factory=dict)

    def reps(self, data_fp: str, pooling: str) -> dict[str, dict[str, np.ndarray]]:
        """``{checkpoint: {layer: X}}`` of the dataset's shards with this pooling."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in self.store.keys(data=data_fp, pooling=pooling):
            alias = self.store.entry(key).get("info", {}).get("alias") or key.point
            out.setdefault(self.names[key.model], {})[alias] = self.store.read(key)
        return out

    def _folds(self, data: Any, data_fp: str, y: np.ndarray) -> np.ndarray:
        """The fold unit of every record for this task (logged once per dataset, with any confined class)."""
        from xlprobe.tasks.splits import confined_classes, fold_unit, group_ids

        unit, why = fold_unit(data, self.task, self.by, y)
        self.units[data_fp] = unit
        log.info("dataset %s, task %s: folds by %s (%s)", data_fp[:12], self.task, unit, why)
        groups = group_ids(data, unit)
        confined = confined_classes(y, groups)
        if confined:
            log.warning("task %s, folds by %s: class(es) %s lie in a single %s unit, so their items are never "
                        "predicted correctly", self.task, unit, confined[:5], unit)
        return groups

    def probe_dataset(self, data_fp: str) -> pd.DataFrame:
        """Every result row of one dataset; per-item scores and set arrays kept for the comparisons."""
        from xlprobe.probes import probe_layers
        from xlprobe.probes.classifiers import probe_measure
        from xlprobe.probes.controls import first_word_types
        from xlprobe.runs import labels_for, layer_measures
        from xlprobe.tasks.splits import group_ids

        data = self.store.records(data_fp)
        y = labels_for(data, self.task)
        groups = self._folds(data, data_fp, y)
        langs, parallel = labels_for(data, "language"), group_ids(data, "group")
        ids = pd.Index([r.id for r in data])
        self.group_of.update(zip(ids, parallel))
        self.label_of.update(zip(ids, y))
        self.lang_of.update(zip(ids, langs))
        kw = dict(probe=self.est, task=self.task, k=self.k, controls=self.controls, n_boot=self.n_boot,
                  seed=self.seed, n_draws=self.n_draws,
                  types=first_word_types(data.texts) if "control-task" in self.controls else None)
        reps = self.reps(data_fp, self.pooling)
        main = {c: r for c, r in reps.items() if not is_control_rep(c)}
        ctrl = {c: r for c, r in reps.items() if is_control_rep(c)}
        rows: list[dict] = []
        if main:
            df, items = probe_layers(main, y, groups, control_reps=self._control(ctrl), return_items=True, **kw)
            rows += df.to_dict("records")
            for (c, layer), correct in items.items():
                self.scores[probe_measure(self.est), c, layer] = pd.Series(correct, index=ids)
        else:
            rows += [r for c, rep in ctrl.items() for r in probe_layers(rep, y, groups, checkpoint=c, **kw)
                     .to_dict("records")]
        for c, rep in reps.items():
            keep = not is_control_rep(c)
            rows += layer_measures(rep, y, langs, parallel, self.measures, checkpoint=c, task=self.task,
                                   seed=self.seed, n_boot=self.n_boot, items=self.scores if keep else None, ids=ids)
            if keep:
                self.set_reps.update({(c, layer): X for layer, X in rep.items()})
                self.ids[c] = ids
        frames = [self._frame(rows, self.pooling, data_fp)]
        if self.pooling != "tag":  # the language-tag baseline: one vector per language, probed only
            tag = [r for c, rep in self.reps(data_fp, "tag").items()
                   for r in probe_layers(rep, y, groups, checkpoint=c, **kw).to_dict("records")]
            if tag:
                frames.append(self._frame(tag, "tag", data_fp))
        return pd.concat(frames, ignore_index=True)

    def _control(self, ctrl: dict[str, dict[str, np.ndarray]]) -> dict[str, Any] | None:
        """The control representations probe_layers takes: the random-init checkpoint's layers, if captured."""
        if not ctrl:
            return None
        name = next(iter(ctrl))
        if len(ctrl) > 1:
            log.warning("several random-init checkpoints on one dataset (%s): %s is the control", sorted(ctrl), name)
        return {"random-init": ctrl[name]}

    def _frame(self, rows: list[dict], pooling: str, data_fp: str) -> pd.DataFrame:
        """The rows as a results frame with pooling, data and fold-unit columns."""
        from xlprobe.results import results_frame

        df = results_frame(rows)
        df["pooling"] = pooling
        df["data"] = data_fp
        unit = self.units[data_fp]
        df["folds"] = df.measure.map(lambda m: unit if m.startswith("probe.") else None)
        return df
