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

from entrobust.diagnostics.obfuscation import AUDIT_CHECKS as _AUDIT_CHECKS
from entrobust.io import atomic_write_bytes, atomic_write_text
from entrobust.report.claims import VERDICTS, ClaimResult, check_claims, claim_effect_cells
from entrobust.report.plots import Figure, build_figures
from entrobust.report.results import ResultSet
from entrobust.report.tables import Table, build_tables, eps_text

__all__ = ["Report", "build_report", "write_report"]

#: the audit's checks, in the order it runs them (one column each in the audit section)
AUDIT_CHECKS: tuple[str, ...] = _AUDIT_CHECKS


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


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(_md_escape(str(c)) for c in cells) + " |"


def _md_head(cells: Sequence[str]) -> list[str]:
    return [_md_row(cells), "|" + "---|" * len(cells)]


def _row_name(t: Table, row: str) -> str:
    """``PGD10-48 (PGD, 10 steps, ε = 48/255)``: the RU name and what it means."""
    plain = t.plain(row)
    return f"{t.label(row)} ({plain})" if plain else t.label(row)


def _md_table(t: Table) -> str:
    lines = _md_head([t.corner or "", "ε", "n", *t.columns])
    group_at: dict[int, str] = {}
    i = 0
    for g, span in t.row_groups:
        if g:
            group_at[i] = g
        i += span
    for k, row in enumerate(t.rows):
        if k in group_at:
            lines.append(_md_row([f"**{group_at[k]}**", "", "", *[""] * len(t.columns)]))
        cells = [t.cell(row, c).text() for c in t.columns]
        lines.append(_md_row([_row_name(t, row), t.eps_text(row), t.n_text(row), *cells]))
    return "\n".join(lines)


def to_markdown(rep: Report, figure_files: Sequence[str] = ()) -> str:
    """The report as Markdown (figures referenced as ``plots/*.png`` files beside it)."""
    rs = rep.results
    parts = [
        f"# {rep.title}",
        "",
        f"Generated {rep.generated} by entrobust from the results store; {len(rs.runs)} trained run(s) on "
        f"{', '.join(rs.datasets()) or '-'}. Every accuracy is in % (mean ± std over seeds); ε is in pixel "
        "units of [0, 1] images and n is the number of test examples behind a row's numbers; every "
        "cell's source rows are listed in `report.json`.",
        "",
    ]
    if rep.claims:
        parts += ["## Claims check", "", *_md_head(list(CLAIM_COLUMNS))]
        parts += [
            _md_row([c.id, f"**{c.verdict}**", c.claim, c.eps_reading or "-", *claim_effect_cells(c),
                     c.detail, c.source])
            for c in rep.claims
        ]  # fmt: skip
        parts.append("")
    for t in rep.tables:
        parts += [f"## {t.title}", "", f"*Source: {t.source}*", "", _md_table(t), ""]
        parts += [f"- {n}" for n in t.notes]
        parts.append("")
    if rep.audits:
        parts += ["## Gradient-obfuscation audit", "", *_md_head(["model", "seed", "overall", *AUDIT_CHECKS])]
        for a in rep.audits:
            statuses = [a["checks"].get(c, {}).get("status", "-") for c in AUDIT_CHECKS]
            parts.append(_md_row([a["label"], a["seed"], f"**{a['status']}**", *statuses]))
        parts.append("")
    if rep.figures:
        parts += ["## Figures", ""]
        for f, name in zip(rep.figures, figure_files, strict=False):
            parts += [f"### {f.title}", "", f"![{f.title}]({name})", "", f.caption, ""]
    parts += [
        "## Runs",
        "",
        *_md_head(["label", "dataset", "model", "seed", "preset", "run id", "status", "epochs"]),
    ]
    for r in rs.runs:
        epochs = len(rs.epochs.get(r.id, []))
        parts.append(_md_row([r.label, r.dataset, r.model, r.seed, r.preset, f"`{r.id}`", r.status, epochs]))
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------ HTML
CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;
  color:#1d2330}
header{background:#1d2b45;color:#fff;padding:22px 36px}
header h1{margin:0 0 6px;font-size:24px} header p{margin:0;opacity:.85;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:18px 28px 60px}
nav{font-size:13px;margin:10px 0 4px} nav a{margin-right:14px;color:#2456a6;text-decoration:none}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:16px 20px;margin:18px 0;
  box-shadow:0 1px 2px rgba(0,0,0,.03)}
h2{font-size:19px;margin:4px 0 10px} h3{font-size:15px;margin:16px 0 6px}
.src{color:#5b6577;font-size:12.5px;margin:0 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde1e8;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#eef1f6;font-weight:600;text-align:center}
td.rowh,th.rowh{text-align:left;font-weight:600;background:#f8f9fb}
td.grp{background:#e7ecf5;font-weight:700;text-align:left}
td.empty{color:#a3a9b5;font-style:italic}
td.meta{color:#5b6577;font-size:12px;background:#fbfbfd}
span.plain{display:block;font-weight:400;font-size:11px;color:#5b6577}
td[data-sources]:hover{background:#fff7d6;cursor:help}
.notes{font-size:12.5px;color:#5b6577;margin:4px 0 0;padding-left:18px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.reproduced,.pass{background:#1f8a4c} .refuted,.fail{background:#c0392b}
.inconclusive{background:#8a93a3} .warn{background:#d68910}
table.claims td{white-space:normal;text-align:left;vertical-align:top}
table.claims td.num{font-size:12px;color:#333;max-width:560px}
figure{margin:14px 0;text-align:center} figure img{max-width:100%;border:1px solid #e1e4ea;border-radius:4px}
figcaption{font-size:12.5px;color:#5b6577;margin-top:4px}
code{font-size:12px;background:#f0f2f5;padding:1px 4px;border-radius:3px}
.summary{display:flex;gap:14px;flex-wrap:wrap}
.stat{background:#f3f5f9;border-radius:6px;padding:8px 14px;font-size:13px}
.stat b{display:block;font-size:20px}
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")


def _tag(name: str, content: str = "", **attrs: Any) -> str:
    """``<name attr="...">content</name>``; attribute values are escaped, ``cls`` → ``class``."""
    parts = [name]
    for k, v in attrs.items():
        if v is None:
            continue
        key = "class" if k == "cls" else k.replace("_", "-")
        parts.append(f'{key}="{_e(v)}"')
    return f"<{' '.join(parts)}>{content}</{name}>"


def _row(cells: Sequence[str]) -> str:
    return "<tr>" + "".join(cells) + "</tr>"


def _th(text: str, **attrs: Any) -> str:
    return _tag("th", _e(text), **attrs)


def _anchor(t: Table) -> str:
    return _slug(f"{t.name}-{t.dataset or ''}")


def _cell_html(t: Table, row: str, col: str) -> str:
    c = t.cell(row, col)
    if c.empty:
        return _tag("td", _e(c.text()), cls="empty")
    values = ", ".join(f"{100 * v:.2f}" if c.percent else f"{v:.4g}" for v in c.values)
    n = f" (n = {', '.join(str(k) for k in c.n)})" if c.percent and c.n else ""
    tip = f"{t.label(row)} / {col}: {values}{n} — sources: {', '.join(c.sources)}"
    return _tag("td", _e(c.text()), data_sources=" ".join(c.sources), title=tip)


def _html_table(t: Table) -> str:
    """A paper table with its column groups (e.g. Without AT / With AT) and row groups."""
    col_groups = any(g for g, _ in t.column_groups)
    row_groups = any(g for g, _ in t.row_groups)
    lead = 2 if row_groups else 1
    head = [_th(c) for c in t.columns]
    meta_tip = "ε: pixel units of [0, 1] images; n: test examples behind the row's numbers"
    if col_groups:
        top = [_th(t.corner, colspan=lead, rowspan=2, cls="rowh")]
        top += [_th("ε", rowspan=2, title=meta_tip), _th("n", rowspan=2, title=meta_tip)]
        top += [_th(g, colspan=span) for g, span in t.column_groups]
        out = [_row(top), _row(head)]
    else:
        meta = [_th("ε", title=meta_tip), _th("n", title=meta_tip)]
        out = [_row([_th(t.corner, colspan=lead, cls="rowh"), *meta, *head])]
    starts: dict[int, tuple[str, int]] = {}
    i = 0
    for g, span in t.row_groups:
        starts[i] = (g, span)
        i += span
    for k, row in enumerate(t.rows):
        cells = []
        if row_groups and k in starts:
            g, span = starts[k]
            cells.append(_tag("td", _e(g), cls="grp", rowspan=span))
        plain = t.plain(row)
        name = _e(t.label(row)) + (_tag("span", _e(plain), cls="plain") if plain else "")
        cells.append(_tag("td", name, cls="rowh"))
        cells += [_tag("td", _e(t.eps_text(row)), cls="meta"), _tag("td", _e(t.n_text(row)), cls="meta")]
        cells += [_cell_html(t, row, col) for col in t.columns]
        out.append(_row(cells))
    return _tag("table", "".join(out), cls="paper")


def _badge(verdict: str) -> str:
    return _tag("span", _e(verdict), cls=f"badge {_slug(verdict)}")


def _section(anchor: str | None, title: str, source: str, *content: str) -> str:
    intro = _tag("p", source, cls="src") if source else ""
    return _tag("section", _tag("h2", _e(title)) + intro + "".join(content), id=anchor)


def _summary(rep: Report) -> str:
    rs = rep.results
    stats = [
        (len(rs.runs), "trained runs"),
        (len({r.label for r in rs.runs}), "defenses"),
        (len(rs.evaluations), "evaluation rows"),
        (len(rs.analyses), "analyses"),
    ]
    html_stats = [_tag("div", f"<b>{n}</b>{_e(what)}", cls="stat") for n, what in stats]
    if rep.claims:
        n = [sum(1 for c in rep.claims if c.verdict == v) for v in VERDICTS]
        counts = f"<b>{n[0]} / {n[1]} / {n[2]}</b>claims reproduced / refuted / inconclusive"
        html_stats.append(_tag("div", counts, cls="stat"))
    return _tag("section", _tag("div", "".join(html_stats), cls="summary"))


#: columns of the claims table (HTML and Markdown)
CLAIM_COLUMNS = (
    "id", "verdict", "claim", "paper's ε reading", "effect [95% CI]", "p", "n", "numbers", "source",
)  # fmt: skip


def _effect_what(c: ClaimResult) -> str:
    return f"{c.effect['what']} ({c.effect['method']})" if c.effect else ""


def _claims_html(rep: Report) -> str:
    rows = [_row([_th(h) for h in CLAIM_COLUMNS])]
    for c in rep.claims:
        eff, p, n = claim_effect_cells(c)
        numbers = _tag(
            "td",
            _e(c.detail),
            cls="num",
            data_sources=" ".join(c.sources),
            title="sources: " + ", ".join(c.sources),
        )
        rows.append(
            _row([_tag("td", _e(c.id)), _tag("td", _badge(c.verdict)), _tag("td", _e(c.claim)),
                  _tag("td", _e(c.eps_reading or "-")), _tag("td", _e(eff), title=_e(_effect_what(c))),
                  _tag("td", _e(p)), _tag("td", _e(n)), numbers, _tag("td", _e(c.source))])
        )  # fmt: skip
    intro = (
        "The papers' qualitative claims, evaluated on these results (the strongest stored attack per ε). "
        "Effects are differences in robust accuracy (percentage points) paired on the same test points, "
        "with a paired-bootstrap 95 % interval and McNemar's exact p; intervals holding 0 are marked "
        "<i>within noise</i>."
    )
    return _section("claims", "Claims check", intro, _tag("table", "".join(rows), cls="claims"))


def _audit_html(rep: Report) -> str:
    head = ["model", "seed", "threat", "n", "clean", "overall", *AUDIT_CHECKS]
    rows = [_row([_th(h, cls="rowh" if h == "model" else None) for h in head])]
    for a in rep.audits:
        th = a.get("threat") or {}
        clean = a.get("clean_accuracy")
        cells = [
            _tag("td", _e(a["label"]), cls="rowh"),
            _tag("td", _e(a["seed"])),
            _tag("td", f"{_e(th.get('norm', ''))} ε = {eps_text(float(th.get('eps', 0)))}"),
            _tag("td", _e(a.get("n"))),
            _tag("td", f"{100 * clean:.1f}" if isinstance(clean, float) else "-"),
            _tag("td", _badge(str(a.get("status"))), data_sources=a["source"]),
        ]
        for name in AUDIT_CHECKS:
            chk = a["checks"].get(name)
            if not chk:
                cells.append(_tag("td", "-", cls="empty"))
                continue
            evidence = (chk.get("evidence") or {}).items()
            ev = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in evidence
                           if not isinstance(v, list | dict))  # fmt: skip
            tip = f"{chk.get('explanation', '')} [{ev}]"
            cells.append(_tag("td", _badge(str(chk.get("status"))), data_sources=a["source"], title=tip))
        rows.append(_row(cells))
    intro = (
        "One row per model (Athalye et al. 2018; Carlini et al. 2019; RU §5.2, App. C). "
        "Hover a status for its evidence."
    )
    return _section("audit", "Gradient-obfuscation audit", intro, _tag("table", "".join(rows)))


def _figures_html(rep: Report) -> str:
    parts = [] if rep.figures else [_tag("p", "No figure has data yet.", cls="src")]
    for f in rep.figures:
        b64 = base64.b64encode(f.png).decode("ascii")
        img = f'<img alt="{_e(f.title)}" src="data:image/png;base64,{b64}">'
        body = _tag("h3", _e(f.title)) + img + _tag("figcaption", _e(f.caption))
        parts.append(_tag("figure", body, data_sources=" ".join(f.sources)))
    return _section("figures", "Figures", "", *parts)


def _runs_html(rep: Report) -> str:
    rs = rep.results
    head = ["label", "dataset", "model", "seed", "preset", "run id", "status", "epochs", "train time"]
    rows = [_row([_th(h, cls="rowh" if h == "label" else None) for h in head])]
    for r in rs.runs:
        secs = (r.summary or {}).get("seconds")
        values = [r.dataset, r.model, r.seed, r.preset]
        rows.append(
            _row([_tag("td", _e(r.label), cls="rowh"), *[_tag("td", _e(v)) for v in values],
                  _tag("td", _tag("code", _e(r.id))), _tag("td", _e(r.status)),
                  _tag("td", str(len(rs.epochs.get(r.id, [])))),
                  _tag("td", "-" if not isinstance(secs, int | float) else f"{secs:.0f} s")])
        )  # fmt: skip
    return _section("runs", "Runs", "", _tag("table", "".join(rows)))


def to_html(rep: Report) -> str:
    """The report as one self-contained HTML page (inline CSS, base64 PNGs, embedded JSON data)."""
    rs = rep.results
    nav = [("claims", "Claims")] if rep.claims else []
    nav += [(_anchor(t), t.title.split(" — ")[0]) for t in rep.tables]
    nav += [("audit", "Audit")] if rep.audits else []
    nav += [("figures", "Figures"), ("runs", "Runs")]
    experiment = f" — experiment {_e(rs.experiment)}" if rs.experiment else ""
    intro = (
        f"Generated {_e(rep.generated)} by entrobust from the results store{experiment}. Every accuracy "
        "is in %, mean ± std over seeds; ε in pixel units of [0, 1] images, n = test examples behind a "
        "row; hover a cell to see the stored rows behind it."
    )
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(rep.title)}</title><style>{CSS}</style></head><body>",
        _tag("header", _tag("h1", _e(rep.title)) + _tag("p", intro)),
        "<main>",
        _tag("nav", "".join(f'<a href="#{a}">{_e(text)}</a>' for a, text in nav)),
        _summary(rep),
    ]
    if rep.claims:
        body.append(_claims_html(rep))
    for t in rep.tables:
        notes = _tag("ul", "".join(_tag("li", _e(n)) for n in t.notes), cls="notes") if t.notes else ""
        body.append(_section(_anchor(t), t.title, f"Source: {_e(t.source)}", _html_table(t), notes))
    if rep.audits:
        body.append(_audit_html(rep))
    body += [_figures_html(rep), _runs_html(rep)]
    data = json.dumps(rep.to_dict(), default=str).replace("</", "<\\/")
    body.append(f'<script type="application/json" id="report-data">{data}</script>')
    body.append("</main></body></html>")
    return "\n".join(body)
