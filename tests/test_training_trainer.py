"""The trainer loop, its files and hooks, and TrainConfig validation / serialization."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from entrobust.errors import CheckpointError, ConfigError, UnknownNameError
from entrobust.training import Callback, TrainConfig, Trainer, apply_overrides, load_config, train
from entrobust.training.config import parse_override, to_toml
from entrobust.training.trainer import STATE_FILE

torch.set_num_threads(1)


def tiny(**changes) -> TrainConfig:
    """A seconds-long run: 64 mnist5k examples, cnn4, batch 16."""
    base = {
        "dataset": "mnist5k",
        "model": "cnn4",
        "epochs": 2,
        "batch_size": 16,
        "max_train_examples": 64,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "validation": {"size": 20, "steps": 2},
        "threads": 1,
    }
    for key, value in changes.items():
        base[key] = value
    return TrainConfig.from_dict(base)


# --------------------------------------------------------------------------------- config


def test_default_config_round_trips_through_dict_json_and_toml(tmp_path: Path) -> None:
    cfg = tiny(awp={"gamma": 0.01}, schedule={"milestones": [1], "factor": 0.5})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg
    jpath = tmp_path / "c.json"
    jpath.write_text(cfg.to_json())
    assert load_config(jpath) == cfg


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"epoch": 3}, "unknown config key 'epoch'"),
        ({"optimizer": {"lrr": 0.1}}, "'optimizer.lrr'"),
        ({"epochs": "three"}, "epochs: expected an integer"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr: expected a number"),
        ({"optimizer": {"name": "sgdd"}}, "unknown optimizer 'sgdd'"),
        ({"optimizer": {"name": "entropy-sgd", "kwargs": {"L": 0}}}, "optimizer: .*L"),
        ({"optimizer": {"switch_to": "sgd"}}, "switch_to and optimizer.switch_epoch"),
        ({"schedule": {"kind": "linear"}}, "schedule.kind"),
        ({"schedule": {"milestones": [5, 2]}}, "milestones"),
        ({"validation": {"norm": "l3"}}, "validation.norm"),
        ({"validation": {"metric": "loss"}}, "validation.metric"),
        ({"awp": {"gamma": -1}}, "awp.gamma"),
        ({"method": {"objective": {"kind": "nope"}}}, "objective.kind"),
        ({"method": {"adversary": {"kind": "pgd", "epz": 1}}}, "adversary.epz"),
        ({"device": "tpu"}, "device"),
        ({"augment": "yes"}, "augment: expected true/false"),
        ({"translate": -1}, "translate must be >= 0"),
        ({"translate": 2, "augment": False}, "translate needs augment = true"),
        ({"translate": 1.5}, "translate: expected an integer"),
    ],
)
def test_config_errors_name_the_key(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(data)


def test_overrides_parse_values_and_revalidate() -> None:
    assert parse_override("optimizer.lr=0.1") == ("optimizer.lr", 0.1)
    assert parse_override("schedule.milestones=[2, 4]") == ("schedule.milestones", [2, 4])
    assert parse_override("model=cnn4") == ("model", "cnn4")
    assert parse_override("awp=none") == ("awp", None)
    assert parse_override("augment=false") == ("augment", False)
    cfg = apply_overrides(tiny(), ["optimizer.lr=0.2", "awp.gamma=0.005", "method.objective.kind=entm"])
    assert cfg.optimizer.lr == 0.2 and cfg.awp is not None and cfg.awp.gamma == 0.005
    assert cfg.method.objective.kind == "entm"
    with pytest.raises(ConfigError, match=r"'optimizer.lrr'"):
        apply_overrides(tiny(), ["optimizer.lrr=1"])
    with pytest.raises(ConfigError, match=r"key.sub=value"):
        parse_override("optimizer.lr")
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        apply_overrides(tiny(), {"epochs": "x"})


def test_bad_config_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("epochs = 2\n[optimizer]\nmomentun = 0.9\n")
    with pytest.raises(ConfigError, match=r"wrong.toml: .*optimizer.momentun"):
        load_config(wrong)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_to_toml_skips_none_and_quotes_odd_keys() -> None:
    text = to_toml({"a": 1, "b": None, "t": {"x y": "s", "l": [1, 2.5]}})
    assert "b =" not in text and '"x y" = "s"' in text and "l = [1, 2.5]" in text


def test_schedule_factors() -> None:
    cfg = tiny(schedule={"kind": "step", "milestones": [2, 4], "factor": 0.1})
    assert [cfg.schedule.factor_at(e, 6) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = tiny(schedule={"kind": "cosine"}).schedule
    assert cos.factor_at(0, 4) == 1.0 and cos.factor_at(2, 4) == pytest.approx(0.5)
    ramp = tiny(schedule={"eps_warmup_epochs": 2.0}).schedule
    assert ramp.eps_factor(0.0) == 0.01 and ramp.eps_factor(1.0) == 0.5 and ramp.eps_factor(2.5) == 1.0


def test_eps_ramp_from_a_start_fraction() -> None:
    # the converged cpu PGD-AT recipe: ε 0.1 → 0.3 over 3 epochs (start = 1/3 of ε)
    ramp = tiny(schedule={"eps_warmup_epochs": 3.0, "eps_warmup_start": 1 / 3}).schedule
    assert 0.1 <= 0.3 * ramp.eps_factor(0.0) <= 0.105
    assert ramp.eps_factor(1.5) == pytest.approx(2 / 3, abs=0.011)
    assert ramp.eps_factor(2.99) <= 1.0 and ramp.eps_factor(3.0) == 1.0
    factors = [ramp.eps_factor(p / 10) for p in range(31)]
    assert factors == sorted(factors)
    assert tiny(schedule={"eps_warmup_start": 0.5}).schedule.eps_factor(0.0) == 1.0  # no ramp: full ε
    with pytest.raises(ConfigError, match="eps_warmup_start"):
        tiny(schedule={"eps_warmup_epochs": 1.0, "eps_warmup_start": 1.5})


# --------------------------------------------------------------------------------- training


class Recorder(Callback):
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.started = self.ended = 0

    def on_train_start(self, trainer: Trainer) -> None:
        self.started += 1

    def on_epoch_end(self, metrics: dict) -> None:
        self.rows.append(metrics)

    def on_train_end(self, result) -> None:
        self.ended += 1


def test_training_writes_checkpoints_history_and_calls_hooks(tmp_path: Path) -> None:
    from entrobust.checkpoint import load_checkpoint

    rec = Recorder()
    plain: list[int] = []
    cfg = tiny(
        method={
            "adversary": {"kind": "pgd", "eps": 0.1, "steps": 2},
            "objective": {"kind": "ce", "mix_alpha": 0.5},
        }
    )
    result = train(cfg, tmp_path, callbacks=[rec, lambda m: plain.append(m["epoch"])])
    assert rec.started == rec.ended == 1 and plain == [1, 2]
    assert [r["epoch"] for r in rec.rows] == [1, 2] == [h["epoch"] for h in result.history]
    row = result.history[-1]
    for key in ("train_loss", "train_clean_acc", "train_robust_acc", "val_clean_acc", "val_robust_acc", "lr"):
        assert isinstance(row[key], float) and math.isfinite(row[key]), key
    assert 0 <= row["val_robust_acc"] <= 1
    for name in (
        "config.json",
        "config.toml",
        "history.json",
        STATE_FILE,
        "last.safetensors",
        "best.safetensors",
    ):
        assert (tmp_path / name).exists(), name
    assert TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == cfg
    assert json.loads((tmp_path / "history.json").read_text()) == result.history
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)  # safe to load: no arbitrary pickle
    assert state["epoch"] == 2 and state["format"] == "entrobust-trainer-state"
    model, meta = load_checkpoint(tmp_path / "last")
    assert meta["epoch"] == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k].cpu())
    best_epoch = max(result.history, key=lambda h: h["val_robust_acc"])["epoch"]
    assert result.best is not None and result.best["epoch"] == best_epoch


def test_existing_run_needs_resume_and_same_config(tmp_path: Path) -> None:
    cfg = tiny(epochs=1)
    train(cfg, tmp_path)
    with pytest.raises(ConfigError, match="resume"):
        train(cfg, tmp_path)
    with pytest.raises(ConfigError, match="optimizer"):
        train(apply_overrides(cfg, ["optimizer.lr=0.5"]), tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", resume=True)
    # extending the number of epochs is allowed
    more = train(apply_overrides(cfg, ["epochs=2"]), tmp_path, resume=True)
    assert [h["epoch"] for h in more.history] == [1, 2] and more.resumed_from_epoch == 1


def test_entropy_sgd_epoch_is_one_pass_and_phases_switch() -> None:
    """64 examples / batch 16 = 4 batches; L = 3 → 2 outer steps = 6 closure calls per epoch.
    Phases: SGD warm-up (epoch 1), Entropy-SGD (epoch 2), SGD after the switch (epoch 3)."""
    cfg = tiny(
        epochs=3,
        validation={"size": 0},
        optimizer={
            "name": "entropy-sgd",
            "lr": 0.5,
            "kwargs": {"L": 3},
            "warmup_epochs": 1,
            "switch_to": "sgd",
            "switch_epoch": 2,
            "switch_lr": 0.01,
        },
    )
    trainer = Trainer(cfg, None)
    result = trainer.fit()
    assert [h["optimizer"] for h in result.history] == ["sgd", "entropy-sgd", "sgd"]
    assert [h["lr"] for h in result.history] == [0.5, 0.5, 0.01]
    assert trainer.step == 4 + 6 + 4
    assert result.best == result.history[-1]  # no validation split: best = last


def test_early_stopping_on_validation_metric() -> None:
    """lr 0 freezes the weights, so validation never improves after the first epoch."""
    cfg = tiny(
        epochs=5, optimizer={"name": "sgd", "lr": 0.0}, validation={"size": 20, "steps": 1, "patience": 2}
    )
    result = Trainer(cfg, None).fit()
    assert result.stopped_early and len(result.history) == 3
    assert result.history[-1].get("early_stop") is True and result.best["epoch"] == 1


def test_awp_is_restored_and_recorded(tmp_path: Path) -> None:
    cfg = tiny(
        epochs=2,
        awp={"gamma": 0.01, "warmup": 1},
        method={"adversary": {"kind": "pgd", "eps": 0.1, "steps": 1}},
    )
    trainer = Trainer(cfg, None)
    result = trainer.fit()
    assert [h["awp"] for h in result.history] == [False, True]
    assert trainer.awp is not None and not trainer.awp.perturbed


def test_user_model_and_data_are_used() -> None:
    from entrobust.data import load_dataset

    data = load_dataset("digits", "train")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    cfg = TrainConfig.from_dict(
        {
            "dataset": "digits",
            "model": "user",
            "epochs": 3,
            "batch_size": 64,
            "optimizer": {"name": "adam", "lr": 0.01},
        }
    )
    result = Trainer(cfg, None, model=model, train_data=data).fit()
    assert result.model is model
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]


def test_unknown_names_surface_as_user_errors() -> None:
    with pytest.raises(UnknownNameError, match="model"):
        Trainer(tiny(model="nonet"), None).fit()


def test_finetune_from_starts_at_the_checkpoint(tmp_path: Path) -> None:
    first = train(tiny(epochs=1), tmp_path / "pre")
    frozen = tiny(
        epochs=1, optimizer={"name": "sgd", "lr": 0.0}, finetune_from=str(tmp_path / "pre" / "last")
    )
    again = Trainer(frozen, None).fit()
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k


def test_awp_uses_the_eps_ramped_method(monkeypatch: pytest.MonkeyPatch) -> None:
    import entrobust.training.trainer as trainer_module

    seen: list[float] = []
    original = trainer_module.perturb_weights

    def spy(method, model, awp, x, y, step):  # type: ignore[no-untyped-def]
        seen.append(method.config.adversary.eps)
        return original(method, model, awp, x, y, step)

    monkeypatch.setattr(trainer_module, "perturb_weights", spy)
    cfg = tiny(
        epochs=1,
        validation={"size": 0},
        awp={"gamma": 0.01},
        schedule={"eps_warmup_epochs": 1.0},
        method={"adversary": {"kind": "pgd", "eps": 0.2, "steps": 1}},
    )
    Trainer(cfg, None).fit()
    assert seen == pytest.approx([0.05, 0.1, 0.15, 0.2])


def test_translate_round_trips_and_is_left_out_at_zero() -> None:
    """``translate`` (MNIST shifts) is stored only when used: older configs hash and resume alike."""
    plain = TrainConfig()
    assert "translate" not in plain.to_dict() and TrainConfig.from_dict(plain.to_dict()) == plain
    shifted = TrainConfig(translate=2)
    assert shifted.to_dict()["translate"] == 2 and TrainConfig.from_dict(shifted.to_dict()) == shifted
    assert apply_overrides(plain, ["translate=3"]).translate == 3
