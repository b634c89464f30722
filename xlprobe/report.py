"""The report of a suite run: one self-contained HTML file (figures embedded) and its Markdown twin.

``write_report(run_dir)`` reads only what the run wrote (``results.parquet``, ``comparisons.parquet``,
``figures/``, ``provenance.json``), so it can be rebuilt on any finished run, and writes
``report.html`` and ``report.md`` atomically. Its parts, in order: the paper's claims with this run's
verdict and evidence (:mod:`xlprobe.claims`); the suite (checkpoints and roles, data, layers); each
figure with the findings generated from the numbers it shows (:mod:`xlprobe.findings`); each measure's
finding with its controls beside it; provenance (versions, data fingerprint, seeds, step times).
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xlprobe.claims import paper_claims
from xlprobe.durable import atomic_write
from xlprobe.errors import DataError
from xlprobe.findings import (
    Finding,
    attribution_finding,
    cka_finding,
    contrast_finding,
    controls_table,
    weights_finding,
)

__all__ = ["RunTables", "Section", "load_run", "report_sections", "render_html", "render_markdown", "write_report"]

#: What each figure kind shows, in a sentence (the caption's first part; the findings follow it).
CAPTIONS = {
    "umap": "UMAP of the pooled states, a panel per layer and checkpoint, coloured by language; "
            "AlignedUMAP keeps panels of one layer comparable.",
    "layer_curves": "Per-layer measures with 95 % intervals; the control dashed, random weights dotted.",
    "paired_differences": "Paired differences between checkpoints per layer, filled where the corrected "
                          "p-value is below 0.05.",
    "cka_heatmap": "Layer x layer CKA between the base and every other checkpoint.",
    "weight_bars": "Relative weight change against the base, per layer.",
    "weight_spectra": "Singular value spectra of weight matrices.",
    "attribution_bars": "Which parameter groups carry the change of the metric between checkpoints "
                        "(path integrated gradients), with the completeness error.",
}


@dataclass
class RunTables:
    """What a finished run wrote: its tables, provenance, figures and checkpoint roles."""

    folder: Path
    results: pd.DataFrame
    comparisons: pd.DataFrame
    provenance: dict[str, Any]
    figures: dict[str, Path]
    roles: dict[str, list[str]] = field(default_factory=dict)

    def role(self, name: str) -> str | None:
        """The one checkpoint with role ``name`` (base, control), if any."""
        return (self.roles.get(name) or [None])[0]


@dataclass
class Section:
    """A part of the report: a heading, an optional figure, findings and tables (already formatted)."""

    title: str
    findings: list[Finding]
    figure: Path | None = None
    caption: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)


def load_run(run_dir: str | Path) -> RunTables:
    """Read a run folder; a clear error naming what is missing and how to make it."""
    folder = Path(run_dir)
    need = [folder / "results.parquet", folder / "provenance.json"]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise DataError(f"{folder}: no {' or '.join(missing)}: not a finished suite run",
                        hint=f"run `xlprobe run SUITE.yaml --out {folder}` (it resumes) before the report")
    provenance = json.loads((folder / "provenance.json").read_text())
    comp = folder / "comparisons.parquet"
    roles: dict[str, list[str]] = {}
    for c in provenance.get("suite", {}).get("checkpoints", []):
        if c.get("role"):
            roles.setdefault(c["role"], []).append(c.get("name") or c["model"])
    figures = {p.stem: p for p in sorted((folder / "figures").glob("*.png"))} if (folder / "figures").is_dir() else {}
    return RunTables(folder=folder, results=pd.read_parquet(need[0]), provenance=provenance, figures=figures,
                     comparisons=pd.read_parquet(comp) if comp.is_file() else pd.DataFrame(), roles=roles)


def _top_layer(results: pd.DataFrame, measure: str) -> str | None:
    """The deepest encoder block most checkpoints have rows of ``measure`` at (the base's top, not a deeper model's)."""
    rows = results[results.measure == measure]
    rows = rows[rows.layer.str.rsplit(".", n=1).str[-1].str.isdigit() & ~rows.layer.str.startswith("decoder")]
    if rows.empty:
        return None
    count = rows.groupby("layer").checkpoint.nunique()
    best = count[count == count.max()].index
    return max(best, key=lambda la: int(la.rsplit(".", 1)[-1]))


def _measure_sections(run: RunTables) -> list[Section]:
    """A section per measure with comparisons: its finding, and its controls at the layer the finding names."""
    out = []
    main = run.results[run.results.control.isna()] if "control" in run.results else run.results
    for measure in dict.fromkeys(main.measure):
        if measure.startswith(("cka", "weights.", "attribution.")):
            continue
        found = contrast_finding(run.comparisons, measure) if len(run.comparisons) else None
        layer = _finding_layer(found, run.comparisons, measure) or _top_layer(run.results, measure)
        tables = []
        if layer is not None:
            table = controls_table(run.results, measure, layer)
            if table.shape[1] > 1 or found is None:
                tables.append((f"{measure} at {layer}, beside its controls", table))
        if found is not None or tables:
            out.append(Section(title=measure, findings=[found] if found else [], tables=tables))
    return out


def _finding_layer(found: Finding | None, comparisons: pd.DataFrame, measure: str) -> str | None:
    """The layer a contrast finding names (where the measure changed most)."""
    if found is None:
        return None
    rows = comparisons[comparisons.measure == measure]
    return str(rows.loc[rows.value.abs().idxmax()].layer) if len(rows) else None


def _figure_findings(kind: str, run: RunTables) -> list[Finding]:
    """The findings a figure's caption carries, from the numbers the figure shows."""
    base, control = run.role("base"), run.role("control")
    comp, res = run.comparisons, run.results
    if kind == "umap" and len(comp):
        return [f for f in [contrast_finding(comp, "separability.knn")] if f]
    if kind in ("layer_curves", "paired_differences") and len(comp):
        measures = [m for m in dict.fromkeys(comp.measure) if not m.startswith("cka")]
        return [f for f in (contrast_finding(comp, m) for m in measures[:3]) if f]
    cka = res[res.measure.str.startswith("cka")]
    if kind == "cka_heatmap" and base and len(cka):
        layer = _top_layer(cka, cka.measure.iloc[0])
        return [f for f in [cka_finding(res, base, layer)] if f] if layer else []
    if kind in ("weight_bars", "weight_spectra"):
        return [f for f in [weights_finding(res, control)] if f]
    if kind == "attribution_bars":
        return attribution_finding(res)
    return []


def report_sections(run: RunTables) -> list[Section]:
    """Claims, suite, figures (with findings), measures (with controls)."""
    refs = run.roles.get("reference", [])
    claims = paper_claims(run.comparisons, mt=run.roles.get("mt", []), control=run.role("control"), references=refs,
                          base=run.role("base"))
    sections = [Section(title="The paper's claims, on this run", findings=claims)]
    sections.append(Section(title="Suite", findings=[], tables=[("checkpoints", _checkpoint_table(run)),
                                                               ("data and settings", _settings_table(run))]))
    kinds = run.provenance.get("suite", {}).get("figures", list(run.figures))
    for kind in kinds:
        if kind in run.figures:
            short = [Finding(topic=f.topic, text=f.text) for f in _figure_findings(kind, run)]  # evidence: measures
            sections.append(Section(title=f"Figure: {kind}", figure=run.figures[kind], caption=CAPTIONS.get(kind, ""),
                                    findings=short))
    sections += _measure_sections(run)
    sections.append(Section(title="Provenance", findings=[], tables=[("provenance", _provenance_table(run))]))
    return sections


def _checkpoint_table(run: RunTables) -> pd.DataFrame:
    """Checkpoints with their model spec and role."""
    rows = [{"checkpoint": c.get("name") or c["model"], "model": c["model"], "role": c.get("role") or ""}
            for c in run.provenance.get("suite", {}).get("checkpoints", [])]
    return pd.DataFrame(rows)


def _settings_table(run: RunTables) -> pd.DataFrame:
    """Data, layers, pooling, seeds, bootstrap size: the suite's settings as two columns."""
    s, p = run.provenance.get("suite", {}), run.provenance
    items = {"data": p.get("data"), "records": p.get("n_records"), "split": s.get("data", {}).get("split"),
             "layers": s.get("layers"), "pooling": s.get("pooling"), "seeds": p.get("seeds"), "n_boot": s.get("n_boot"),
             "measures": ", ".join(str(m.get("name", m)) if isinstance(m, dict) else str(m) for m in s.get("measures", []))}
    return pd.DataFrame({"setting": list(items), "value": [str(v) for v in items.values()]})


def _provenance_table(run: RunTables) -> pd.DataFrame:
    """Versions, data fingerprint, step seconds, figures not drawn."""
    p = run.provenance
    items = {k: p.get(k) for k in ("xlprobe", "versions", "data_fingerprint", "seconds", "figures_pending", "plan")
             if p.get(k) is not None}
    return pd.DataFrame({"field": list(items), "value": [json.dumps(v, default=str) if not isinstance(v, str) else v
                                                          for v in items.values()]})


def _html_table(df: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table (its index kept when it is named); numbers never wrap, text does."""
    text = df.index.name is None and len(df.columns) == 2  # field / value tables: long values wrap
    return df.to_html(index=bool(df.index.name), escape=True, border=0, classes="t kv" if text else "t", na_rep="")


def _html_findings(fs: list[Finding]) -> str:
    """Findings as list items, the verdict as a badge, evidence in a nested list."""
    items = []
    for f in fs:
        badge = f'<span class="v {html.escape(f.verdict.replace(" ", "-"))}">{html.escape(f.verdict)}</span> ' \
            if f.verdict else ""
        ev = "".join(f"<li>{html.escape(e)}</li>" for e in f.evidence)
        items.append(f"<li>{badge}{html.escape(f.text)}" + (f"<ul class='ev'>{ev}</ul>" if ev else "") + "</li>")
    return f"<ul class='f'>{''.join(items)}</ul>" if items else ""


_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
img{max-width:100%;border:1px solid #eee}figcaption{color:#444;margin:.3em 0 .6em}
table.t{border-collapse:collapse;font-size:13px;margin:.5em 0}table.t td,table.t th{padding:3px 8px;
border-bottom:1px solid #eee;text-align:left;vertical-align:top;white-space:nowrap}
table.kv td{white-space:normal;max-width:820px;overflow-wrap:anywhere}
ul.f>li{margin:.35em 0}ul.ev{color:#555;font-size:13px}.v{padding:1px 7px;border-radius:9px;color:#fff;
font-size:12px;font-weight:600}.agrees{background:#009E73}.disagrees{background:#D55E00}.split,.mixed{background:#E69F00}
.tw{overflow-x:auto}.inconclusive{background:#777}.not-measured{background:#aaa}.meta{color:#666}"""


#: Marks on <body> how many figures decoded (``data-figures-loaded="3/3"``): the headless-browser test reads it.
_LOADED = ("<script>addEventListener('load',()=>{const i=[...document.images];document.body.dataset.figuresLoaded="
           "i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length})</script>")


def render_html(sections: list[Section], run: RunTables) -> str:
    """One self-contained page: CSS inline, every figure a base64 PNG."""
    p = run.provenance
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>xlprobe report: "
             f"{html.escape(str(p.get('suite', {}).get('name')))}</title><style>{_CSS}</style></head><body>",
             f"<h1>xlprobe report: suite {html.escape(str(p.get('suite', {}).get('name')))}</h1>",
             f"<p class='meta'>{html.escape(_subtitle(run))}</p>"]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.figure is not None:
            data = base64.b64encode(s.figure.read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(s.title)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(s.caption)}</figcaption></figure>")
        parts.append(_html_findings(s.findings))
        for name, df in s.tables:
            parts.append(f"<p><b>{html.escape(name)}</b></p><div class='tw'>{_html_table(df)}</div>")
        parts.append("</section>")
    return "\n".join(parts + [_LOADED, "</body></html>"])


def _subtitle(run: RunTables) -> str:
    """Checkpoints, data and version in one line."""
    p = run.provenance
    n = len(p.get("suite", {}).get("checkpoints", []))
    return (f"{n} checkpoints on {p.get('data')} ({p.get('n_records')} records); {len(run.results)} result rows, "
            f"{len(run.comparisons)} paired comparisons; xlprobe {p.get('xlprobe')}")


def _md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a pipe table (cells' pipes escaped)."""
    if df.index.name:
        df = df.reset_index()
    cells = [[str(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns)
    return head + "".join("\n| " + " | ".join(r) + " |" for r in cells)


def render_markdown(sections: list[Section], run: RunTables) -> str:
    """The Markdown twin: the same sections, figures linked relative to the run folder."""
    lines = [f"# xlprobe report: suite {run.provenance.get('suite', {}).get('name')}", "", _subtitle(run)]
    for s in sections:
        lines += ["", f"## {s.title}", ""]
        if s.figure is not None:
            lines += [f"![{s.title}]({s.figure.relative_to(run.folder).as_posix()})", "", f"*{s.caption}*", ""]
        for f in s.findings:
            lines.append(f"- {'**' + f.verdict + '**: ' if f.verdict else ''}{f.text}")
            lines += [f"  - {e}" for e in f.evidence]
        for name, df in s.tables:
            lines += ["", f"**{name}**", "", _md_table(df)]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into the run folder (atomically); their paths."""
    run = load_run(run_dir)
    sections = report_sections(run)
    paths = run.folder / "report.html", run.folder / "report.md"
    for path, text in zip(paths, (render_html(sections, run), render_markdown(sections, run))):
        atomic_write(path, text.encode())
    return paths
