"""Render a study as Markdown and as ONE self-contained HTML page (inline CSS, base64 images).

Sections: summary, claims check, the papers' tables, audits (one row per model), figures, runs.
Every table cell of the HTML carries the ids of the stored rows behind it (``data-sources`` and a
tooltip), and ``report.json`` (also embedded in the page as ``<script id="report-data">``) lists
them per cell, so each number traces back to the results store (STYLE rule 10).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrobust.experiments.claims import ClaimResult, check_claims
from entrobust.io import atomic_write_bytes, atomic_write_text
from entrobust.report.plots import Figure, build_figures
from entrobust.report.results import ResultSet
from entrobust.report.tables import Table, build_tables

__all__ = ["Report", "build_report", "write_report"]

AUDIT_CHECKS: tuple[str, ...] = (
    "gradients",
    "single-vs-multi",
    "transfer-gap",
    "random-search",
    "eps-curve",
    "steps-curve",
    "unbounded",
)


@dataclass
class Report:
    """Everything a report shows, before rendering."""

    title: str
    results: ResultSet
    tables: list[Table]
    figures: list[Figure]
    claims: list[ClaimResult]
    audits: list[dict[str, Any]]
    generated: str
    paths: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "generated": self.generated,
            "experiment": self.results.experiment,
            "tables": [t.to_dict() for t in self.tables],
            "claims": [c.to_dict() for c in self.claims],
            "audits": self.audits,
            "figures": [{"key": f.key, "title": f.title, "sources": f.sources} for f in self.figures],
            "runs": [
                {
                    "id": r.id,
                    "label": r.label,
                    "preset": r.preset,
                    "dataset": r.dataset,
                    "model": r.model,
                    "seed": r.seed,
                }
                for r in self.results.runs
            ],
        }


def _audits(rs: ResultSet) -> list[dict[str, Any]]:
    out = []
    for r in rs.runs:
        got = rs.analysis(r.id, "audit")
        if got is None:
            continue
        aid, a = got
        out.append(
            {
                "run": r.id,
                "label": r.label,
                "dataset": r.dataset,
                "seed": r.seed,
                "source": f"analysis:{aid}",
                "status": a.get("status"),
                "threat": a.get("threat"),
                "n": a.get("n"),
                "clean_accuracy": a.get("clean_accuracy"),
                "checks": {c["name"]: c for c in a.get("checks", [])},
            }
        )
    return out


def build_report(
    store: Any,
    *,
    experiment: str | None = None,
    run_ids: Sequence[str] | None = None,
    title: str = "",
    tables: Sequence[str] = (),
    plots: Sequence[str] = (),
    claims: bool = True,
) -> Report:
    """Collect tables, figures, claims and audits for a study (nothing is written)."""
    rs = ResultSet.from_store(store, experiment=experiment, run_ids=run_ids)
    return Report(
        title=title or (f"entrobust report — {experiment}" if experiment else "entrobust report"),
        results=rs,
        tables=build_tables(rs, tables),
        figures=build_figures(rs, plots),
        claims=check_claims(rs) if claims else [],
        audits=_audits(rs),
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )


def write_report(
    store: Any,
    out_dir: str | Path,
    *,
    experiment: str | None = None,
    run_ids: Sequence[str] | None = None,
    title: str = "",
    spec: Any = None,
) -> Report:
    """Build the report and write ``report.html`` (self-contained), ``report.md`` (+ ``plots/*.png``)
    and ``report.json`` into ``out_dir``; return the :class:`Report` with ``paths`` filled."""
    rep = build_report(
        store,
        experiment=experiment,
        run_ids=run_ids,
        title=title,
        tables=tuple(getattr(spec, "tables", ()) or ()),
        plots=tuple(getattr(spec, "plots", ()) or ()),
        claims=bool(getattr(spec, "claims", True)),
    )
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    names = []
    for i, f in enumerate(rep.figures):
        name = f"plots/{i:02d}-{f.key}{'-' + f.dataset if f.dataset else ''}.png"
        atomic_write_bytes(out / name, f.png)
        names.append(name)
    rep.paths["markdown"] = atomic_write_text(out / "report.md", to_markdown(rep, names))
    rep.paths["html"] = atomic_write_text(out / "report.html", to_html(rep))
    rep.paths["json"] = atomic_write_text(
        out / "report.json", json.dumps(rep.to_dict(), indent=1, default=str)
    )
    return rep


# ------------------------------------------------------------------------------------ Markdown
def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_table(t: Table) -> str:
    head = [t.corner or "", *t.columns]
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |", "|" + "---|" * len(head)]
    group_at: dict[int, str] = {}
    i = 0
    for g, span in t.row_groups:
        if g:
            group_at[i] = g
        i += span
    for k, row in enumerate(t.rows):
        if k in group_at:
            lines.append("| **" + group_at[k] + "** |" + " |" * len(t.columns))
        lines.append(
            "| " + " | ".join([_md_escape(row.strip()), *[t.cell(row, c).text() for c in t.columns]]) + " |"
        )
    return "\n".join(lines)


def to_markdown(rep: Report, figure_files: Sequence[str] = ()) -> str:
    rs = rep.results
    parts = [f"# {rep.title}", "", f"Generated {rep.generated} by entrobust from the results store; "
             f"{len(rs.runs)} trained run(s) on {', '.join(rs.datasets()) or '-'}. Numbers are accuracies in % "
             "(mean ± std over seeds); every cell's source rows are listed in `report.json`.", ""]  # fmt: skip
    if rep.claims:
        parts += [
            "## Claims check",
            "",
            "| id | verdict | claim | numbers | source |",
            "|---|---|---|---|---|",
        ]
        for c in rep.claims:
            parts.append(
                f"| {c.id} | **{c.verdict}** | {_md_escape(c.claim)} | {_md_escape(c.detail)} | {_md_escape(c.source)} |"
            )
        parts.append("")
    for t in rep.tables:
        parts += [f"## {t.title}", "", f"*Source: {t.source}*", "", _md_table(t), ""]
        parts += [f"- {n}" for n in t.notes]
        parts.append("")
    if rep.audits:
        parts += ["## Gradient-obfuscation audit", "", "| model | seed | overall | " + " | ".join(AUDIT_CHECKS) + " |",
                  "|---" * (3 + len(AUDIT_CHECKS)) + "|"]  # fmt: skip
        for a in rep.audits:
            cells = [str(a["checks"].get(c, {}).get("status", "-")) for c in AUDIT_CHECKS]
            parts.append(f"| {a['label']} | {a['seed']} | **{a['status']}** | " + " | ".join(cells) + " |")
        parts.append("")
    if rep.figures:
        parts += ["## Figures", ""]
        for f, name in zip(rep.figures, figure_files):
            parts += [f"### {f.title}", "", f"![{f.title}]({name})", "", f.caption, ""]
    parts += [
        "## Runs",
        "",
        "| label | dataset | model | seed | preset | run id | status | epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rs.runs:
        parts.append(
            f"| {r.label} | {r.dataset} | {r.model} | {r.seed} | {r.preset} | `{r.id}` | {r.status} | {len(rs.epochs.get(r.id, []))} |"
        )
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------ HTML
CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2b45;color:#fff;padding:22px 36px}
header h1{margin:0 0 6px;font-size:24px} header p{margin:0;opacity:.85;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:18px 28px 60px}
nav{font-size:13px;margin:10px 0 4px} nav a{margin-right:14px;color:#2456a6;text-decoration:none}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:16px 20px;margin:18px 0;box-shadow:0 1px 2px rgba(0,0,0,.03)}
h2{font-size:19px;margin:4px 0 10px} h3{font-size:15px;margin:16px 0 6px}
.src{color:#5b6577;font-size:12.5px;margin:0 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde1e8;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#eef1f6;font-weight:600;text-align:center}
td.rowh,th.rowh{text-align:left;font-weight:600;background:#f8f9fb}
td.grp{background:#e7ecf5;font-weight:700;text-align:left;writing-mode:horizontal-tb}
td.empty{color:#a3a9b5;font-style:italic}
td[data-sources]:hover{background:#fff7d6;cursor:help}
.notes{font-size:12.5px;color:#5b6577;margin:4px 0 0;padding-left:18px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.reproduced,.pass{background:#1f8a4c}.not-reproduced,.fail{background:#c0392b}.not-enough-data{background:#8a93a3}.warn{background:#d68910}
table.claims td{white-space:normal;text-align:left;vertical-align:top} table.claims td.num{font-size:12px;color:#333;max-width:560px}
figure{margin:14px 0;text-align:center} figure img{max-width:100%;border:1px solid #e1e4ea;border-radius:4px}
figcaption{font-size:12.5px;color:#5b6577;margin-top:4px}
code{font-size:12px;background:#f0f2f5;padding:1px 4px;border-radius:3px}
.summary{display:flex;gap:14px;flex-wrap:wrap} .stat{background:#f3f5f9;border-radius:6px;padding:8px 14px;font-size:13px}
.stat b{display:block;font-size:20px}
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")


def _html_table(t: Table) -> str:
    out = ['<table class="paper">']
    has_groups = any(g for g, _ in t.column_groups)
    row_groups = any(g for g, _ in t.row_groups)
    lead = 2 if row_groups else 1
    if has_groups:
        out.append("<tr>" + f'<th colspan="{lead}" rowspan="2" class="rowh">{_e(t.corner)}</th>')
        for g, span in t.column_groups:
            out.append(f'<th colspan="{span}">{_e(g)}</th>')
        out.append("</tr><tr>" + "".join(f"<th>{_e(c)}</th>" for c in t.columns) + "</tr>")
    else:
        out.append(
            f'<tr><th colspan="{lead}" class="rowh">{_e(t.corner)}</th>'
            + "".join(f"<th>{_e(c)}</th>" for c in t.columns)
            + "</tr>"
        )
    starts: dict[int, tuple[str, int]] = {}
    i = 0
    for g, span in t.row_groups:
        starts[i] = (g, span)
        i += span
    for k, row in enumerate(t.rows):
        out.append("<tr>")
        if row_groups and k in starts:
            g, span = starts[k]
            out.append(f'<td class="grp" rowspan="{span}">{_e(g)}</td>')
        out.append(f'<td class="rowh">{_e(row.strip())}</td>')
        for col in t.columns:
            c = t.cell(row, col)
            if c.empty:
                out.append('<td class="empty">not run</td>')
            else:
                src = " ".join(c.sources)
                tip = f"{row.strip()} / {col}: " + ", ".join(
                    f"{100 * v:.2f}" if c.percent else f"{v:.4g}" for v in c.values
                )
                tip += f" — sources: {', '.join(c.sources)}"
                out.append(f'<td data-sources="{_e(src)}" title="{_e(tip)}">{_e(c.text())}</td>')
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _badge(verdict: str) -> str:
    return f'<span class="badge {_slug(verdict)}">{_e(verdict)}</span>'


def to_html(rep: Report) -> str:
    rs = rep.results
    counts = {
        v: sum(1 for c in rep.claims if c.verdict == v)
        for v in ("reproduced", "not reproduced", "not enough data")
    }
    nav = ['<a href="#claims">Claims</a>'] if rep.claims else []
    nav += [
        f'<a href="#{_slug(t.name + "-" + (t.dataset or ""))}">{_e(t.title.split(" — ")[0])}</a>'
        for t in rep.tables
    ]
    nav += ['<a href="#audit">Audit</a>'] if rep.audits else []
    nav += ['<a href="#figures">Figures</a>', '<a href="#runs">Runs</a>']
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(rep.title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{_e(rep.title)}</h1><p>Generated {_e(rep.generated)} by entrobust from the results store"
        f"{' — experiment ' + _e(rs.experiment) if rs.experiment else ''}. Accuracies in %, mean ± std over seeds; "
        "hover a cell to see the stored rows behind it.</p></header><main>",
        "<nav>" + "".join(nav) + "</nav>",
        '<section><div class="summary">'
        f'<div class="stat"><b>{len(rs.runs)}</b>trained runs</div>'
        f'<div class="stat"><b>{len({r.label for r in rs.runs})}</b>defenses</div>'
        f'<div class="stat"><b>{len(rs.evaluations)}</b>evaluation rows</div>'
        f'<div class="stat"><b>{len(rs.analyses)}</b>analyses</div>'
        + (
            f'<div class="stat"><b>{counts["reproduced"]} / {counts["not reproduced"]} / {counts["not enough data"]}</b>'
            "claims reproduced / not / no data</div>"
            if rep.claims
            else ""
        )
        + "</div></section>",
    ]
    if rep.claims:
        body.append(
            '<section id="claims"><h2>Claims check</h2><p class="src">The papers\' qualitative claims, '
            "evaluated on these results (the strongest stored attack per ε; differences under two binomial "
            "standard errors are marked <i>within noise</i>).</p>"  # fmt: skip
            '<table class="claims"><tr><th>id</th><th>verdict</th><th>claim</th><th>numbers</th><th>source</th></tr>'
        )
        for c in rep.claims:
            body.append(
                f"<tr><td>{_e(c.id)}</td><td>{_badge(c.verdict)}</td><td>{_e(c.claim)}</td>"
                f'<td class="num" data-sources="{_e(" ".join(c.sources))}" title="sources: {_e(", ".join(c.sources))}">{_e(c.detail)}</td>'
                f"<td>{_e(c.source)}</td></tr>"
            )
        body.append("</table></section>")
    for t in rep.tables:
        body.append(
            f'<section id="{_slug(t.name + "-" + (t.dataset or ""))}"><h2>{_e(t.title)}</h2><p class="src">Source: {_e(t.source)}</p>'
        )
        body.append(_html_table(t))
        if t.notes:
            body.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in t.notes) + "</ul>")
        body.append("</section>")
    if rep.audits:
        body.append('<section id="audit"><h2>Gradient-obfuscation audit</h2><p class="src">One row per model '
                    "(Athalye et al. 2018; Carlini et al. 2019; RU §5.2, App. C). Hover a status for its evidence.</p>"
                    "<table><tr><th class=\"rowh\">model</th><th>seed</th><th>threat</th><th>n</th><th>clean</th><th>overall</th>"
                    + "".join(f"<th>{_e(c)}</th>" for c in AUDIT_CHECKS) + "</tr>")  # fmt: skip
        for a in rep.audits:
            th = a.get("threat") or {}
            cells = []
            for name in AUDIT_CHECKS:
                chk = a["checks"].get(name)
                if not chk:
                    cells.append('<td class="empty">-</td>')
                    continue
                ev = ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in (chk.get("evidence") or {}).items()
                    if not isinstance(v, list | dict)
                )
                tip = f"{chk.get('explanation', '')} [{ev}]"
                cells.append(
                    f'<td data-sources="{_e(a["source"])}" title="{_e(tip)}">{_badge(str(chk.get("status")))}</td>'
                )
            clean = a.get("clean_accuracy")
            clean_txt = f"{100 * clean:.1f}" if isinstance(clean, float) else "-"
            body.append(
                f'<tr><td class="rowh">{_e(a["label"])}</td><td>{_e(a["seed"])}</td>'
                f"<td>{_e(th.get('norm', ''))} {float(th.get('eps', 0)):.3g}</td><td>{_e(a.get('n'))}</td>"
                f"<td>{clean_txt}</td>"
            )
            body.append(
                f'<td data-sources="{_e(a["source"])}">{_badge(str(a.get("status")))}</td>'
                + "".join(cells)
                + "</tr>"
            )
        body.append("</table></section>")
    body.append('<section id="figures"><h2>Figures</h2>')
    if not rep.figures:
        body.append('<p class="src">No figure has data yet.</p>')
    for f in rep.figures:
        b64 = base64.b64encode(f.png).decode("ascii")
        body.append(
            f'<figure data-sources="{_e(" ".join(f.sources))}"><h3>{_e(f.title)}</h3>'
            f'<img alt="{_e(f.title)}" src="data:image/png;base64,{b64}"><figcaption>{_e(f.caption)}</figcaption></figure>'
        )
    body.append("</section>")
    body.append('<section id="runs"><h2>Runs</h2><table><tr><th class="rowh">label</th><th>dataset</th><th>model</th>'
                "<th>seed</th><th>preset</th><th>run id</th><th>status</th><th>epochs</th><th>train time</th></tr>")  # fmt: skip
    for r in rs.runs:
        secs = (r.summary or {}).get("seconds")
        body.append(
            f'<tr><td class="rowh">{_e(r.label)}</td><td>{_e(r.dataset)}</td><td>{_e(r.model)}</td><td>{_e(r.seed)}</td>'
            f"<td>{_e(r.preset)}</td><td><code>{_e(r.id)}</code></td><td>{_e(r.status)}</td>"
            f"<td>{len(rs.epochs.get(r.id, []))}</td><td>{'-' if secs is None else f'{secs:.0f} s'}</td></tr>"
        )
    body.append("</table></section>")
    data = json.dumps(rep.to_dict(), default=str).replace("</", "<\\/")
    body.append(f'<script type="application/json" id="report-data">{data}</script>')
    body.append("</main></body></html>")
    return "\n".join(body)
