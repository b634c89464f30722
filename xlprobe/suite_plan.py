"""What a validated suite will compute: its measures sorted into the steps of :func:`xlprobe.suite_run.run_suite`.

Probes (``probe.linear`` / ``probe.mlp`` and their derived names) by task, with the other per-layer
measures (``labelled`` and ``unlabelled`` kinds); ``cka.*`` in the similarity step (and, when the suite
has checkpoints of role ``reference``, their paired contrasts anchored at each reference's top layer);
``weights.*``; one transfer step per task and training language; ``attribution.path``; and the table
measures no suite runs yet, listed as pending, never silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xlprobe.errors import ConfigError
from xlprobe.suite import Suite

__all__ = ["SuitePlan", "plan_suite", "data_spec", "suite_data", "ATTRIBUTION_DEFAULTS"]

_PROBES = {"probe.linear": "linear", "probe.mlp": "mlp"}
_TRANSFER = ("transfer.gap", "transfer.accuracy")
#: ``attribution.path`` parameters a suite leaves out. ``max_items`` keeps the step under a minute on the
#: toy family on 2 CPU cores (4 pairs x 16 nodes: at 240 records 9.4 s a pair alone, 91 s for the step
#: while other jobs shared the cores; 144 records, 6 verses per book and language, take 0.6 of that).
ATTRIBUTION_DEFAULTS: dict[str, Any] = {"n_steps": 16, "max_items": 144, "train_lang": "en", "layer": None,
                                        "groups": "layer_module", "ridge": 10.0, "tau": 0.1, "languages": None}


@dataclass
class SuitePlan:
    """What a suite will compute: probe runs per (task, probe), per-layer measures, CKA, weights, what waits."""

    data: str
    limit: int | None
    balance: str | None = None
    probes: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (task, probe) -> extra measures
    cka: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    transfer: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> transfer_probe keywords
    attribution: dict[str, Any] | None = None  # attribution.path parameters, defaults filled in
    references: list[str] = field(default_factory=list)  # role reference: CKA contrasts anchored at each
    against: str | None = None  # ... minus the same with the control (else the base)
    pending: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def steps(self) -> list[str]:
        """The step folders (``steps/<name>``) in the order they run."""
        out = [f"probe-{t}-{p}" for t, p in self.probes]
        out += ["similarity"] if self.cka else []
        out += ["similarity-references"] if self.references else []
        out += ["weights"] if self.weights else []
        out += list(self.transfer)
        out += ["attribution"] if self.attribution else []
        return out

    def lines(self) -> list[str]:
        """The plan, one step per line (``xlprobe run --dry-run`` prints it)."""
        out = [f"data: {self.data}" + (f" (limit {self.limit} verses)" if self.limit else "")
               + (f", balanced by {self.balance}" if self.balance else "")]
        out += [f"probe {p} on {t}" + (f" with {', '.join(m)}" if m else "") for (t, p), m in self.probes.items()]
        out += [f"similarity: {', '.join(self.cka)}"] if self.cka else []
        out += [f"CKA to each reference's top layer ({', '.join(self.references)}), each checkpoint minus "
                f"{self.against}"] if self.references else []
        out += [f"weights against the base: {', '.join(self.weights)}"] if self.weights else []
        out += [f"transfer of {kw['task']} from {kw.get('train_lang', 'en')}: transfer.accuracy, transfer.gap "
                f"(paired contrasts of the mean gap)" for kw in self.transfer.values()]
        if self.attribution:
            a = self.attribution
            out.append(f"attribution.path of the {a['task']} transfer gap from {a['train_lang']} at "
                       f"{a['layer'] or 'the last encoder block'}: base -> each checkpoint of its architecture, "
                       f"{a['n_steps']} steps, at most {a['max_items']} records"
                       + (f" in {', '.join(map(str, a['languages']))}" if a.get("languages") else ""))
        out += [f"not run by a suite yet: {', '.join(self.pending)}"] if self.pending else []
        out += [f"figures: {', '.join(self.figures)}"] if self.figures else []
        return out


def data_spec(suite: Suite) -> str:
    """The data spec string of the suite's data (``bible:en,fr?books=Ruth,Jonah``)."""
    d = suite.data
    spec = f"{d.corpus}:{','.join(d.languages)}"
    return spec + (f"?books={','.join(d.books)}" if d.books else "")


def suite_data(suite: Suite) -> Any:
    """The suite's records: ``size`` parallel groups, sampled in proportion or, with ``balance``, class by class."""
    from xlprobe.tasks import load_data
    from xlprobe.tasks.sampling import balanced_groups

    d, seed = suite.data, suite.seeds[0]
    if not d.balance:
        return load_data(data_spec(suite), limit=d.size, seed=seed)
    ds = load_data(data_spec(suite), seed=seed)
    counts: dict[str, set[str]] = {}
    for r in ds:
        counts.setdefault(str(r.labels.get(d.balance)), set()).add(str(r.group))
    rarest = min(len(g) for g in counts.values())
    per_class = min(rarest, d.size // len(counts)) if d.size else rarest
    return balanced_groups(ds, d.balance, per_class=max(per_class, 1), seed=seed)


def plan_suite(suite: Suite) -> SuitePlan:
    """Sort the suite's measures into the steps that compute them."""
    from xlprobe.registry import get_measure

    plan = SuitePlan(data=data_spec(suite), limit=suite.data.size, balance=suite.data.balance,
                     figures=list(suite.figures))
    extra: list[tuple[str, str]] = []
    for call in suite.measures:
        base = next((p for p in _PROBES if call.name == p or call.name.startswith(p + ".")), None)
        spec = get_measure(call.name)
        if base is not None:
            plan.probes.setdefault((call.params.get("task", "language"), _PROBES[base]), [])
        elif call.name.startswith("cka"):
            plan.cka.append(call.name)
        elif spec.kind == "weights" or call.name.startswith("weights."):  # compare_weights's table rows too
            plan.weights.append(call.name)
        elif spec.kind in ("labelled", "unlabelled"):
            extra.append((call.params.get("task", "language"), call.name))
        elif call.name in _TRANSFER:
            _plan_transfer(plan, dict(call.params))
        elif call.name == "attribution.path":
            plan.attribution = {**ATTRIBUTION_DEFAULTS, **call.params}
        else:
            plan.pending.append(call.name)
    if plan.attribution is not None and "task" not in plan.attribution:
        tasks = [kw["task"] for kw in plan.transfer.values()]
        if not tasks:
            raise ConfigError("attribution.path needs a task (the label of its transfer gap)",
                              hint="give `attribution.path: {task: book}` or a transfer.gap with a task")
        plan.attribution["task"] = tasks[0]
    against = suite.role("control") or suite.role("base")
    if plan.cka and suite.labels("reference") and against is not None:
        plan.references, plan.against = suite.labels("reference"), against.label
    if not plan.probes:
        plan.probes[("language", "linear")] = []
    for task, name in extra:
        key = next((k for k in plan.probes if k[0] == task), None) or (task, "linear")
        plan.probes.setdefault(key, []).append(name)
    return plan


def _plan_transfer(plan: SuitePlan, params: dict[str, Any]) -> None:
    """One transfer step per distinct call (transfer.gap and transfer.accuracy with the same keywords share it)."""
    if "task" not in params:
        raise ConfigError("transfer.gap needs task: the record label the probe transfers",
                          hint="e.g. `- transfer.gap: {task: book, train_lang: en}`")
    params.setdefault("train_lang", "en")
    if params in plan.transfer.values():
        return
    name = f"transfer-{params['task']}-{params['train_lang']}"
    extra = [str(params[k]) for k in ("probe", "center") if params.get(k) not in (None, "linear", "none")]
    name = "-".join([name, *extra])
    while name in plan.transfer:
        name += "+"
    plan.transfer[name] = params


