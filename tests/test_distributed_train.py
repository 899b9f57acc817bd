"""Data-parallel training on 2 CPU ranks (gloo): DDP equals one process on the global batch.

Tolerances (why they are not zero): a DDP step averages per-rank mean gradients with an
all-reduce, a single process takes one mean over the whole batch — the same sum in another
order, so weights agree to float32 rounding (~1e-8 here; we allow 1e-6 for plain training).
Adversarial training is looser: its inner ascent takes sign(∇ₓ) of input gradients as small as
~1e-7 (TRADES starts σ = 0.001 from the clean input), and a convolution run on 8 instead of 16
examples rounds differently (~1e-10) — differently again on CPUs with and without AVX-512. That
can flip the sign of single pixels, which then move by 2α. A handful of such pixels shifts the
weights by ~1e-4 after a few steps (measured 3.8e-4 on AVX2, 4.2e-4 on AVX-512), so adversarial
presets are compared at 2e-3 (max |w| is ~0.3).

Accuracies are never compared between models whose weights differ: an argmax near a tie flips on
the last bit. Validation is checked where it is exact — the ranks' sharded validation of their
final weights against one process validating those same weights (the same batches, one thread).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from _distributed import spawn
from entrobust import distributed
from entrobust.errors import ConfigError
from entrobust.training.presets import preset_config
from entrobust.training.trainer import Trainer


def _config(preset: str, epochs: int = 1) -> Any:
    cfg = preset_config(preset, dataset="mnist5k", scale="cpu")
    return cfg.with_overrides(
        {
            "epochs": epochs,
            "batch_size": 16,
            "max_train_examples": 64,
            "model": "cnn4",
            "model_kwargs": {},
            "validation.size": 32,
            "validation.robust_examples": 20,
            "validation.steps": 3,
            "device": "cpu",
            "augment": False,
            # plain SGD, as the tolerances above were measured with: Adam (the converged cpu
            # recipes) divides by √v̂, which magnifies a flipped pixel's effect on the first steps
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        }
    )


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fit(rank: int, world: int, cfg: Any, out: str | None, resume: bool) -> tuple[dict[str, Any], list[Any]]:
    result = Trainer(cfg, out, progress=False).fit(resume=resume)
    return _weights(result.model), result.history


def _untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.endswith("_time_s")} for row in history]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _validate(cfg: Any, weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One process validating ``weights`` (what the ranks' sharded validation must count)."""
    trainer = Trainer(cfg, None, progress=False)
    trainer.setup()
    assert trainer.model is not None
    trainer.model.load_state_dict(weights)
    return trainer.validate()


EXACT, ADVERSARIAL = 1e-6, 2e-3  # see the module docstring


@pytest.mark.multiprocess
@pytest.mark.parametrize(
    ("preset", "tol"),
    [
        ("ru/normal", EXACT),
        ("ru/trades", ADVERSARIAL),
        pytest.param("ru/pat", ADVERSARIAL, marks=pytest.mark.slow),
    ],
)
def test_two_ranks_match_one_process_on_the_global_batch(tmp_path: Path, preset: str, tol: float) -> None:
    torch.set_num_threads(1)
    cfg = _config(preset)
    single = Trainer(cfg, None, progress=False).fit()
    (w0, h0), (w1, h1) = spawn(_fit, 2, cfg, None, False, tmp=tmp_path)
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks ended with different weights"
    assert _untimed(h0) == _untimed(h1)
    start = _weights(Trainer(cfg, None, progress=False).fit().model)  # sanity: training is deterministic
    assert _max_diff(start, _weights(single.model)) == 0.0
    assert _max_diff(w0, _weights(single.model)) <= tol
    assert h0[-1]["train_loss"] == pytest.approx(single.history[-1]["train_loss"], rel=10 * tol)
    # validation is sharded by batches with a seeded attack: the same counts as one process
    # validating the same weights
    val = _validate(cfg, w0)
    assert h0[-1]["val_clean_acc"] == val["val_clean_acc"]
    assert h0[-1].get("val_robust_acc") == val.get("val_robust_acc")


@pytest.mark.multiprocess
@pytest.mark.parametrize(
    ("preset", "tol"), [("ru/normal", EXACT), pytest.param("ru/pat", ADVERSARIAL, marks=pytest.mark.slow)]
)
def test_resume_across_world_sizes(tmp_path: Path, preset: str, tol: float) -> None:
    torch.set_num_threads(1)
    one, two = _config(preset, epochs=1), _config(preset, epochs=2)
    straight = Trainer(two, None, progress=False).fit()
    reference = _weights(straight.model)

    # 2 ranks write epoch 1, one process resumes to epoch 2
    spawn(_fit, 2, one, str(tmp_path / "a"), False, tmp=tmp_path)
    resumed = Trainer(two, tmp_path / "a", progress=False).fit(resume=True)
    assert resumed.resumed_from_epoch == 1
    assert _max_diff(_weights(resumed.model), reference) <= tol

    # one process writes epoch 1, 2 ranks resume to epoch 2
    Trainer(one, tmp_path / "b", progress=False).fit()
    (w0, h0), (w1, _) = spawn(_fit, 2, two, str(tmp_path / "b"), True, tmp=tmp_path)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert [h["epoch"] for h in h0] == [1, 2]
    assert _max_diff(w0, reference) <= tol


def test_batch_noise_is_the_global_batch_sliced() -> None:
    torch.manual_seed(3)
    full = distributed.batch_noise("normal", (6, 2, 3))
    for rank in range(3):
        torch.manual_seed(3)
        with distributed.batch_shard(3, rank):
            part = distributed.batch_noise("normal", (2, 2, 3))
        assert torch.equal(part, full[rank::3])
    torch.manual_seed(3)
    with distributed.batch_shard(1, 0):
        assert torch.equal(distributed.batch_noise("normal", (6, 2, 3)), full)
    with pytest.raises(ConfigError, match="rank"):
        with distributed.batch_shard(2, 2):
            pass


def test_single_process_helpers_are_no_ops() -> None:
    assert not distributed.launched() or distributed.world_size() >= 1
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.reduce_sums([1.5, 2]) == [1.5, 2.0]
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert list(distributed.shard_indices(3)) == [0, 1, 2]
    net = torch.nn.Linear(2, 2)
    assert distributed.unwrap(net) is net


def _fake_world(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    monkeypatch.setattr(distributed, "init", lambda *a, **k: distributed.DistInfo(world, 0, 0, "gloo"))


def test_global_batch_must_split_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, 3)
    cfg = _config("ru/normal").replace(batch_size=16)
    with pytest.raises(ConfigError, match=r"batch_size 16 .* 3 ranks"):
        Trainer(cfg, None, progress=False).setup()


def test_sync_batchnorm_on_cpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, 2)
    cfg = _config("ru/normal").replace(sync_batchnorm=True)
    with pytest.raises(ConfigError, match="SyncBatchNorm"):
        Trainer(cfg, None, progress=False).setup()


def test_bf16_training_runs_with_float32_losses() -> None:
    torch.set_num_threads(1)
    cfg = _config("ru/trades").with_overrides({"accel.amp": "bf16", "validation.size": 0})
    result = Trainer(cfg, None, progress=False).fit()
    loss = result.history[-1]["train_loss"]
    assert isinstance(loss, float) and torch.isfinite(torch.tensor(loss))
    assert all(v.dtype == torch.float32 for v in result.model.state_dict().values() if v.is_floating_point())
    with pytest.raises(ConfigError, match="bf16"):
        cfg.with_overrides({"accel.amp": "fp16"})


@pytest.mark.multiprocess
def test_cli_train_under_torchrun(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m entrobust train`` works unchanged; rank 0 alone prints."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "entrobust", "train", "--preset", "ru/pat", "--dataset", "mnist5k", "--epochs", "1",
        "--batch-size", "64",
        "--set", "max_train_examples=128", "--set", "validation.size=40", "--device", "cpu",
        "--threads", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("training ru/pat") == 1
    assert "2 ranks, 32 examples each per batch" in proc.stdout
    assert proc.stdout.count("clean test accuracy") == 1
    assert (out / "last.safetensors").exists() and (out / "test.json").exists()


def test_channels_last_and_compile_train_the_same_model() -> None:
    torch.set_num_threads(1)
    cfg = _config("ru/pat").with_overrides({"validation.size": 0})
    plain = _weights(Trainer(cfg, None, progress=False).fit().model)
    fast_cfg = cfg.with_overrides(
        {"accel.channels_last": True, "accel.compile": True, "accel.compile_backend": "eager"}
    )
    fast = Trainer(fast_cfg, None, progress=False)
    fast_weights = _weights(fast.fit().model)
    assert fast.train_model is not fast.model  # the compiled wrapper trained, the plain module is saved
    assert _max_diff(plain, fast_weights) <= 1e-4  # NHWC kernels round differently
