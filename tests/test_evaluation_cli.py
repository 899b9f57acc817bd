"""``entrobust eval`` on a tiny saved checkpoint, and a real ``kill -9`` in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from entrobust.cli import main
from entrobust.evaluation import EvalResult, evaluate

torch.set_num_threads(1)
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from entrobust.checkpoint import save_checkpoint
    from entrobust.data import load_dataset
    from entrobust.models import create_model

    torch.manual_seed(0)
    train = load_dataset("digits", "train").to_float()
    model = create_model("mlp3", dataset="digits", input_size=8, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(train.x), train.y).backward()
        opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "digits-mlp"
    save_checkpoint(path, model, metadata={"recipe": {"name": "test"}})
    return path


def test_cli_prints_table_and_writes_json(checkpoint, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(
        [
            "eval",
            str(checkpoint),
            "--suite",
            "quick",
            "--eps",
            "0.05,0.1",
            "--n",
            "60",
            "--json",
            str(out),
            "--save",
            str(tmp_path / "full"),
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "eps=0.05" in text and "eps=0.1" in text and "PGD-20" in text and "worst case" in text
    doc = json.loads(out.read_text())
    assert doc["n"] == 60 and len(doc["examples"]) == 60
    assert doc["meta"]["dataset"] == "digits"
    # the same evaluation from Python gives the same numbers
    from entrobust.checkpoint import load_checkpoint
    from entrobust.data import load_dataset

    model, _ = load_checkpoint(checkpoint)
    res = evaluate(
        model, load_dataset("digits", "test"), "quick", [0.05, 0.1], max_examples=60, progress=False
    )
    assert doc["robust_accuracy"] == res.to_dict(per_example=False)["robust_accuracy"]
    assert doc["clean_accuracy"] == res.clean_accuracy
    saved = EvalResult.load(tmp_path / "full")
    assert saved.adv_x is not None and torch.equal(saved.broken_step, res.broken_step)


def test_cli_user_errors(checkpoint, capsys):
    assert main(["eval", str(checkpoint), "--suite", "nosuch", "--no-progress"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["eval", str(checkpoint), "--eps", "abc", "--no-progress"]) == 2
    assert "abc" in capsys.readouterr().err
    assert main(["eval", str(checkpoint) + "-missing", "--no-progress"]) == 2


SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import _evaluation_fakes as fk
from entrobust.evaluation import SuiteEntry, evaluate

def slow(threat, **kw):
    if os.environ.get("SLOW"):
        time.sleep(0.15)
    return fk.Scripted(threat, **kw)

slow.__qualname__ = "slow"
slow.__module__ = "script"
suite = [SuiteEntry(f"A{{b}}", slow, {{"bit": b, "random": True, "label": f"A{{b}}"}}) for b in range(3)]
x, y = fk.make_data(120, seed=11)
res = evaluate(fk.FlagModel(), (x, y), suite, [0.2, 0.4], batch_size=10, seed=5,
               state_path=sys.argv[1], progress=False)
res.save(sys.argv[2])
"""


def _progress(state: Path) -> int:
    from safetensors import safe_open

    p = state / "records.safetensors"
    if not p.exists():
        return -1
    try:
        with safe_open(str(p), framework="pt") as f:
            prog = json.loads(f.metadata()["progress"])
    except Exception:
        return -1
    return int(prog["step"]) * 1000 + int(prog["chunk"])


def test_sigkill_then_resume_equals_straight_run(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    state, out = tmp_path / "state", tmp_path / "out"
    env = {**os.environ, "SLOW": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(state), str(out)], env=env)
    deadline = time.time() + 60
    while _progress(state) < 1002 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out.json").exists()
    done = subprocess.run(
        [sys.executable, str(script), str(state), str(out)], env={**env, "SLOW": ""}, check=True
    )
    assert done.returncode == 0
    resumed = EvalResult.load(out)
    # a straight run in this process (same rows, seed and batches; no state)
    sys.path.insert(0, str(TESTS))
    import _evaluation_fakes as fk
    from entrobust.evaluation import SuiteEntry

    suite = [SuiteEntry(f"A{b}", fk.Scripted, {"bit": b, "random": True, "label": f"A{b}"}) for b in range(3)]
    x, y = fk.make_data(120, seed=11)
    straight = evaluate(fk.FlagModel(), (x, y), suite, [0.2, 0.4], batch_size=10, seed=5, progress=False)
    assert torch.equal(resumed.broken_step, straight.broken_step)
    for k in straight.records:
        assert torch.equal(resumed.records[k].nan_to_num(-7), straight.records[k].nan_to_num(-7)), k
    assert resumed.adv_x is not None and straight.adv_x is not None
    assert torch.equal(resumed.adv_x, straight.adv_x)
    assert bool(resumed.adv_found.any())
