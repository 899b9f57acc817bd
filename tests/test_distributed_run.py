"""``entrobust run`` under data parallelism: 2 gloo ranks store what one process stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib
import torch

from _distributed import spawn
from entrobust.experiments.spec import experiment_from_dict
from entrobust.experiments.store import Store

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


def test_run_on_two_ranks_stores_what_one_process_stores(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    from entrobust.experiments.runner import run_experiment

    run_experiment(_study(), tmp_path / "one", report=False)
    out = spawn(_run, 2, str(tmp_path / "two"), tmp=tmp_path)
    assert out[0]["report"] and not out[1]["report"]  # rank 0 alone writes the report
    one, two = _stored(tmp_path / "one"), _stored(tmp_path / "two")
    assert two["evals"] and two["evals"] == one["evals"]  # each (row, ε) stored once, same numbers
    assert len(two["epochs"][0]) == 1  # the epoch row was written once
    a, b = one["epochs"][0][0], two["epochs"][0][0]
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-5
    assert two["fuzziness"] == one["fuzziness"] or _close(two["fuzziness"], one["fuzziness"])


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5 * max(1.0, abs(a))
    return bool(a == b)
