"""Crash after every write, then resume: the result equals an uninterrupted run.

One launcher subprocess imports torch and entrobust once; every run is a ``fork`` of it, so all
runs (straight, crashed and resumed) are the same kind of process with one thread. A crashed
run patches ``os.replace`` — the call that publishes every file (atomic writes, staged
checkpoint files, the commit manifest) — to ``os._exit`` right after its N-th call. For each N
the test checks that every checkpoint on disk loads *at the moment of the crash*, resumes, and
compares the final files bit for bit with the straight run; no temporary or staged file is left.

Covered: (i) a 2-epoch training run — every write, always; (ii) an evaluation with a resume
state folder and (iii) a tiny ``entrobust run`` study — a sample of writes by default, every
write under ``-m slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from _subprocess import child_env

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TESTS = Path(__file__).resolve().parent

TRAIN = {
    "dataset": "mnist5k",
    "model": "mlp3",
    "epochs": 2,
    "batch_size": 16,
    "max_train_examples": 32,
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "validation": {"size": 16, "steps": 1},
    "method": {"adversary": {"kind": "pgd", "eps": 0.2, "steps": 1}},
    "threads": 1,
}

STUDY = """
name = "crash-test"
scale = "tiny"
seeds = [0]
threads = 1
device = "cpu"

[overrides]
epochs = 2
max_train_examples = 32
batch_size = 16
model = "mlp3"
model_kwargs = {}

[[defense]]
preset = "ru/normal"

[[evaluation]]
name = "pgd"
suite = "pgd:steps=2"
eps = [0.1]
max_examples = 16
batch_size = 8
"""

LAUNCHER = r'''
import json, os, sys, traceback
from pathlib import Path
import torch
torch.set_num_threads(1)

sys.path.insert(0, {tests!r})
KIND, WORK, PLAN = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])


def fork(fn, crash_after=None):
    """Run ``fn`` in a forked child; return (exit code, number of os.replace calls)."""
    counter = WORK / "count"
    pid = os.fork()
    if pid == 0:
        code = 0
        real = os.replace
        n = [0]

        def replace(src, dst, *a, **k):
            real(src, dst, *a, **k)
            n[0] += 1
            if crash_after is not None and n[0] == crash_after:
                os._exit(17)

        os.replace = replace
        try:
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        counter.write_text(str(n[0]))
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code, int(counter.read_text()) if code != 17 else crash_after


def temp_files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob(".*") if p.is_file())


def loadable(folder):
    """Every checkpoint JSON in ``folder`` loads (its weights hash-checked)."""
    from entrobust.checkpoint import load_checkpoint

    for meta in Path(folder).rglob("*.json"):
        if meta.stem in ("last", "best"):
            load_checkpoint(meta)  # raises if it does not


# ----------------------------------------------------------------------------- training
def train_job(out, resume=False):
    from entrobust.training import TrainConfig, train
    cfg = TrainConfig.from_dict(PLAN["config"])
    committed = any((Path(out) / n).exists() for n in ("trainer_state.pt", "commit.json"))
    return lambda: train(cfg, out, resume=resume and committed, progress=False)


def train_summary(out):
    from safetensors.torch import load_file

    out = Path(out)
    drop = ("train_time_s", "val_time_s")
    history = json.loads((out / "history.json").read_text())
    rows = [{{k: v for k, v in r.items() if k not in drop}} for r in history]
    state = torch.load(out / "trainer_state.pt", weights_only=True)
    return {{
        "history": rows,
        "last": load_file(out / "last.safetensors"),
        "best": load_file(out / "best.safetensors"),
        "state_model": state["model"],
        "state_epoch": state["epoch"],
        "last_epoch": json.loads((out / "last.json").read_text())["epoch"],
        "best_epoch": json.loads((out / "best.json").read_text())["epoch"],
    }}


# ----------------------------------------------------------------------------- evaluation
def eval_job(state, out):
    import _evaluation_fakes as fk
    from entrobust.evaluation import SuiteEntry, evaluate

    def run():
        kw = [{{"bit": b, "random": True, "label": f"A{{b}}"}} for b in range(2)]
        suite = [SuiteEntry(f"A{{b}}", fk.Scripted, kw[b]) for b in range(2)]
        x, y = fk.make_data(40, seed=11)
        res = evaluate(fk.FlagModel(), (x, y), suite, [0.2, 0.4], batch_size=10, seed=5,
                       state_path=state, progress=False)
        res.save(out)
    return run


def eval_summary(out):
    from entrobust.evaluation import EvalResult

    r = EvalResult.load(out)
    return {{"broken": r.broken_step, "records": {{k: v.nan_to_num(-7) for k, v in r.records.items()}},
            "adv": r.adv_x}}


# ----------------------------------------------------------------------------- study
def study_job(ws):
    from entrobust.experiments.runner import Progress, run_experiment
    from entrobust.experiments.spec import load_experiment

    exp = load_experiment(PLAN["study"])
    return lambda: run_experiment(exp, ws, log=Progress(stream=None), report=False)


def study_summary(ws):
    from entrobust.experiments.store import Store

    store = Store(Path(ws) / "results.sqlite")
    snap = {{"runs": [], "epochs": [], "evals": []}}
    for r in store.runs():
        snap["runs"].append((r.status, r.config_hash))
        keep = lambda k: "time" not in k and k not in ("created", "updated")
        snap["epochs"].append([{{k: v for k, v in e.items() if keep(k)}} for e in store.epochs(r.id)])
        for e in store.evaluations(r.id):
            snap["evals"].append((e.attack, e.eps, e.n, e.clean_acc, e.robust_acc,
                                  [(x["idx"], x["success"], x["margin"]) for x in store.examples(e.id)]))
    snap["runs"].sort(); snap["evals"].sort(key=repr)
    return snap


def same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{{where}}.{{k}}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{{where}}[{{i}}]")
    else:
        assert a == b, (where, a, b)


def main():
    if KIND == "train":
        from entrobust.data import load_dataset
        v = PLAN["config"]["validation"]
        load_dataset("mnist5k", "train", val_size=v["size"], seed=0)  # warm the parent's cache
        job = lambda d, resume=False: train_job(d, resume)
        summary, folder = train_summary, lambda d: d
    elif KIND == "eval":
        job = lambda d, resume=False: eval_job(d / "state", d / "result")
        summary, folder = (lambda d: eval_summary(d / "result")), (lambda d: d)
    else:
        job = lambda d, resume=False: study_job(d)
        summary, folder = study_summary, lambda d: d
    straight = WORK / "straight"
    code, total = fork(job(straight))
    assert code == 0, "the straight run failed"
    expected = summary(straight)
    points = PLAN["points"] or list(range(1, total + 1))
    points = [n for n in points if n <= total]
    for n in points:
        d = WORK / f"crash-{{n}}"
        code, _ = fork(job(d), crash_after=n)
        assert code == 17, f"crash point {{n}}: the run ended with {{code}} instead of crashing"
        code, _ = fork(lambda: loadable(d))
        assert code == 0, f"crash point {{n}}: a checkpoint on disk does not load after the crash"
        code, _ = fork(job(d, resume=True))
        assert code == 0, f"crash point {{n}}: the resumed run failed"
        same(expected, summary(d), f"crash point {{n}}")
        left = [t for t in temp_files(folder(d)) if not t.startswith(".entrobust")]
        assert not left, f"crash point {{n}}: temporary files left after resume: {{left}}"
    print(json.dumps({{"total": total, "covered": len(points)}}))


main()
'''


def _launch(kind: str, work: Path, plan: dict[str, Any]) -> dict[str, int]:
    script = work / "launcher.py"
    script.write_text(textwrap.dedent(LAUNCHER.format(tests=str(TESTS))), encoding="utf-8")
    env = child_env()
    out = subprocess.run(
        [sys.executable, str(script), kind, str(work), json.dumps(plan)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_training_crash_after_every_write_resumes_to_the_straight_result(tmp_path: Path) -> None:
    done = _launch("train", tmp_path, {"config": TRAIN, "points": None})
    # config.json, config.toml; per epoch the manifest and the published files (best.* only if improved)
    assert done["covered"] == done["total"] >= 12


def test_evaluation_crash_after_sampled_writes_resumes_to_the_straight_result(tmp_path: Path) -> None:
    done = _launch("eval", tmp_path, {"points": [1, 2, 3, 5, 8]})
    assert done["covered"] == 5


@pytest.mark.slow
def test_evaluation_crash_after_every_write_resumes_to_the_straight_result(tmp_path: Path) -> None:
    done = _launch("eval", tmp_path, {"points": None})
    assert done["covered"] == done["total"] > 5


def _study(tmp_path: Path) -> str:
    study = tmp_path / "study.toml"
    study.write_text(STUDY, encoding="utf-8")
    return str(study)


def test_study_crash_after_sampled_writes_resumes_to_the_straight_result(tmp_path: Path) -> None:
    # writes 10-14 are the final epoch's commit (manifest, last.json, last.safetensors, history,
    # trainer state) — where a crash used to leave stale or unloadable weights marked done; 17 is
    # in the evaluation
    done = _launch("run", tmp_path, {"study": _study(tmp_path), "points": [10, 12, 14, 17]})
    assert done["covered"] == 4


@pytest.mark.slow
def test_study_crash_after_every_write_resumes_to_the_straight_result(tmp_path: Path) -> None:
    done = _launch("run", tmp_path, {"study": _study(tmp_path), "points": None})
    assert done["covered"] == done["total"] > 15
