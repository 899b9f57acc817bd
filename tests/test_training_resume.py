"""Resume identity: 3 epochs straight == 1 epoch, interruption, resume to 3 (bit-identical on CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from entrobust.training import Callback, TrainConfig, train
from entrobust.training.trainer import STATE_FILE

torch.set_num_threads(1)

BASE = {
    "dataset": "mnist5k",
    "model": "cnn4",
    "epochs": 3,
    "batch_size": 16,
    "max_train_examples": 48,
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "validation": {"size": 16, "steps": 2},
    "threads": 1,
}

CASES = {
    "pat": {
        "method": {
            "adversary": {"kind": "pgd", "eps": 0.2, "steps": 2},
            "objective": {"kind": "ce", "mix_alpha": 0.5},
        }
    },
    "trades": {
        "method": {
            "adversary": {"kind": "trades", "eps": 0.2, "steps": 2},
            "objective": {"kind": "trades", "params": {"beta": 6.0}},
        }
    },
    "atent": {
        "method": {
            "adversary": {"kind": "atent-linf", "eps": 0.2, "steps": 2, "bn_mode": "train"},
            "objective": {"kind": "atent"},
        }
    },
    "entropy-sgd+awp": {
        "method": {"adversary": {"kind": "pgd", "eps": 0.2, "steps": 2, "bn_mode": "train"}},
        "optimizer": {
            "name": "entropy-sgd",
            "lr": 0.5,
            "momentum": 0.9,
            "nesterov": True,
            "kwargs": {"L": 2, "noise": 1e-3},
        },
        "awp": {"gamma": 0.01},
        "schedule": {"eps_warmup_epochs": 1.5, "milestones": [2]},
    },
}


class Interrupt(Callback):
    """Simulates Ctrl-C right after epoch ``after`` (its checkpoint is on disk)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_epoch_end(self, metrics: dict) -> None:
        if metrics["epoch"] == self.after:
            raise KeyboardInterrupt


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_bit_identical(case: str, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({**BASE, **CASES[case]})
    straight = train(cfg, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", callbacks=[Interrupt(after=1)])
    resumed = train(cfg, tmp_path / "resumed", resume=True)
    assert resumed.resumed_from_epoch == 1
    _same_weights(straight.model, resumed.model)
    drop = ("train_time_s", "val_time_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)


def test_resume_after_kill_9(tmp_path: Path) -> None:
    """A child process is SIGKILLed after its first epoch; the parent resumes its run.

    The child gets the data as a tensor file (it would otherwise re-parse mnist5k)."""
    from entrobust.data import TensorData, load_dataset
    from entrobust.training import Trainer

    cfg = TrainConfig.from_dict({**BASE, **CASES["pat"]})
    v = cfg.validation
    train_data = load_dataset("mnist5k", "train", val_size=v.size, seed=v.split_seed)
    val_data = load_dataset("mnist5k", "val", val_size=v.size, seed=v.split_seed)
    data_file = tmp_path / "data.pt"
    torch.save({"x": train_data.x, "y": train_data.y, "vx": val_data.x, "vy": val_data.y}, data_file)
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import json, os, signal, torch
        torch.set_num_threads(1)
        from entrobust.data import TensorData
        from entrobust.training import TrainConfig, Trainer
        cfg = TrainConfig.from_dict(json.loads({cfg.to_json()!r}))
        d = torch.load({str(data_file)!r}, weights_only=True)
        def kill(metrics):
            if metrics["epoch"] == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        Trainer(cfg, {str(out)!r}, train_data=TensorData(d["x"], d["y"], "train"),
                val_data=TensorData(d["vx"], d["vy"], "val"), callbacks=[kill]).fit()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / STATE_FILE).exists()
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    fresh = lambda: dict(train_data=TensorData(train_data.x, train_data.y, "train"), val_data=val_data)  # noqa: E731
    resumed = Trainer(cfg, out, **fresh()).fit(resume=True)
    assert resumed.resumed_from_epoch == 1
    straight = Trainer(cfg, tmp_path / "straight", **fresh()).fit()
    _same_weights(straight.model, resumed.model)
    assert os.path.exists(out / "best.safetensors")
