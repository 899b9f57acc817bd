"""``entrobust run`` under data parallelism: 2 gloo ranks store what one process stores.

Two-rank training sums gradients in another order than one process, so its weights differ from
one process's by float rounding (and a few sign flips of the PGD ascent, see
test_distributed_train.py); numbers derived from the weights by an argmax are therefore compared
where they are exact: one process re-evaluating the weights the ranks trained.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import tomllib
import torch

from _distributed import spawn
from entrobust.experiments.spec import experiment_from_dict
from entrobust.experiments.store import Store

pytestmark = pytest.mark.multiprocess  # gloo ranks: run alone, after the parallel part

STUDY = """
name = "ddp-study"
scale = "tiny"
seeds = [0]
threads = 1
device = "cpu"

[overrides]
epochs = 1
max_train_examples = 64
batch_size = 16
model = "cnn4"
model_kwargs = {}

[[defense]]
preset = "ru/pat"

[[evaluation]]
name = "pgd"
suite = "pgd:steps=5,fgsm"
eps = [0.1, 0.3]
max_examples = 40
batch_size = 8

[analysis.fuzziness]
"""


def _study() -> Any:
    return experiment_from_dict(tomllib.loads(STUDY))


def _run(rank: int, world: int, workspace: str) -> dict[str, Any]:
    from entrobust.experiments.runner import run_experiment

    res = run_experiment(_study(), workspace, report=rank == 0)
    return {"report": sorted(res.report)}


def _stored(workspace: Path) -> dict[str, Any]:
    store = Store(workspace / "results.sqlite")
    evals = sorted((e.attack, round(e.eps, 9), e.n, e.robust_acc, e.clean_acc) for e in store.evaluations())
    runs = [r for r in store.runs() if r.name != "study"]
    epochs = [store.epochs(r.id) for r in runs]
    return {
        "evals": evals,
        "epochs": epochs,
        "fuzziness": [store.analysis(r.id, "fuzziness") for r in runs],
    }


def _forget_evaluations(workspace: Path) -> None:
    """Drop every stored evaluation and analysis, so that the next run computes them again."""
    with sqlite3.connect(workspace / "results.sqlite") as db:
        db.execute("DELETE FROM examples")
        db.execute("DELETE FROM evaluations")
        db.execute("DELETE FROM analyses")
        db.execute("DELETE FROM stages WHERE stage LIKE 'eval:%' OR stage LIKE 'analysis:%'")


def test_run_on_two_ranks_stores_what_one_process_stores(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    from entrobust.experiments.runner import run_experiment

    run_experiment(_study(), tmp_path / "one", report=False)
    out = spawn(_run, 2, str(tmp_path / "two"), tmp=tmp_path)
    assert out[0]["report"] and not out[1]["report"]  # rank 0 alone writes the report
    one, two = _stored(tmp_path / "one"), _stored(tmp_path / "two")
    keys = [e[:3] for e in two["evals"]]
    assert keys and keys == [e[:3] for e in one["evals"]]  # each (row, ε, n) stored once, as one process
    assert len(two["epochs"][0]) == 1  # the epoch row was written once
    a, b = one["epochs"][0][0], two["epochs"][0][0]
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-3 * max(1.0, abs(a["train_loss"]))

    # the ranks' sharded evaluations and analyses equal one process evaluating the same weights
    shutil.copytree(tmp_path / "two", tmp_path / "replay")
    _forget_evaluations(tmp_path / "replay")
    run_experiment(_study(), tmp_path / "replay", report=False, stages=("evaluate", "analyse"))
    replay = _stored(tmp_path / "replay")
    assert replay["evals"] == two["evals"]
    assert _close(replay["fuzziness"], two["fuzziness"])


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5 * max(1.0, abs(a))
    return bool(a == b)
