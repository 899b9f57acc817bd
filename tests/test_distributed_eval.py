"""Sharded evaluation and audit on 2 gloo CPU ranks equal one process, example for example.

One spawn (a module fixture, about 4 s of start-up) runs everything the ranks have to do; the
tests compare its per-rank results with single-process runs of the same seeded work.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import _evaluation_fakes as fk
import entrobust
from _distributed import spawn
from entrobust.attacks import ThreatModel
from entrobust.diagnostics.obfuscation import AUDIT_CHECKS, AuditReport, audit
from entrobust.errors import ConfigError
from entrobust.evaluation import EvalResult, SuiteEntry, evaluate

pytestmark = pytest.mark.multiprocess  # gloo ranks: run alone, after the parallel part

torch.set_num_threads(1)

SUITE = "fgsm,pgd:steps=4:restarts=2"  # the pgd row has uniform random starts
EPS = [0.02, 0.06]
EVAL_KW: dict[str, Any] = {"batch_size": 7, "seed": 3, "progress": False, "mode": "cascade"}
# fakes: 90 toy records, 13 per chunk → 7 chunks (an odd count) in the first step
FAKE_ROWS = [(0, 0.9), (1, 0.8), (2, 0.95)]
FAKE_EPS = [0.2, 0.4]
FAKE_KW: dict[str, Any] = {"batch_size": 13, "seed": 3, "progress": False}
AUDIT_KW: dict[str, Any] = {
    "n": 30,
    "batch_size": 7,
    "pgd_steps": 5,
    "random_search_samples": 50,
    "random_search_n": 5,
    "curve_n": 15,
    "curve_steps": 5,
    "steps_grid": (2, 4),
    "surrogate_epochs": 1,
    "eps_factors": (0.0, 1.0, 4.0, 20.0),
    "seed": 2,
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))


def _data() -> tuple[Tensor, Tensor]:
    """45 random 1×8×8 images labelled by the model itself, every 5th label wrong."""
    x = torch.rand(45, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = _model()(x).argmax(1)
    y[::5] = (y[::5] + 1) % 4
    return x, y


def _fake_suite() -> list[SuiteEntry]:
    return [
        SuiteEntry(f"A{k}", fk.scripted, {"bit": bit, "strength": s, "random": True, "label": f"A{k}"})
        for k, (bit, s) in enumerate(FAKE_ROWS)
    ]


def _fake_run(state: Path | None = None, crash_after: int | None = None) -> EvalResult:
    x, y = fk.make_data(90, seed=7)
    fk.CRASH.left = crash_after
    try:
        return evaluate(fk.FlagModel(), (x, y), _fake_suite(), FAKE_EPS, state_path=state, **FAKE_KW)
    finally:
        fk.CRASH.left = None


def _audit(x: Tensor, y: Tensor, log: Any = None) -> AuditReport:
    return audit(_model(), (x, y), ThreatModel("linf", 0.05), log=log, **AUDIT_KW)


def _on_ranks(rank: int, world: int, tmp: str) -> dict[str, Any]:
    """Everything the ranks do (module level: it is pickled by name into the rank processes)."""
    out: dict[str, Any] = {}
    x, y = _data()
    out["eval"] = evaluate(_model(), (x, y), SUITE, EPS, state_path=Path(tmp) / "real-2", **EVAL_KW)
    out["bf16"] = evaluate(_model(), (x, y), SUITE, EPS, amp="bf16", fp32_check=25, **EVAL_KW)
    # resume 1 → 2: the main process crashed a run into fake-12 before spawning us
    out["resumed_12"] = _fake_run(Path(tmp) / "fake-12")
    # crash 2 → 1: rank 1 fails on its 3rd chunk; the main process finishes this one alone
    try:
        _fake_run(Path(tmp) / "fake-21", crash_after=2 if rank == 1 else None)
        out["crash_21"] = "no crash"
    except Exception as exc:
        out["crash_21"] = type(exc).__name__
    lines: list[str] = []
    out["audit"] = _audit(x, y, log=lines.append).to_dict()
    out["audit_log"] = lines
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("dist")
    with pytest.raises(fk.Crash):
        _fake_run(tmp / "fake-12", crash_after=3)  # 3 chunks committed: an odd start for 2 ranks
    per_rank = spawn(_on_ranks, 2, str(tmp), tmp=tmp)
    return {"tmp": tmp, "per_rank": per_rank}


def _nan_equal(a: Tensor, b: Tensor) -> bool:
    if a.is_floating_point():
        return a.shape == b.shape and torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0))
    return torch.equal(a, b)


def _same(a: EvalResult, b: EvalResult) -> None:
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.broken_step, b.broken_step)
    for k in a.clean:
        assert _nan_equal(a.clean[k], b.clean[k]), k
    assert a.records.keys() == b.records.keys()
    for k in a.records:
        assert _nan_equal(a.records[k], b.records[k]), k
    assert (a.adv_x is None) == (b.adv_x is None)
    if a.adv_x is not None and b.adv_x is not None:
        assert torch.equal(a.adv_x, b.adv_x)


# ------------------------------------------------------------------------------ evaluate
def test_sharded_evaluate_equals_single_process(ranks: dict[str, Any]) -> None:
    x, y = _data()
    single = evaluate(_model(), (x, y), SUITE, EPS, **EVAL_KW)
    # the comparison can fail: the attacks really break points, in several chunks per step
    assert 0 < int((single.broken_step >= 0).sum()) < int(single.clean["clean_correct"].sum())
    assert math.isnan(float(single.records["margin"][0, ~single.clean["clean_correct"]][0]))
    for r, out in enumerate(ranks["per_rank"]):
        res = out["eval"]
        _same(single, res)
        assert res.meta["world_size"] == 2 and res.meta["amp"] == "off", r
        assert single.meta["world_size"] == 1
        assert res.seconds and all(s >= 0 for s in res.seconds)


def test_rank0_state_resumes_in_one_process(ranks: dict[str, Any]) -> None:
    """The state written by the 2-rank run (rank 0 only) is complete: one process reloads it."""
    x, y = _data()
    single = evaluate(_model(), (x, y), SUITE, EPS, **EVAL_KW)
    again = evaluate(_model(), (x, y), SUITE, EPS, state_path=ranks["tmp"] / "real-2", **EVAL_KW)
    _same(single, again)
    assert sorted(p.name for p in (ranks["tmp"] / "real-2").iterdir()) == [
        "adv",
        "records.safetensors",
        "state.json",
    ]


def test_resume_across_world_sizes(ranks: dict[str, Any]) -> None:
    straight = _fake_run()
    # 1 → 2: a single-process crash finished by two ranks
    for out in ranks["per_rank"]:
        _same(straight, out["resumed_12"])
    # 2 → 1: both ranks saw the failure of rank 1 (and none hung); one process finishes the run
    assert [out["crash_21"] for out in ranks["per_rank"]] == ["Crash", "Crash"]
    resumed = _fake_run(ranks["tmp"] / "fake-21")
    _same(straight, resumed)
    # the random draws matter, so the comparison above could fail
    other = evaluate(
        fk.FlagModel(), fk.make_data(90, seed=7), _fake_suite(), FAKE_EPS, **{**FAKE_KW, "seed": 4}
    )
    assert not torch.equal(other.broken_step, straight.broken_step)


# ------------------------------------------------------------------------------ bf16
def test_bf16_and_fp32_check() -> None:
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate(_model(), (x, y), SUITE, EPS, amp="bf16", fp32_check=25, **EVAL_KW)
    rep = res.meta["fp32_check"]
    warned = [w for w in caught if "float32 disagree" in str(w.message)]
    assert len(warned) == (1 if rep["disagree"] else 0)
    attacked = int(res.records["ran"].sum())
    assert rep["checked"] == min(25, attacked)
    assert isinstance(rep["disagree"], int) and 0 <= rep["disagree"] <= rep["checked"]
    assert sum(r["checked"] for r in rep["per_row"].values()) == rep["checked"]
    assert sum(r["disagree"] for r in rep["per_row"].values()) == rep["disagree"]
    assert set(rep["per_row"]) <= set(res.labels)
    assert res.meta["amp"] == "bf16"
    off = evaluate(_model(), (x, y), SUITE, EPS, fp32_check=25, **EVAL_KW)
    assert "fp32_check" not in off.meta  # nothing to cross-check in float32


def test_bf16_sharded_equals_single(ranks: dict[str, Any]) -> None:
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = evaluate(_model(), (x, y), SUITE, EPS, amp="bf16", fp32_check=25, **EVAL_KW)
    for out in ranks["per_rank"]:
        _same(single, out["bf16"])
        assert out["bf16"].meta["fp32_check"] == single.meta["fp32_check"]


def test_amp_and_fp32_check_are_validated() -> None:
    x, y = _data()
    with pytest.raises(ConfigError, match="fp16"):
        evaluate(_model(), (x, y), SUITE, EPS, amp="fp16", **EVAL_KW)
    with pytest.raises(ConfigError, match="fp32_check"):
        evaluate(_model(), (x, y), SUITE, EPS, amp="bf16", fp32_check=-1, **EVAL_KW)


# ------------------------------------------------------------------------------ audit
def test_sharded_audit_equals_single_process(ranks: dict[str, Any]) -> None:
    x, y = _data()
    single = _audit(x, y).to_dict()
    assert len(single["checks"]) == len(AUDIT_CHECKS)
    for out in ranks["per_rank"]:
        got = out["audit"]
        assert got["checks"] == single["checks"]
        assert got["curves"] == single["curves"]
        assert got["clean_accuracy"] == single["clean_accuracy"]
        assert got["status"] == single["status"]
    # only rank 0 logs
    assert ranks["per_rank"][0]["audit_log"] and ranks["per_rank"][1]["audit_log"] == []


# ------------------------------------------------------------------------------ CLI under torchrun
def test_cli_eval_under_torchrun_matches_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m entrobust eval`` prints once and writes what one process does."""
    from entrobust.checkpoint import save_checkpoint
    from entrobust.cli import main
    from entrobust.models import create_model

    torch.manual_seed(0)
    ckpt = tmp_path / "digits-mlp"
    save_checkpoint(ckpt, create_model("mlp3", dataset="digits", input_size=8, hidden=16))
    args = ["eval", str(ckpt), "--suite", "fgsm,pgd:steps=3", "--eps", "0.05,0.1", "--max-examples"]
    args += ["30", "--batch-size", "7", "--no-progress", "--resume-state"]
    assert main([*args, str(tmp_path / "s1"), "--json", str(tmp_path / "one.json")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(entrobust.__file__).parents[1])}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*launcher, "-m", "entrobust", *args, str(tmp_path / "s2"), "--json", str(tmp_path / "two.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("worst case") == 1  # only rank 0 prints

    def outcome(path: Path) -> dict[str, Any]:
        doc = json.loads(path.read_text())
        doc.pop("total_seconds", None)
        for row in doc["attacks"]:
            row.pop("seconds", None)
        return doc

    one, two = outcome(tmp_path / "one.json"), outcome(tmp_path / "two.json")
    assert (one["meta"].pop("world_size"), two["meta"].pop("world_size")) == (1, 2)
    assert one == two
