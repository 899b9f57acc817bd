"""Alarms reach the user wherever a robust accuracy is shown (issues 16.4 and 17.3–17.6).

The trap: ``Scaled`` — a linear model whose logits are multiplied by 1000. Its softmax saturates,
so the cross-entropy gradient underflows to exactly zero and CE-PGD cannot move, while the margin
(CW) loss — and AutoAttack's DLR — see the linear model and break almost every point. A study that
reports only CE-PGD would show a clean-looking, wrong robust accuracy; here the evaluation, the
runner's lines, the audit and the report's tables each flag it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from _traps import EPS, C, Detached, Scaled, points
from entrobust.attacks import ThreatModel
from entrobust.diagnostics.obfuscation import AUDIT_CHECKS, audit
from entrobust.experiments.runner import Progress, _Runner, audit_flag, evaluation_records, strongest_stored
from entrobust.experiments.spec import EvaluationSpec, experiment_from_dict
from entrobust.experiments.store import Store
from entrobust.report import ResultSet, build_tables

torch.set_num_threads(1)

SUITE = "pgd:steps=20:step_size=0.01:label=PGD-20,cw-pgd:steps=20:step_size=0.01:label=CW-20"


# ----------------------------------------------------------------------------------- evaluate()


def test_evaluate_warns_when_the_model_outputs_probabilities() -> None:
    from entrobust.evaluation import evaluate
    from entrobust.evaluation.evaluate import looks_like_probabilities

    x, y = points(16)
    probs = nn.Sequential(Scaled(1.0), nn.Softmax(dim=1))
    with pytest.warns(RuntimeWarning, match="look like probabilities"):
        res = evaluate(probs, (x, y), "pgd:steps=2", [EPS], progress=False)
    assert "WARNING: the model's outputs look like probabilities" in res.table()
    assert not looks_like_probabilities(Scaled(1.0)(x))  # logits: no alarm
    assert not looks_like_probabilities(torch.rand(4, 3) + 1.0)  # non-negative alone is no proof


# ------------------------------------------------------------------------- a one-run study


EXPERIMENT = {
    "name": "alarms",
    "scale": "tiny",
    "datasets": ["mnist5k"],
    "seeds": [0],
    "threads": 1,
    "device": "cpu",
    "defense": [{"preset": "kanai/at", "label": "AT"}],
    "evaluation": [{"name": "pgd-cw", "suite": SUITE, "eps": [EPS], "mode": "independent"}],
    "analysis": {
        "audit": {
            "eps": EPS,
            "n": 40,
            "pgd_steps": 10,
            "strong_iter": 10,
            "checks": ["gradients", "loss-gap", "strong-attack"],
        }
    },
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[_Runner, io.StringIO]:
    """The runner's own evaluate and audit units on the trap model (no training: the model and the
    data are handed in), writing to a real results store."""
    ws = tmp_path_factory.mktemp("alarms")
    out = io.StringIO()
    r = _Runner(experiment_from_dict(EXPERIMENT), Path(ws), Progress(out), progress=False)
    r.register()
    model, data = Scaled(), points()
    r.model = lambda k, which="last": model  # type: ignore[method-assign]
    r.dataset = lambda *a, **kw: data  # type: ignore[method-assign]
    r.evaluate_one(r.exp.evaluations[0], 0, "1/1")
    r.analyse_run(r.exp.analyses[0], 0, "1/1")
    return r, out


def test_the_audit_waits_for_the_runs_evaluations(study: tuple[_Runner, io.StringIO]) -> None:
    r, _ = study
    units = {u.key: u for u in r.units(("train", "evaluate", "analyse"))}
    assert "eval:pgd-cw:0" in units["analysis:audit:0"].deps  # before: the training only


def test_the_audit_gets_the_strongest_stored_result_as_its_reference(
    study: tuple[_Runner, io.StringIO],
) -> None:
    r, _ = study
    rid = r.ids[0]
    ref = strongest_stored(r.store, rid, EPS, "linf")
    rows = {e.attack: e.robust_acc for e in r.store.evaluations(rid) if abs(e.eps - EPS) < 1e-9}
    assert ref is not None and ref["accuracy"] == min(rows.values())
    assert rows["PGD-20"] >= rows["CW-20"] + 0.5  # CE-PGD is stuck, the margin loss is not
    stored = r.store.analysis(rid, "audit")
    assert stored["reference"]["evaluation"] == ref["evaluation"]
    strong = next(c for c in stored["checks"] if c["name"] == "strong-attack")
    assert strong["evidence"]["reference_accuracy"] == pytest.approx(ref["accuracy"])
    assert stored["status"] == "fail"
    # the same stage is done (same reference): a rerun skips it
    assert all(r.unit_is_done(u) for u in r.units(("analyse",)))


def test_the_audit_notices_an_attack_weaker_than_the_stored_one() -> None:
    """The audit's own PGD and APGD are stuck on a zero-gradient model; a stored gradient-free
    result (reference) says 0 %: ``strong-attack`` fails (before: no reference in studies)."""
    from entrobust.diagnostics.analysis import ANALYSES, AnalysisContext

    x, y = points(24)
    kind = ANALYSES.get("audit")
    params = kind.validate(
        {"eps": EPS, "n": 24, "pgd_steps": 5, "strong_iter": 5, "checks": ["strong-attack"]}
    )
    ref = {"accuracy": 0.0, "attack": "worst case of square", "n": 24, "evaluation": 1}
    res = kind.fn(AnalysisContext(dataset="mnist5k", model=Detached(), test=(x, y), reference=ref), params)
    check = res["checks"][0]
    assert check["name"] == "strong-attack" and check["status"] == "fail"
    assert check["evidence"]["gradient_worst_case_accuracy"] > 0.5 and res["reference"] == ref


def test_runner_prints_the_flags_beside_the_numbers(study: tuple[_Runner, io.StringIO]) -> None:
    r, out = study
    text = out.getvalue()
    assert "WARNING: AT: the gradient-obfuscation audit is FAIL" in text
    assert "gradients (fail)" in text and "loss-gap (fail)" in text
    summary = r.flag_summary()
    assert len(summary) == 1 and summary[0].startswith("⚑ AT:") and "stored worst cases" in summary[0]
    assert audit_flag("AT", {"status": "pass", "checks": []}) is None


def test_report_marks_overstated_and_audit_flagged_cells(study: tuple[_Runner, io.StringIO]) -> None:
    r, _ = study
    rs = ResultSet.from_store(r.store.raw, experiment="alarms")
    (t,) = build_tables(rs, ["atent-table2"])
    pgd = t.cell("ℓ∞ PGD-AT", "ℓ∞ PGD-20 ε=0.3")
    cw = t.cell("ℓ∞ PGD-AT", "ℓ∞ CW ε=0.3")
    clean = t.cell("ℓ∞ PGD-AT", "Benign")
    assert "‼" in pgd.text() and "⚑" in pgd.text()
    assert "⚑" in cw.text() and "‼" not in cw.text()  # CW-20 is the strongest: not overstated
    assert "⚑" not in clean.text()  # clean accuracy is no robustness claim
    notes = "\n".join(t.notes)
    assert "overstated" in notes and "CW-20 says" in notes
    assert "stored audit FAIL" in notes and "gradients" in notes
    (kanai,) = build_tables(rs, ["kanai-table1"])
    assert any("‼" in c.text() for c in kanai.cells.values())


def test_honest_numbers_are_not_flagged(tmp_path: Path) -> None:
    from entrobust.evaluation import evaluate

    x, y = points(24)
    model = Scaled(1.0)  # the same linear model without the saturation: CE-PGD works
    res = evaluate(model, (x, y), SUITE, [EPS], mode="independent", progress=False)
    store = Store(tmp_path / "results.sqlite")
    rid = store.add_run({"x": 1}, name="AT", experiment="e", dataset="mnist5k", model="m", seed=0)
    store.set_status(rid, "done")
    store.add_member("e", rid, "AT", {})
    spec = EvaluationSpec("pgd-cw", SUITE, eps=(EPS,), mode="independent")
    store.replace_evaluations(rid, "pgd-cw", evaluation_records(res, spec, rid))
    (t,) = build_tables(ResultSet.from_store(store, experiment="e"), ["atent-table2"])
    assert not any("‼" in c.text() or "⚑" in c.text() for c in t.cells.values())
    assert not any("overstated" in n for n in t.notes)


# ------------------------------------------------------------------------------ demo and report


def test_demo_audits_at_the_eps_of_its_robust_accuracies() -> None:
    from entrobust.experiments.demo import demo_experiment

    exp = demo_experiment("tiny")
    (a,) = [a for a in exp.analyses if a.kind == "audit"]
    assert math.isclose(float(a.params["eps"]), 0.3)  # before: 48/255
    assert any(ev.name == "autoattack" and 0.3 in ev.eps for ev in exp.evaluations)


def test_report_lists_every_audit_check() -> None:
    from entrobust.report import render

    assert render.AUDIT_CHECKS == AUDIT_CHECKS and len(AUDIT_CHECKS) == 11


def test_audit_check_list_in_the_docs_is_complete() -> None:
    text = (Path(__file__).parents[1] / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    for name in AUDIT_CHECKS:
        assert f"| `{name}` |" in text, name


def test_scaled_trap_is_what_it_claims() -> None:
    x, y = points(8)
    report = audit(Scaled(), (x, y), ThreatModel("linf", EPS), checks=["gradients"], n=8)
    assert report.check("gradients").evidence["zero_fraction"] == 1.0


def test_fallback_surrogate_is_distilled_from_the_target() -> None:
    """Labels that disagree with the target (a model trained on other data): the distilled
    surrogate follows the target — whose boundaries the transfer attack must cross — the
    label-only one (the old surrogate) does not."""
    from entrobust.diagnostics.surrogate import train_surrogate

    target = Scaled(1.0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(400, 1, 8, 8, generator=g)
    y = torch.randint(0, C, (400,), generator=g)  # the data's labels: unrelated to the target
    test = torch.rand(200, 1, 8, 8, generator=g)
    want = target(test).argmax(1)

    def agreement(distill: bool) -> float:
        sur = train_surrogate(target, (x, y), epochs=8, batch_size=50, distill=distill, lr=3e-3)
        return float(sur(test).argmax(1).eq(want).float().mean())

    plain, distilled = agreement(False), agreement(True)
    assert distilled >= plain + 0.2, (plain, distilled)


class Counting(nn.Module):
    """Scaled(1) counting forward calls and the rows they saw."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Scaled(1.0)
        self.calls = self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.inner(x)


def test_eps_curve_is_one_batched_pass_over_clean_correct_points() -> None:
    """Before: one PGD run per ε, over every point (also those misclassified without attack)."""
    x, y = points(20)
    y = torch.where(torch.arange(20) % 2 == 0, y, (y + 1) % C)  # half the points misclassified
    model = Counting()
    factors, steps = (0.0, 0.5, 1.0, 2.0, 4.0), 5
    report = audit(
        model,
        (x, y),
        ThreatModel("linf", 0.1),
        checks=["eps-curve"],
        n=20,
        eps_factors=factors,
        curve_steps=steps,
    )
    acc = report.check("eps-curve").evidence["accuracy"]
    assert acc[0] == pytest.approx(0.5) and acc[-1] == 0.0
    per_run = steps + 2  # a PGD run's forwards (steps + start / final checks), at least
    assert model.calls < 2 * per_run + 10  # one batched run, not one per ε (≥ 4 · per_run)
    assert model.rows < len(factors[1:]) * 20 * per_run  # never the misclassified half
