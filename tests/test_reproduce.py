"""The reproduction scale (``entrobust reproduce``): the four study files fill every paper table's
rows and columns, with three seeds for every defense a claim compares and the issue's test sizes.

Running it takes hours (docs/experiments.md, "Reproduction scale"); these tests check what it
would run, through the same loader and planner the runner uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from entrobust.cli import main
from entrobust.errors import ConfigError
from entrobust.experiments.reproduce import PAPERS, reproduction_experiments
from entrobust.report.results import ALIASES, normalize_label
from entrobust.report.tables import ATENT_ROWS, KANAI_COLS, MINMAX_COLS, RU_GROUPS

ROOT = Path(__file__).resolve().parents[1]
#: the defenses the claims (C1-C11) compare, per paper
COMPARED = {
    "ru": ("Normal", "EntM", "LS", "PAT", "PAT-EntM", "PAT-LS", "TRADES"),
    "atent": ("SGD", "Entropy SGD", "ℓ∞ PGD-AT", "TRADES", "ℓ∞ ATENT", "ℓ2 ATENT"),
    "minmax": MINMAX_COLS,
    "kanai": KANAI_COLS,
}
#: every column (or row) each paper's table names
TABLE = {
    "ru": tuple(c for _, cols in RU_GROUPS for c in cols),
    "atent": (*(r for r in ATENT_ROWS if r != "MMA"), "ℓ2 ATENT"),  # MMA: no preset
    "minmax": (*MINMAX_COLS, "Adv."),
    "kanai": KANAI_COLS,
}


@pytest.fixture(scope="module")
def exps() -> dict:
    return reproduction_experiments(folder=ROOT / "experiments")


def _seeds(exp, column: str) -> tuple[int, ...]:
    names = {normalize_label(n) for n in ALIASES.get(column, (column,))}
    for d in exp.defenses:
        if normalize_label(d.name) in names or normalize_label(d.preset) in names:
            return d.seeds or exp.seeds
    return ()


@pytest.mark.parametrize("paper", list(PAPERS))
def test_every_table_column_is_trained_and_compared_ones_with_three_seeds(exps: dict, paper: str) -> None:
    exp = exps[paper]
    missing = [c for c in TABLE[paper] if not _seeds(exp, c)]
    assert not missing, f"{paper}: no defense fills {missing}"
    few = {c: _seeds(exp, c) for c in COMPARED[paper] if len(_seeds(exp, c)) < 3}
    assert not few, f"{paper}: fewer than 3 seeds for compared defenses {few}"
    assert exp.datasets == ("mnist5k",) and exp.scale == "cpu"


@pytest.mark.parametrize("paper", list(PAPERS))
def test_attacks_run_on_the_sizes_the_reproduction_promises(exps: dict, paper: str) -> None:
    for ev in exps[paper].evaluations:
        need = 500 if "autoattack" in ev.suite or ev.suite == "strong" else 1000
        assert ev.max_examples is None or ev.max_examples >= need, (paper, ev.name, ev.max_examples)


def test_ru_white_box_rows_keep_the_papers_five_restarts(exps: dict) -> None:
    from entrobust.evaluation import get_suite

    (white,) = [ev for ev in exps["ru"].evaluations if ev.name == "white-box"]
    suite = get_suite(white.suite, "mnist5k")
    pgd = [e for e in suite.entries if e.attack.startswith("PGD")]
    assert pgd and all(e.kwargs.get("restarts", 5) == 5 for e in pgd)


def test_minmax_is_read_at_both_eps(exps: dict) -> None:
    eps = {e for ev in exps["minmax"].evaluations for e in ev.eps}
    assert 0.3 in eps and any(abs(e - 0.3 * 0.3081) < 1e-4 for e in eps)


def test_reproduce_dry_run_and_bad_papers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--dry-run", "--experiments", str(ROOT / "experiments")]) == 0
    out = capsys.readouterr().out
    assert all(f"{p}: " in out for p in PAPERS) and "training runs in all" in out
    assert main(["reproduce", "--dry-run", "--papers", "ru,nope"]) == 2
    with pytest.raises(ConfigError, match="not in"):
        reproduction_experiments(folder=ROOT / "no-such-folder-xyz")


def test_every_ru_column_has_a_proxy_for_its_black_box_cells(exps: dict, tmp_path: Path) -> None:
    """RU Table 9 fills the black-box rows of Normal and PAT too (RU §5.1: a proxy trained on the
    same data): every run of every RU defense has a surrogate run other than itself."""
    from entrobust.experiments.runner import _Runner

    r = _Runner(exps["ru"], tmp_path, lambda *_: None, progress=False)
    (black,) = [ev for ev in exps["ru"].evaluations if ev.transfer]
    missing = [
        (pr.label, pr.seed)
        for k, pr in enumerate(r.plan)
        if (s := r.surrogate_for(k, black.surrogate)) is None or s == k
    ]
    assert not missing, f"no proxy to transfer from for {missing}"
