"""evaluate(): per-example worst case, the ε cascade, records, resume (SPEC §3 conventions, §8)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _evaluation_fakes as fk
from entrobust.errors import ConfigError, DataError
from entrobust.evaluation import EvalResult, SuiteEntry, build_plan, evaluate, get_suite

torch.set_num_threads(1)


def _suite(rows: list[tuple[int, float]], random: bool = False) -> list[SuiteEntry]:
    return [
        SuiteEntry(f"A{k}", fk.scripted, {"bit": bit, "strength": s, "random": random, "label": f"A{k}"})
        for k, (bit, s) in enumerate(rows)
    ]


def _run(x, y, rows, eps, **kw) -> EvalResult:
    kw.setdefault("progress", False)
    return evaluate(fk.FlagModel(), (x, y), _suite(rows, kw.pop("random", False)), eps, **kw)


# ------------------------------------------------------------------------------ worst case
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 2), st.floats(0.3, 0.95)),
        min_size=1,
        max_size=3,
    ),
    eps=st.lists(st.floats(0.0, 0.6), min_size=1, max_size=3),
    mode=st.sampled_from(["cascade", "independent"]),
    bs=st.integers(1, 40),
)
def test_worst_case_matches_ground_truth(rows, eps, mode, bs):
    x, y = fk.make_data(60, seed=len(rows))
    res = _run(x, y, rows, eps, mode=mode, batch_size=bs)
    clean = res.clean["clean_correct"]
    assert torch.equal(clean, fk.FlagModel()(x).argmax(1).eq(y))
    prev = clean
    for e in sorted(set(eps)):
        robust = res.robust_mask(e)
        assert torch.equal(robust, ~fk.expected_fooled(x, y, rows, e)), (e, mode)
        assert not bool((robust & ~clean).any())  # robust ⇒ correct, per example
        assert not bool((robust & ~prev).any())  # monotone in ε, per example
        prev = robust
    accs = [res.robust_accuracy(e) for e in sorted(set(eps))]
    assert accs == sorted(accs, reverse=True)
    assert res.robust_accuracy() == pytest.approx(float(prev.float().mean()))


def test_fooled_examples_are_not_attacked_again():
    fk.CALLS.clear()
    x, y = fk.make_data(80, seed=3)
    rows = [(0, 0.9), (1, 0.6), (2, 0.9)]
    eps = [0.3, 0.1, 0.2]  # any order: run ascending
    res = _run(x, y, rows, eps, batch_size=16)
    fooled_before: set[int] = set(i for i, c in enumerate(res.clean["clean_correct"].tolist()) if not c)
    for step in res.steps:
        attacked = fk.CALLS[(step.label, round(step.eps, 9))]
        assert len(attacked) == len(set(attacked))
        assert not (set(attacked) & fooled_before), f"{step.label} at {step.eps} re-attacked fooled points"
        robust_now = set(range(80)) - fooled_before
        assert set(attacked) == robust_now  # exactly the still-robust points
        ran = res.records["ran"][step.index].nonzero().flatten().tolist()
        assert sorted(ran) == sorted(attacked)
        fooled_before |= {i for i in attacked if bool(res.records["success"][step.index, i])}
    # the cascade saves work: fewer attack calls than independent mode on the same problem
    n_cascade = sum(len(v) for v in fk.CALLS.values())
    fk.CALLS.clear()
    ind = _run(x, y, rows, eps, batch_size=16, mode="independent")
    n_indep = sum(len(v) for v in fk.CALLS.values())
    assert n_cascade < n_indep
    for e in eps:
        assert torch.equal(ind.robust_mask(e), res.robust_mask(e))


def test_fixed_eps_rows_run_only_at_their_eps():
    x, y = fk.make_data(30)
    suite = [
        SuiteEntry("free", fk.scripted, {"bit": 0, "label": "free"}),
        SuiteEntry("fixed", fk.scripted, {"bit": 1, "label": "fixed"}, eps=0.25),
    ]
    cols, steps = build_plan(get_suite(suite), [0.1, 0.3], "linf")
    assert cols == pytest.approx([0.1, 0.25, 0.3])
    assert [(s.label, s.eps) for s in steps] == [("free", 0.1), ("fixed", 0.25), ("free", 0.3)]
    res = evaluate(fk.FlagModel(), (x, y), suite, [0.1, 0.3], progress=False)
    t = res.table()
    assert "eps=0.25" in t and "fixed" in t
    # a row that fixes its eps needs no eps argument
    only = evaluate(fk.FlagModel(), (x, y), suite[1:], progress=False)
    assert only.eps == pytest.approx([0.25])
    with pytest.raises(ConfigError, match="needs eps"):
        evaluate(fk.FlagModel(), (x, y), suite, progress=False)


def test_records_and_stats_are_consistent():
    x, y = fk.make_data(70, seed=5)
    rows = [(0, 0.9), (1, 0.9)]
    res = _run(x, y, rows, [0.1, 0.3], batch_size=9)
    stats = res.attack_stats()
    cum = [s["cumulative_accuracy"] for s in stats]
    assert cum == sorted(cum, reverse=True)
    for s in stats:
        ran = res.records["ran"][s["index"]]
        assert s["n_attacked"] == int(ran.sum())
        assert s["n_fooled"] == int((res.records["success"][s["index"]] & ran).sum())
        d = res.records["distance"][s["index"]][ran]
        assert bool((d <= s["eps"] + 1e-6).all())
        # margin is negative exactly where the example was fooled
        m = res.records["margin"][s["index"]][ran]
        assert torch.equal(m < 0, res.records["success"][s["index"]][ran])
    last_at = {}
    for s in stats:
        last_at[s["eps"]] = s["cumulative_accuracy"]
    for e, acc in last_at.items():
        assert acc == pytest.approx(res.robust_accuracy(e))
    # adversarial examples kept: each fools the model and stays inside its step's threat model
    found = res.adv_found
    assert bool(found.any())
    adv = res.adv_x[found]
    pred = fk.FlagModel()(adv).argmax(1)
    assert bool(pred.ne(res.y[found]).all())
    step_eps = torch.tensor([res.steps[int(b)].eps for b in res.broken_step[found]])
    assert bool(((adv - x[found]).flatten(1).abs().amax(1) <= step_eps + 1e-6).all())
    recs = res.example_records()
    assert len(recs) == 70
    for r in recs:
        if r["fooled_by"] is not None:
            assert r["success"] and r["margin"] < 0 and r["first_success"] == 3
    json.dumps(res.to_dict())  # JSON-able


def test_table_and_save_load(tmp_path):
    x, y = fk.make_data(40)
    res = _run(x, y, [(0, 0.9), (1, 0.5)], [0.1, 0.3])
    t = res.table()
    lines = t.splitlines()
    assert "eps=0.1" in lines[1] and "eps=0.3" in lines[1]
    assert any(line.startswith("A0") for line in lines) and any(
        line.startswith("worst case") for line in lines
    )
    worst = lines[-1].split()[2:]
    assert [float(v) for v in worst] == pytest.approx(
        [100 * res.robust_accuracy(e) for e in (0.1, 0.3)], abs=0.01
    )
    path = res.save(tmp_path / "res")
    back = EvalResult.load(path)
    assert back.table() == t
    assert torch.equal(back.broken_step, res.broken_step)
    assert back.adv_x is not None and torch.equal(back.adv_x, res.adv_x)
    assert back.to_dict(per_example=True)["examples"] == res.to_dict()["examples"]


# ------------------------------------------------------------------------------ inputs
def test_inputs_and_subset():
    x, y = fk.make_data(50)
    from entrobust.data import TensorData

    a = evaluate(fk.FlagModel(), TensorData(x, y, "toy"), _suite([(0, 0.9)]), 0.2, progress=False)
    b = evaluate(fk.FlagModel(), (x, y), _suite([(0, 0.9)]), [0.2], progress=False)
    assert torch.equal(a.broken_step, b.broken_step)
    sub = evaluate(fk.FlagModel(), (x, y), _suite([(0, 0.9)]), 0.2, max_examples=20, seed=4, progress=False)
    assert sub.n == 20 and torch.equal(sub.indices, sub.indices.sort().values)
    pos = sub.indices
    assert torch.equal(sub.robust_mask(), a.robust_mask()[pos])
    with pytest.raises(DataError):
        evaluate(fk.FlagModel(), (x * 2, y), _suite([(0, 0.9)]), 0.2, progress=False)
    with pytest.raises(ConfigError):
        evaluate(fk.FlagModel(), (x, y), _suite([(0, 0.9)]), -0.1, progress=False)
    with pytest.raises(ConfigError):
        evaluate(fk.FlagModel(), (x, y), _suite([(0, 0.9)]), 0.1, batch_size=0, progress=False)


# ------------------------------------------------------------------------------ resume
def _same(a: EvalResult, b: EvalResult) -> None:
    assert torch.equal(a.broken_step, b.broken_step)
    for k in a.records:
        assert torch.equal(a.records[k], b.records[k]) or (
            a.records[k].is_floating_point()
            and torch.equal(a.records[k].nan_to_num(-7), b.records[k].nan_to_num(-7))
        ), k
    assert a.adv_x is not None and b.adv_x is not None and torch.equal(a.adv_x, b.adv_x)


@pytest.mark.parametrize("crash_after", [0, 3, 9])
def test_resume_after_crash_equals_straight_run(tmp_path, crash_after):
    x, y = fk.make_data(90, seed=7)
    rows = [(0, 0.9), (1, 0.8), (2, 0.95)]
    kw = {"batch_size": 13, "random": True, "seed": 3}
    straight = _run(x, y, rows, [0.2, 0.4], **kw)
    state = tmp_path / "state"
    fk.CRASH.left = crash_after
    try:
        with pytest.raises(fk.Crash):
            _run(x, y, rows, [0.2, 0.4], state_path=state, **kw)
    finally:
        fk.CRASH.left = None
    resumed = _run(x, y, rows, [0.2, 0.4], state_path=state, **kw)
    _same(straight, resumed)
    # random draws really matter (the test could fail): another seed changes the outcome
    other = _run(x, y, rows, [0.2, 0.4], batch_size=13, random=True, seed=4)
    assert not torch.equal(other.broken_step, straight.broken_step)
    # a finished state just reloads
    again = _run(x, y, rows, [0.2, 0.4], state_path=state, **kw)
    _same(straight, again)


def test_resume_refuses_other_arguments(tmp_path):
    x, y = fk.make_data(30)
    state = tmp_path / "s"
    _run(x, y, [(0, 0.9)], [0.2], state_path=state)
    with pytest.raises(ConfigError, match="eps"):
        _run(x, y, [(0, 0.9)], [0.3], state_path=state)
    with pytest.raises(ConfigError, match="batch_size"):
        _run(x, y, [(0, 0.9)], [0.2], state_path=state, batch_size=7)
    m = fk.FlagModel()
    with torch.no_grad():
        m.scale.fill_(4.0)
    with pytest.raises(ConfigError, match="model"):
        evaluate(m, (x, y), _suite([(0, 0.9)]), [0.2], state_path=state, progress=False)


def test_progress_bar_runs(capsys):
    x, y = fk.make_data(20)
    res = _run(x, y, [(0, 0.9)], [0.2], progress=True)
    assert math.isfinite(res.clean_accuracy)
    assert "robust" in capsys.readouterr().err
