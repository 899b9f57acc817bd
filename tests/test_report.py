"""Reports from a small hand-stored study: paper layouts, mean ± std over seeds, 'not run' cells,
a self-contained HTML page, and every table cell traced to the stored rows it came from."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from entrobust.experiments.store import Store
from entrobust.record import EvalRecord
from entrobust.report import ResultSet, build_tables, write_report
from entrobust.report.tables import TABLES

ADV = {"kind": "pgd", "eps": 0.188}
NONE = {"kind": "none"}


def _run(
    store: Store, label: str, preset: str, seed: int, adversary: dict[str, Any], model: str = "cnn4"
) -> str:
    cfg = {
        "dataset": "mnist5k",
        "model": model,
        "seed": seed,
        "preset": preset,
        "method": {"adversary": adversary},
    }
    rid = store.add_run(
        cfg, name=label, experiment="hand", preset=preset, dataset="mnist5k", model=model, seed=seed
    )
    store.set_status(rid, "done", summary={"seconds": 3.0})
    store.add_member("hand", rid, label, {"adversarial": adversary["kind"] != "none"})
    for epoch in (1, 2):
        store.add_epoch(
            rid, epoch, {"epoch": epoch, "train_loss": 1.0 / epoch, "val_robust_acc": 0.1 * epoch}
        )
    return rid


def _rows(
    rid: str, evaluation: str, accs: dict[tuple[str, float], float], clean: float, transfer: str | None = None
) -> list[EvalRecord]:
    examples = tuple(
        {"idx": i, "success": i % 10 == 0, "entropy": 0.1 * (i % 5), "loss": 0.2} for i in range(100)
    )
    base: dict[str, Any] = {"run_id": rid, "evaluation": evaluation, "norm": "linf", "n": 100}
    base.update(clean_acc=clean, surrogate=transfer)
    rows = [EvalRecord(attack="clean", row="clean", eps=0.0, robust_acc=clean, examples=examples, **base)]
    for (label, eps), acc in accs.items():
        name = label if not label.startswith("PGD-20") else "pgd"
        kwargs = {"steps": 20} if name == "pgd" else {"restarts": 1} if label.startswith("PGD10") else {}
        spec = {"entry": {"attack": name, "kwargs": kwargs}, "suite": {"name": "custom"}}
        rows.append(EvalRecord(attack=label, attack_name=name, eps=eps, robust_acc=acc, spec=spec, **base))
    by_eps: dict[float, float] = {}
    for (_, eps), acc in accs.items():
        by_eps[eps] = min(acc, by_eps.get(eps, 1.0))
    for eps, acc in by_eps.items():
        rows.append(EvalRecord(attack="worst-case", row="worst-case", eps=eps, robust_acc=acc, **base))
    return rows


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("hand") / "results.sqlite")
    ids: dict[tuple[str, int], str] = {}
    base = {
        "Normal": (0.99, 0.05, NONE),
        "EntM": (0.98, 0.25, NONE),
        "PAT": (0.97, 0.70, ADV),
        "PAT-EntM": (0.975, 0.74, ADV),
    }
    for seed in (0, 1):
        for label, (clean, rob, adv) in base.items():
            rid = _run(store, label, f"ru/{label.lower()}", seed, adv)
            ids[(label, seed)] = rid
            d = 0.01 * seed
            white = {
                ("FGSM_32", 32 / 255): rob + 0.1 + d,
                ("PGD10-32", 32 / 255): rob + d,
                ("PGD-20", 0.3): rob / 2 + d,
            }
            store.replace_evaluations(
                rid,
                "white-box",
                _rows(rid, "white-box", white, clean + d / 10),
                stage=("eval:white-box", "h"),
            )
            hist = {
                "layer": "conv1",
                "edges": [-0.5, 0.0, 0.5],
                "counts": [10, 12],
                "near_zero": 3,
                "total": 22,
            }
            store.add_analysis(rid, "fuzziness", {"first": 0.3 - 0.05 * seed, "histograms": [hist]})
            geometry = {"margin": 2.0, "jacobian_norm": 10.0 + seed, "normalized_margin": 0.2}
            geometry.update(nonlinearity=4.0, correlation=0.8, adv_accuracy=0.5)
            store.add_analysis(rid, "geometry", geometry)
            check = {
                "name": "gradients",
                "status": "pass",
                "evidence": {"zero_fraction": 0.0},
                "explanation": "ok",
            }
            curves = {
                "eps": {"eps": [0.0, 0.1, 0.3, 0.6], "accuracy": [clean, rob, rob / 3, 0.0]},
                "steps": {"steps": [8, 16, 32], "accuracy": [rob, rob - 0.01, rob - 0.01]},
            }
            audit = {
                "status": "pass",
                "threat": {"norm": "linf", "eps": 0.188},
                "n": 100,
                "clean_accuracy": clean,
            }
            store.add_analysis(rid, "audit", {**audit, "checks": [check], "curves": curves})
    for label in ("EntM", "PAT-EntM"):
        sur = ids[("Normal" if label == "EntM" else "PAT", 0)]
        rid = ids[(label, 0)]
        rows = _rows(rid, "black-box", {("PGD10-32", 32 / 255): 0.5}, 0.98, transfer=sur)
        store.replace_evaluations(rid, "black-box", rows, stage=("eval:black-box", "h"))
    # a run of another experiment must not leak into this one's report
    other = store.add_run(
        {"other": 1}, name="Other", experiment="x", preset="ru/pat", dataset="mnist5k", seed=0
    )
    store.add_member("other-study", other, "PAT")
    return store


def test_result_set_selects_the_experiment(study: Store) -> None:
    rs = ResultSet.from_store(study, experiment="hand")
    assert len(rs.runs) == 8 and rs.labels() == ["Normal", "EntM", "PAT", "PAT-EntM"]
    assert {r.adversarial for r in rs.runs_for("PAT")} == {True}
    assert len(ResultSet.from_store(study).runs) == 9  # all experiments


def test_ru_table_layout_mean_std_and_not_run(study: Store) -> None:
    rs = ResultSet.from_store(study, experiment="hand")
    (t,) = TABLES.get("ru-table1").build(rs)
    assert t.columns == ["Normal", "EntM", "LS", "ADP", "PAT", "TRADES", "PAT-EntM", "PAT-LS"]
    assert [g for g, _ in t.column_groups] == ["", "Without AT", "With AT"]
    assert t.rows[:3] == ["Clean", "FGSM_32", "PGD10-32"]
    cell = t.cell("PGD10-32", "EntM")
    assert cell.values == pytest.approx([0.25, 0.26]) and cell.text() == "25.5 ± 0.7*"  # restarts=1 marked
    assert any("restarts=1" in n for n in t.notes)
    assert t.cell("PGD10-32", "LS").text() == "not run"
    black_key = next(r for r in t.rows if t.label(r) == "PGD10-32" and t.row_settings[r] == "black-box")
    assert black_key.strip() == black_key  # no key told apart by whitespace
    black = t.cell(black_key, "EntM")  # black-box row
    assert black.values == [0.5] and len(black.sources) == 1
    assert t.cell(black_key, "Normal").empty


def test_tables_leave_out_rows_and_columns_that_never_ran_and_name_them(study: Store) -> None:
    rs = ResultSet.from_store(study, experiment="hand")
    t = next(t for t in build_tables(rs) if t.name == "ru-table1")
    assert t.columns == ["Normal", "EntM", "PAT", "PAT-EntM"]  # LS, ADP, TRADES, PAT-LS: no runs
    assert t.column_groups == [("", 1), ("Without AT", 1), ("With AT", 2)]
    assert [t.label(r) for r in t.rows] == ["Clean", "FGSM_32", "PGD10-32", "PGD10-32"]
    assert t.row_groups == [("", 1), ("White-Box", 2), ("Black-Box", 1)]
    assert sum(span for _, span in t.row_groups) == len(t.rows)
    assert all(row in t.rows and col in t.columns for row, col in t.cells)
    (note,) = [n for n in t.notes if n.startswith("Not run")]
    assert "columns LS, ADP, TRADES, PAT-LS" in note and "PGD10-48" in note and "reproduction scale" in note
    assert "PGD10-32" not in note.split("columns")[0]  # a row that ran is not named


def test_a_proxy_with_one_run_says_why_its_black_box_cells_are_empty(study: Store) -> None:
    """RU crafts black-box examples on Normal / PAT (§5.1); their own black-box cells need another
    run of the same recipe. With one seed the cell says so (and a note explains it); with two,
    a missing cell is plainly "not run"."""
    from entrobust.report.tables import RU_NO_PROXY

    full = ResultSet.from_store(study, experiment="hand")
    one = ResultSet.from_store(study, run_ids=[r.id for r in full.runs if r.seed == 0])
    for rs, text in ((one, RU_NO_PROXY), (full, "not run")):
        (t,) = TABLES.get("ru-table1").build(rs)
        black = next(r for r in t.rows if t.label(r) == "PGD10-32" and t.row_settings[r] == "black-box")
        assert t.cell(black, "Normal").text() == text and t.cell(black, "PAT").text() == text
        assert t.cell(black, "EntM").values == [0.5]
        assert any(n.startswith(f"'{RU_NO_PROXY}'") for n in t.notes) == (text == RU_NO_PROXY)
        assert t.cell(black, "Normal").to_dict().get("absent") == (RU_NO_PROXY if rs is one else None)


def test_prune_names_a_row_shown_twice_with_its_setting() -> None:
    from entrobust.report.results import Cell
    from entrobust.report.tables import Table

    t = Table("t", "T", "src", ["w", "b", "w2"], ["x"])
    t.row_labels = {"b": "PGD", "w": "PGD", "w2": "FGSM"}
    t.row_settings = {"w": "white-box", "b": "black-box", "w2": "white-box"}
    t.cells[("w2", "x")] = Cell(values=[0.5], percent=True)
    assert t.prune() == (["white-box PGD", "black-box PGD"], [])


def test_prune_drops_an_emptied_group_and_keeps_a_full_table_whole() -> None:
    from entrobust.report.results import Cell
    from entrobust.report.tables import Table

    t = Table("t", "T", "src", ["a", "b", "c"], ["x", "y", "z"])
    t.column_groups = [("G1", 1), ("G2", 2)]
    t.row_groups = [("R1", 2), ("R2", 1)]
    t.cells[("a", "y")] = Cell(values=[0.5], percent=True)
    t.cells[("b", "z")] = Cell(values=[0.25], percent=True)
    rows, cols = t.prune()
    assert (rows, cols) == (["c"], ["x"])
    assert t.column_groups == [("G2", 2)] and t.row_groups == [("R1", 2)]
    assert t.prune() == ([], [])  # nothing left to drop


def test_every_cell_traces_to_stored_rows(study: Store) -> None:
    rs = ResultSet.from_store(study, experiment="hand")
    tables = build_tables(rs)
    assert {t.name for t in tables} >= {"ru-table1", "atent-table2", "minmax-table3", "geometry"}
    analyses = {a["id"]: a for a in study.analyses()}
    filled = 0
    for t in tables:
        for (row, col), cell in t.cells.items():
            if cell.empty:
                continue
            filled += 1
            assert len(cell.sources) == len(cell.values) == len(cell.runs), (t.name, row, col)
            for src, value, run in zip(cell.sources, cell.values, cell.runs, strict=True):
                kind, ident = src.split(":")
                if kind == "evaluation":
                    ev = study.evaluation(int(ident))
                    assert ev.run_id == run and math.isclose(ev.robust_acc, value)
                else:
                    a = analyses[int(ident)]
                    assert a["run_id"] == run and value in [
                        v for v in a["result"].values() if isinstance(v, float)
                    ]
    assert filled >= 30


def test_report_files_are_self_contained_and_traceable(study: Store, tmp_path: Path) -> None:
    rep = write_report(study, tmp_path / "out", experiment="hand", title="Hand study")
    html = rep.paths["html"].read_text(encoding="utf-8")
    md = rep.paths["markdown"].read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert not re.search(r"""(src|href)=["'](https?:|//|/)""", html)  # no external assets
    assert not re.search(r"<link|<script\s+src", html)
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert images and all(s.startswith("data:image/png;base64,") for s in images)
    assert len(images) == len(rep.figures) >= 4  # eps-curve, steps-curve, training, weights ...
    assert "not run" in html and "Claims check" in html and "Gradient-obfuscation audit" in html
    data = json.loads(
        re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    )
    ru = next(t for t in data["tables"] if t["name"] == "ru-table1")
    (cell,) = [
        c
        for c in ru["cells"]
        if c["row"] == "PGD10-32" and c["column"] == "PAT-EntM" and c["setting"] == "white-box"
    ]
    assert cell["mean"] == pytest.approx(0.745) and len(cell["sources"]) == 2
    for src in cell["sources"]:
        assert f'data-sources="{" ".join(cell["sources"])}"' in html
        assert study.evaluation(int(src.split(":")[1])).attack == "PGD10-32"
    assert "| Clean |" in md and "![" in md and "## Claims check" in md
    for name in re.findall(r"\]\((plots/[^)]+)\)", md):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    assert json.loads(rep.paths["json"].read_text())["tables"]


def test_unknown_experiment_and_run_ids_are_clear_errors(study: Store) -> None:
    from entrobust.errors import EntrobustError

    with pytest.raises(EntrobustError, match=r"no experiment 'nope'.*experiments: hand"):
        ResultSet.from_store(study, experiment="nope")
    with pytest.raises(EntrobustError, match="run id 'zzzz' matches 0 runs"):
        ResultSet.from_store(study, run_ids=["zzzz"])
    some = ResultSet.from_store(study, experiment="hand").runs[0].id
    assert [r.id for r in ResultSet.from_store(study, run_ids=[some[:6]]).runs] == [some]


# ------------------------------------------------------------------------------- issue 16
def test_report_json_tells_black_box_rows_by_a_field_not_by_whitespace(study: Store, tmp_path: Path) -> None:
    rep = write_report(study, tmp_path / "out", experiment="hand")
    data = json.loads(rep.paths["json"].read_text(encoding="utf-8"))
    ru = next(t for t in data["tables"] if t["name"] == "ru-table1")
    for c in ru["cells"]:
        assert c["row"] == c["row"].strip()
    black = [c for c in ru["cells"] if c["row"] == "PGD10-32" and c["setting"] == "black-box"]
    white = [c for c in ru["cells"] if c["row"] == "PGD10-32" and c["setting"] == "white-box"]
    assert len(black) == len(white) == len(ru["columns"])
    entm = next(c for c in black if c["column"] == "EntM")
    assert entm["mean"] == pytest.approx(0.5) and entm["n"] == [100]
    settings = {r["setting"] for r in ru["rows"] if r["row"] == "PGD10-32"}
    assert settings == {"white-box", "black-box"}


def test_every_table_row_shows_eps_and_n_and_ru_names_in_words(study: Store, tmp_path: Path) -> None:
    rep = write_report(study, tmp_path / "out", experiment="hand")
    ru = next(t for t in rep.tables if t.name == "ru-table1")
    assert ru.eps_text("PGD10-32") == "32/255" and ru.n_text("PGD10-32") == "100"
    assert ru.eps_text("Clean") == "0"
    assert ru.plain("PGD10-32") == "PGD, 10 steps, ε = 32/255"
    atent = next(t for t in rep.tables if t.name == "atent-table2")
    assert atent.eps_text("PAT") in ("0.3", "–")  # clean ε = 0 is not listed beside attacked numbers
    html = rep.paths["html"].read_text(encoding="utf-8")
    md = rep.paths["markdown"].read_text(encoding="utf-8")
    assert "PGD, 10 steps, ε = 32/255" in html and "PGD10-32 (PGD, 10 steps, ε = 32/255)" in md
    assert "<th title=" in html and ">ε</th>" in html and ">n</th>" in html
    assert "| Attacks | ε | n |" in md
    assert re.search(r"\| PGD10-32 \(PGD, 10 steps, ε = 32/255\) \| 32/255 \| 100 \|", md)


def test_kanai_table_says_its_eps_and_each_rows_example_count() -> None:
    from entrobust.report.results import RunInfo

    run = RunInfo("r1", "AT", "kanai/at", "mnist5k", "cnn4", 0, True, "g")
    aa = {"suite": {"name": "autoattack-standard"}}
    pgd = {"entry": {"attack": "pgd", "kwargs": {"steps": 20}}, "suite": {"name": "x"}}
    rs = ResultSet(
        runs=[run],
        evaluations=[
            EvalRecord("r1", "aa", "worst-case", "linf", 0.3, 100, 0.9, 0.4, row="worst-case", spec=aa, id=1),
            EvalRecord("r1", "pgd", "PGD-20", "linf", 0.3, 200, 0.9, 0.5, attack_name="pgd", spec=pgd, id=2),
        ],
    )
    (t,) = TABLES.get("kanai-table1").build(rs)
    assert "ε = 0.3" in t.title
    aa_row, pgd_row = t.rows
    assert (t.eps_text(aa_row), t.n_text(aa_row)) == ("0.3", "100")
    assert (t.eps_text(pgd_row), t.n_text(pgd_row)) == ("0.3", "200")


def test_tables_read_each_datasets_own_default_eps() -> None:
    """One rule for a dataset's main ε: the tables read the ε training and the audit use (digits
    0.1, not the 0.3 of 28×28 MNIST)."""
    from entrobust.data.info import DATASET_INFO, default_threat
    from entrobust.report.results import RunInfo

    run = RunInfo("r1", "AT", "kanai/at", "digits", "lenet5", 0, True, "g")
    rows = [
        EvalRecord("r1", "pgd", "PGD-20", "linf", e, 100, 0.9, acc, attack_name="pgd",
                   spec={"entry": {"attack": "pgd", "kwargs": {"steps": 20}}}, id=i)
        for i, (e, acc) in enumerate(((0.1, 0.6), (0.3, 0.2)), 1)
    ]  # fmt: skip
    (t,) = TABLES.get("kanai-table1").build(ResultSet(runs=[run], evaluations=rows))
    assert "digits: ℓ∞ ε = 0.1" in t.title
    assert t.cell("digits (PGD, lenet5)", "AT").mean == pytest.approx(0.6)
    from entrobust.report.tables import _main_eps

    assert all(_main_eps(d) == default_threat(d)[1] for d in DATASET_INFO)


def test_geometry_accuracy_is_in_percent_like_every_other_accuracy(study: Store) -> None:
    rs = ResultSet.from_store(study, experiment="hand")
    (t,) = TABLES.get("geometry").build(rs)
    acc = t.cell("Accuracy (ℓ2 PGD20-0.5)", "Normal")
    assert acc.percent and acc.text().startswith("50.0")
    assert not t.cell("M_f,x", "Normal").percent


def test_plain_attack_names() -> None:
    from entrobust.report.tables import eps_text, plain_attack_name

    assert plain_attack_name("PGD10-48") == "PGD, 10 steps, ε = 48/255"
    assert plain_attack_name("FGSM_32") == "FGSM, ε = 32/255"
    assert plain_attack_name("CW20-8").endswith("20 steps, ε = 8/255")
    assert plain_attack_name("apgd-ce") == ""
    assert [eps_text(e) for e in (0.3, 8 / 255, 2.0, 0.0)] == ["0.3", "8/255", "2", "0"]


def test_twelve_series_get_twelve_distinct_styles() -> None:
    from entrobust.report.plots import _styles

    labels = [f"m{i}" for i in range(12)]
    st = _styles(labels)
    assert len({s["color"] for s in st.values()}) == 12
    assert len({s["marker"] for s in st.values()}) == 12


def test_loss_surfaces_share_one_colour_scale() -> None:
    from entrobust.report.plots import shared_levels

    levels = shared_levels([[[0.0, 1.0], [2.0, float("nan")]], [[5.0, 3.0]]], 5)
    assert len(levels) == 6
    assert levels[0] == pytest.approx(0.0) and levels[-1] == pytest.approx(5.0)


def test_weight_histograms_are_small_multiples(study: Store) -> None:
    from PIL import Image

    from entrobust.report.plots import weight_histograms

    rs = ResultSet.from_store(study, experiment="hand")
    (fig,) = weight_histograms(rs)
    import io

    width, _ = Image.open(io.BytesIO(fig.png)).size
    assert width > 600 and "One panel per model" in fig.caption  # a grid of panels, not one overlay


def test_to_records_and_csv_share_one_shape(study: Store) -> None:
    import csv
    import io

    from entrobust.report.results import RECORD_FIELDS, write_csv

    rs = ResultSet.from_store(study, experiment="hand")
    recs = rs.to_records()
    assert len(recs) == len([e for e in rs.evaluations if e.run_id in {r.id for r in rs.runs}])
    assert all(tuple(r) == RECORD_FIELDS for r in recs)
    assert {r["setting"] for r in recs} == {"white-box", "black-box"}
    buf = io.StringIO()
    assert write_csv(recs, buf) == len(recs)
    back = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(back) == len(recs)
    for a, b in zip(recs, back, strict=True):
        assert b["source"] == a["source"] and b["label"] == a["label"]
        assert float(b["robust_acc"]) == pytest.approx(a["robust_acc"])
        assert float(b["eps"]) == pytest.approx(a["eps"])


def test_to_pandas_matches_the_records_or_says_how_to_install(study: Store) -> None:
    rs = ResultSet.from_store(study, experiment="hand")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            rs.to_pandas()
        pytest.skip("pandas is not installed: checked the install hint only")
    df = rs.to_pandas()
    assert list(df.columns) == list(__import__("entrobust.report.results").report.results.RECORD_FIELDS)
    assert len(df) == len(rs.to_records())
