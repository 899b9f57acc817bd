"""Escalation on evidence (issue 17.4) and the audit's reuse of an evaluation's points (17.7).

The trap is ``Scaled`` (see ``test_alarms.py``): a linear model whose logits are multiplied by
1000, so CE-PGD cannot move while margin losses break almost every point. A study that evaluates
it with CE-PGD alone shows a high robust accuracy; its audit fails ``gradients`` / ``loss-gap``,
and the escalation adds the margin-loss rows that bring the worst case down.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from _traps import EPS, C, D, Detached, Scaled, points
from entrobust.attacks import ThreatModel, build_attack
from entrobust.diagnostics.obfuscation import _attack_correct, _steps_curve, audit
from entrobust.evaluation.adaptive import (
    DEFAULT_ROWS,
    MARGIN_ROWS,
    broken_indices,
    escalation,
    nondifferentiable_modules,
)
from entrobust.experiments.runner import Progress, _Runner, stored_broken
from entrobust.experiments.spec import experiment_from_dict

torch.set_num_threads(1)

PLAIN = "pgd:steps=20:step_size=0.01:label=PGD-20"


class Round(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 4) / 4


def check(name: str, status: str) -> dict[str, str]:
    return {"name": name, "status": status}


# ------------------------------------------------------------------------------- the mapping


def test_a_clean_deterministic_model_gets_only_the_documented_default() -> None:
    passed = {"status": "pass", "checks": [check(n, "pass") for n in ("determinism", "gradients", "square")]}
    esc = escalation(passed, stochastic=False)
    assert esc.rows == DEFAULT_ROWS and not esc.transfer and not esc.advice
    assert escalation(None).rows == DEFAULT_ROWS
    assert esc.suite("quick") == "quick," + DEFAULT_ROWS[0]


@pytest.mark.parametrize(
    ("evidence", "stochastic", "wanted"),
    [
        ([check("determinism", "fail")], False, ["autoattack-rand"]),
        ([], True, ["autoattack-rand"]),
        ([check("gradients", "warn")], False, list(MARGIN_ROWS)),
        ([check("loss-gap", "fail")], False, list(MARGIN_ROWS)),
        ([check("square", "warn")], False, ["square:n_queries=20000:p_init=0.8:restarts=2"]),
        ([check("random-search", "fail")], False, ["square:n_queries=20000:p_init=0.8:restarts=2"]),
        ([check("strong-attack", "fail")], False, ["autoattack-standard"]),
        ([check("steps-curve", "warn")], False, ["apgd-ce:n_iter=500:restarts=2"]),
    ],
)
def test_each_kind_of_evidence_adds_its_rows(
    evidence: list[dict[str, str]], stochastic: bool, wanted: list[str]
) -> None:
    esc = escalation({"status": "fail", "checks": evidence}, stochastic=stochastic)
    assert set(wanted) <= set(esc.rows)
    assert set(esc.rows) - set(wanted) <= set(DEFAULT_ROWS)  # nothing the evidence did not ask for
    if "square" not in {c["name"] for c in evidence} and "random-search" not in {c["name"] for c in evidence}:
        assert DEFAULT_ROWS[0] in esc.rows


def test_transfer_needs_a_surrogate_and_bpda_is_advised_by_name() -> None:
    failed = {"status": "fail", "checks": [check("transfer-gap", "fail")]}
    assert escalation(failed, surrogate=True).transfer
    without = escalation(failed, surrogate=False)
    assert not without.transfer and any("transfer" in a for a in without.advice)
    quantized = nn.Sequential(Round(), nn.Flatten(), nn.Linear(D, C))
    x = torch.rand(4, 1, 8, 8)
    assert nondifferentiable_modules(quantized, x) == ["0"]  # Flatten passes gradients
    assert nondifferentiable_modules(nn.Sequential(nn.Flatten(), nn.Linear(D, C)), x) == []
    esc = escalation(None, nondifferentiable=["0"])
    assert any("--bpda 0" in a for a in esc.advice)
    assert not escalation(None, nondifferentiable=["0"], bpda="0").advice


# ------------------------------------------------------------------------ run --adaptive


EXPERIMENT = {
    "name": "escalate",
    "scale": "tiny",
    "datasets": ["mnist5k"],
    "seeds": [0],
    "threads": 1,
    "device": "cpu",
    "defense": [{"preset": "kanai/at", "label": "AT"}],
    "evaluation": [{"name": "plain", "suite": PLAIN, "eps": [EPS]}],
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


def runner(ws: Path, model: nn.Module, out: io.StringIO) -> _Runner:
    r = _Runner(experiment_from_dict(EXPERIMENT), ws, Progress(out), progress=False)
    r.register()
    data = points()
    r.model = lambda k, which="last": model  # type: ignore[method-assign]
    r.dataset = lambda *a, **kw: data  # type: ignore[method-assign]
    return r


def test_run_adaptive_escalates_a_flagged_model_and_reports_the_lower_worst_case(tmp_path: Path) -> None:
    out = io.StringIO()
    r = runner(tmp_path, Scaled(), out)
    r.evaluate_one(r.exp.evaluations[0], 0, "1/1")
    r.analyse_run(r.exp.analyses[0], 0, "1/1")
    units = {u.key: u for u in r.units(("train", "evaluate", "analyse"), adaptive=True)}
    assert units["adaptive:0"].deps == ("analysis:audit:0",)
    assert "adaptive:0" not in {u.key for u in r.units(("analyse",))}
    assert not r.unit_is_done(units["adaptive:0"])
    r.escalate_one(0)
    rid = r.ids[0]
    worst = {
        ("adaptive" if e.spec.get("adaptive") else e.evaluation): e
        for e in r.store.evaluations(rid)
        if e.row == "worst-case"
    }
    plain, adaptive = worst["plain"], worst["adaptive"]
    assert plain.robust_acc >= 0.5  # CE-PGD is stuck on the saturated softmax
    assert adaptive.robust_acc <= plain.robust_acc - 0.4 and adaptive.n == plain.n
    added = adaptive.spec["adaptive"]["added"]
    assert set(MARGIN_ROWS) <= set(added) and adaptive.spec["adaptive"]["escalates"] == plain.id
    # per example: every point the plain evaluation broke stays broken
    before = {x["idx"] for x in r.store.examples(plain.id) if x["success"]}
    after = {x["idx"] for x in r.store.examples(adaptive.id) if x["success"]}
    assert before <= after and len(after) == round((1 - adaptive.robust_acc) * adaptive.n)
    text = out.getvalue()
    assert "adaptive AT" in text and "adaptive worst case" in text
    (line,) = r.flag_summary()
    assert line.startswith("⚑ AT:") and "adaptive ε=0.3" in line
    # the report: the plain row is overstated next to the escalated worst case, and flagged
    from entrobust.report import ResultSet, build_tables

    (t,) = build_tables(ResultSet.from_store(r.store.raw, experiment="escalate"), ["atent-table2"])
    cell = t.cell("ℓ∞ PGD-AT", "ℓ∞ PGD-20 ε=0.3")
    assert "‼" in cell.text() and "⚑" in cell.text()
    assert any("overstated" in note and "apgd-dlr says" in note for note in t.notes)
    # resumable: done once, skipped after; the audit's reference ignores the escalation
    assert r.unit_is_done(units["adaptive:0"])
    r.escalate_one(0)
    assert "adaptive AT (mnist5k" in out.getvalue() and "done before, skipped" in out.getvalue()
    assert all(r.unit_is_done(u) for u in r.units(("analyse",), adaptive=True))


def test_a_stored_escalation_made_under_other_rules_is_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage hash covers the rows the evidence chose, not only the evidence: when the rules
    choose other rows for the same audit, the stored escalation is stale and runs again."""
    import dataclasses

    from entrobust.evaluation import adaptive

    out = io.StringIO()
    r = runner(tmp_path, Scaled(), out)
    r.evaluate_one(r.exp.evaluations[0], 0, "1/1")
    r.analyse_run(r.exp.analyses[0], 0, "1/1")
    (unit,) = [u for u in r.units(("analyse",), adaptive=True) if u.key == "adaptive:0"]
    r.escalate_one(0)
    assert r.unit_is_done(unit)
    rules = adaptive.escalation

    def fewer_rows(*args: object, **kwargs: object) -> adaptive.Escalation:
        esc = rules(*args, **kwargs)  # type: ignore[arg-type]
        return dataclasses.replace(esc, rows=esc.rows[:1])

    monkeypatch.setattr(adaptive, "escalation", fewer_rows)
    assert not r.unit_is_done(unit)
    r.escalate_one(0)
    assert out.getvalue().count("adaptive worst case") == 2
    (stored,) = [e for e in r.store.evaluations(r.ids[0]) if e.spec.get("adaptive") and e.row == "worst-case"]
    assert len(stored.spec["adaptive"]["added"]) == 1
    assert r.unit_is_done(unit)


def test_run_adaptive_leaves_a_model_whose_audit_passed_alone(tmp_path: Path) -> None:
    out = io.StringIO()
    r = runner(tmp_path, Scaled(1.0), out)  # the honest linear model: CE-PGD works
    r.evaluate_one(r.exp.evaluations[0], 0, "1/1")
    r.analyse_run(r.exp.analyses[0], 0, "1/1")
    assert r.store.analysis(r.ids[0], "audit")["status"] == "pass"
    r.escalate_one(0)
    assert not [e for e in r.store.evaluations(r.ids[0]) if e.spec.get("adaptive")]
    assert "nothing to escalate" in out.getvalue()


# ------------------------------------------------------------- reuse of the evaluation's points


def test_the_audit_reuses_points_the_evaluation_broke() -> None:
    from entrobust.evaluation import evaluate

    x, y = points(40)
    model = Detached()  # every gradient attack is stuck; a gradient-free evaluation is not
    res = evaluate(model, (x, y), "square:n_queries=300:p_init=0.8", [EPS], progress=False)
    broken = broken_indices(res, EPS, "linf")
    assert broken.numel() >= 20
    kw = {"n": 40, "pgd_steps": 10, "strong_iter": 10, "random_search_samples": 200, "square_queries": 100}
    checks = ["random-search", "square", "strong-attack"]
    plain = audit(model, (x, y), ThreatModel("linf", EPS), checks=checks, **kw)
    reused = audit(model, (x, y), ThreatModel("linf", EPS), checks=checks, known_broken=broken, **kw)
    for name in ("random-search", "square"):
        ev_plain, ev_reused = plain.check(name).evidence, reused.check(name).evidence
        assert ev_reused["searched"] < ev_plain["searched"]  # broken points are not searched again
        assert ev_reused["broken_by_evaluation"] > 0
    strong = reused.check("strong-attack").evidence
    assert strong["apgd_accuracy"] <= 1 - broken.numel() / 40 + 1e-9  # the evaluation's breaks count
    assert reused.check("strong-attack").status == "fail"
    assert reused.settings["known_broken"] == broken.numel()


def test_broken_indices_reads_saved_and_json_results(tmp_path: Path) -> None:
    from entrobust.errors import ConfigError
    from entrobust.evaluation import evaluate

    x, y = points(24)
    res = evaluate(Scaled(1.0), (x, y), "pgd:steps=10", [0.1, EPS], progress=False)
    want = res.indices[~res.robust_mask(EPS)].sort().values
    assert want.numel() > 0
    saved = res.save(tmp_path / "ev")
    (tmp_path / "ev2.json").write_text(json.dumps(res.to_dict(per_example=True)))
    assert torch.equal(broken_indices(saved, EPS), want)
    assert torch.equal(broken_indices(tmp_path / "ev2.json", EPS), want)
    assert torch.equal(broken_indices(res, 0.1), res.indices[~res.robust_mask(0.1)].sort().values)
    with pytest.raises(ConfigError, match="no attack"):
        broken_indices(res, 0.2)


def test_stored_broken_points_feed_the_runner_audit(tmp_path: Path) -> None:
    out = io.StringIO()
    r = runner(tmp_path, Scaled(1.0), out)
    r.evaluate_one(r.exp.evaluations[0], 0, "1/1")
    broken = stored_broken(r.store, r.ids[0], EPS, "linf")
    assert broken  # the honest model loses points to CE-PGD
    r.analyse_run(r.exp.analyses[0], 0, "1/1")
    assert r.store.analysis(r.ids[0], "audit")["settings"]["known_broken"] == len(broken)


# ------------------------------------------------------------------- batched steps curve


class Valley(nn.Module):
    """Margin ℓ(u) = 2(u − 0.75) − 0.5·exp(−((u − 0.52)/0.003)²) of the pixel mean u: small
    steps are trapped before the dip, large ones jump over it (a curve that changes with k)."""

    def forward(self, x: Tensor) -> Tensor:
        u = x.flatten(1).mean(1)
        ell = 2 * (u - 0.75) - 0.5 * torch.exp(-(((u - 0.52) / 0.003) ** 2))
        return torch.stack([torch.zeros_like(ell), ell], dim=1)


@pytest.mark.parametrize("grid", [(8, 16, 32, 64, 128, 256), (8, 16, 400, 500)])
def test_batched_steps_curve_equals_separate_pgd_runs(grid: tuple[int, ...]) -> None:
    """One stacked pass (checkpoints of the longest run of each step size; at ε = 0.3 steps 400
    and 500 share the 1/510 floor) against one ``pgd`` call per step count, as before."""
    g = torch.Generator().manual_seed(0)
    base = 0.40 + 0.2 * torch.rand(30, 1, 1, 1, generator=g)
    x = (base + 0.05 * torch.rand(30, 1, 4, 4, generator=g)).double()
    y = torch.zeros(30, dtype=torch.long)
    y[::9] = 1  # a few misclassified points: counted as broken, never attacked
    model = Valley()
    clean = model(x).argmax(1).eq(y)
    threat = ThreatModel("linf", EPS)
    sizes = [max(1 / 510, 2 * EPS / k) for k in grid]
    separate = []
    for k, a in zip(grid, sizes, strict=True):
        pgd = build_attack("pgd", threat, seed=0, steps=k, step_size=a)
        separate.append(int(_attack_correct(model, pgd, x, y, 16, 1, clean).sum()))
    batched = _steps_curve(model, threat, x, y, clean, grid, sizes, 16, 1, 0, 1)
    assert [round(v * 30) for v in batched] == separate
    assert len(set(separate)) > 1  # the curve moves: the comparison can fail


# ------------------------------------------------------------------------------------ the CLI


def test_audit_from_eval_reuses_the_saved_evaluation(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrobust.cli import main

    ev = tmp_path / "ev.json"
    common = ["--eps", "0.1", "--no-progress"]
    assert main(["eval", str(ckpt), "--suite", "pgd:steps=5", "--n", "60", "--json", str(ev), *common]) == 0
    doc = json.loads(ev.read_text())
    broken = {r["index"] for r in doc["examples"] if not r["robust"]}
    out = tmp_path / "audit"
    args = ["audit", str(ckpt), "--eps", "0.1", "--n", "60", "--out", str(out), "--quiet"]
    args += ["--checks", "random-search,strong-attack", "--random-search-samples", "50"]
    assert main([*args, "--from-eval", str(ev)]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["settings"]["from_eval"] == str(ev)
    assert 0 < report["settings"]["known_broken"] <= len(broken)  # the audited ones it broke
    strong = next(c for c in report["checks"] if c["name"] == "strong-attack")
    assert strong["evidence"]["reference_accuracy"] == pytest.approx(doc["robust_accuracy_by_eps"][0][1])


def test_eval_adaptive_prints_its_evidence_and_adds_the_rows(
    ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrobust.cli import main

    args = ["eval", str(ckpt), "--suite", "fgsm", "--eps", "0.1", "--n", "16", "--no-progress"]
    assert main([*args, "--adaptive"]) == 0
    text = capsys.readouterr().out
    assert "adaptive: no stored audit; probing 64 points" in text
    assert "square(n_queries=5000, p_init=0.8)" in text  # the documented default row ran
    assert "the worst case covers every row" in text
