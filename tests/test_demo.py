"""``entrobust demo``: the embedded study is valid at both scales, and the whole main job runs end to
end at the tiny scale (one short epoch per defense), prints its progress, writes the report and
resumes instantly when run again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from entrobust.cli import main
from entrobust.errors import ConfigError
from entrobust.experiments.demo import DEMO_DEFENSES, demo_experiment
from entrobust.experiments.store import Store

REQUIRED = {"Normal", "EntM", "LS", "PAT", "PAT-EntM", "TRADES", "ℓ∞-ATENT", "Min-Max", "AT+EnSGD"}


def test_demo_definition_covers_the_key_defenses() -> None:
    exp = demo_experiment("cpu")
    labels = {d.name for d in exp.defenses}
    assert REQUIRED <= labels
    assert exp.scale == "cpu" and exp.datasets == ("mnist5k",)
    suites = {e.name: e.suite for e in exp.evaluations}
    assert suites["autoattack"] == "autoattack-standard"  # AutoAttack on a subset
    assert {a.kind for a in exp.analyses} >= {"audit", "geometry", "fuzziness", "toy"}
    plan = exp.plan()
    assert len(plan) == len(DEMO_DEFENSES)
    assert all(p.config.max_train_examples is None for p in plan)  # cpu presets, full mnist5k
    tiny = demo_experiment("tiny").plan()
    assert all(p.config.epochs == 1 and p.config.max_train_examples == 256 for p in tiny)
    with pytest.raises(ConfigError, match="demo scale must be one of tiny, cpu"):
        demo_experiment("huge")


SUBSET = ["TRADES", "Min-Max"]  # + their surrogates PAT and Normal; Std drops out of the Min-Max suite


def _demo_end_to_end_then_resume(
    out: Path, capsys: pytest.CaptureFixture[str], defenses: list[str] | None
) -> None:
    args = ["demo", "--scale", "tiny", "--out", str(out)]
    if defenses is not None:
        args += ["--defenses", ",".join(defenses)]
    expected = demo_experiment("tiny", defenses=defenses)
    assert main(args) == 0
    log = capsys.readouterr().out
    # progress: stage lines with elapsed time, every stage, the claims table and where the report is
    assert re.search(r"^\[\s*\d+\.\ds\] == train ==$", log, re.M)
    for stage in ("== evaluate ==", "== analyse ==", "== report =="):
        assert stage in log
    assert "Claims check" in log and "C11" in log
    # per-example rows exist: claims with a comparison show its effect, p and n, never "no data"
    assert "not enough data" not in log
    assert re.search(r"^C9 .* [+-]\d+\.\d pp \[[+-]\d+\.\d, [+-]\d+\.\d\].* \d+ +inconclusive$", log, re.M)
    assert f"Report: {out / 'report.html'}" in log
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "RU Table 1 layout" in html and "data:image/png;base64," in html
    assert ("Kanai Table 1 layout" in html) == any(d.label == "AT" for d in expected.defenses)
    assert (out / "report.md").exists()
    store = Store(out / "results.sqlite")
    runs = [r for r in store.runs() if r.preset]
    assert len(runs) == len(expected.defenses) and {r.status for r in runs} == {"done"}
    assert store.evaluations(evaluation="autoattack")
    assert len([a for a in store.analyses() if a["kind"] == "audit"]) == len(expected.defenses)
    n_rows = len(store.evaluations())

    # the second run finds everything done and only re-renders the report
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count("done before, skipped") >= len(expected.defenses) * 3
    assert "epoch 1/1" not in again
    assert len(store.evaluations()) == n_rows


def test_demo_subset_end_to_end_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every stage of the main job (train, white-box, black-box, AutoAttack, Min-Max suite, every
    analysis kind, claims, report) and its resume, on 4 of the 12 defenses."""
    _demo_end_to_end_then_resume(tmp_path / "demo", capsys, SUBSET)


@pytest.mark.slow
def test_tiny_demo_end_to_end_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _demo_end_to_end_then_resume(tmp_path / "demo", capsys, None)


def test_demo_subset_adds_surrogates_and_drops_empty_entries() -> None:
    exp = demo_experiment("tiny", defenses=SUBSET)
    assert [d.label for d in exp.defenses] == ["Normal", "PAT", "TRADES", "Min-Max"]
    suites = {e.name: e for e in exp.evaluations}
    assert suites["minmax"].only == ("Min-Max",)  # Std is not in the subset
    analyses = {a.kind: a for a in exp.analyses}
    assert analyses["geometry"].only == ("Normal", "PAT")
    only_std = demo_experiment("tiny", defenses=["Std"])
    assert [d.label for d in only_std.defenses] == ["Normal", "Std"]
    assert {a.kind for a in only_std.analyses} >= {"audit", "geometry"}  # geometry keeps Normal
    with pytest.raises(ConfigError, match=r"unknown demo defense\(s\) \['Nope'\]; valid: Normal, EntM"):
        demo_experiment("tiny", defenses=["Nope"])
