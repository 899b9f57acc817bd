"""Checkpoints: round trips, refusals with clear messages, unsafe pickles never executed."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import entrobust
import entrobust.io
from entrobust.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_extra_tensors,
    load_foreign_weights,
    read_checkpoint_metadata,
    save_checkpoint,
)
from entrobust.errors import CheckpointError, ConfigError
from entrobust.models import NormalizedModel, create_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _outputs(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class TiedNet(nn.Module):
    """A user model the registry does not know, with aliased tensors safetensors would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.b.weight = self.a.weight  # tied: two names, one storage
        self.table = nn.Parameter(torch.randn(4, 5))
        self.register_buffer("rows", self.table.detach()[:2])  # a view of a larger storage

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.relu(self.a(x.flatten(1)))) + self.rows.sum()


# ---- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("smallcnn", {"dataset": "mnist5k"}, (1, 28, 28)),
        ("resnet20", {"dataset": "cifar10", "shortcut": "B"}, (3, 32, 32)),
        ("ensemble", {"member": "lenet", "k": 2, "num_classes": 4}, (1, 28, 28)),
    ],
)
def test_round_trip_rebuilds_identical_model(
    tmp_path: Path, name: str, kwargs: dict[str, object], shape: tuple[int, int, int]
) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kwargs)  # type: ignore[arg-type]
    model.train()
    with torch.no_grad():
        model(torch.rand(8, *shape))  # move BatchNorm running statistics off their defaults
    x = torch.rand(3, *shape)
    expected = _outputs(model, x)
    weights = save_checkpoint(
        tmp_path / "run" / "best",
        model,
        metadata={"recipe": {"method": "trades", "beta": 6.0}, "metrics": {"clean": 0.5}},
    )
    assert weights == tmp_path / "run" / "best.safetensors"
    assert _files(tmp_path / "run") == ["best.json", "best.safetensors"]

    loaded, meta = load_checkpoint(tmp_path / "run" / "best")
    assert isinstance(loaded, NormalizedModel) and not loaded.training
    assert torch.equal(_outputs(loaded, x), expected)
    assert loaded.spec == model.spec
    assert meta["model"]["name"] == name
    assert meta["recipe"] == {"method": "trades", "beta": 6.0}
    assert meta["metrics"] == {"clean": 0.5}
    assert meta["entrobust_version"] == entrobust.__version__
    assert meta["torch_version"] == torch.__version__
    assert meta["created"][:4].isdigit()
    assert meta["num_parameters"] == sum(p.numel() for p in model.parameters())

    fresh = create_model(name, **kwargs)  # type: ignore[arg-type]
    same, _ = load_checkpoint(weights, fresh)  # by the .safetensors name, into a given model
    assert same is fresh
    assert torch.equal(_outputs(fresh, x), expected)


def test_user_defined_module_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = TiedNet()
    x = torch.rand(2, 5)
    expected = _outputs(model, x)
    save_checkpoint(tmp_path / "tied", model)
    fresh = TiedNet()
    assert not torch.equal(_outputs(fresh, x), expected)
    load_checkpoint(tmp_path / "tied", fresh)
    assert torch.equal(_outputs(fresh, x), expected)
    assert fresh.b.weight is fresh.a.weight  # still tied after loading
    meta = read_checkpoint_metadata(tmp_path / "tied.json")
    assert meta["model"]["name"] is None and meta["model"]["class"] == "TiedNet"
    with pytest.raises(CheckpointError, match=r"custom model.*model="):
        load_checkpoint(tmp_path / "tied")


def test_custom_network_inside_normalized_model(tmp_path: Path) -> None:
    from entrobust.models import Normalize

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_classes = 3
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x.flatten(1))

    model = NormalizedModel(Flat(), Normalize([0.5], [0.25]))
    save_checkpoint(tmp_path / "best", model)  # a directory argument below means <dir>/best
    assert _files(tmp_path) == ["best.json", "best.safetensors"]
    meta = read_checkpoint_metadata(tmp_path)
    assert meta["model"]["num_classes"] == 3 and meta["model"]["mean"] == [0.5]
    fresh = NormalizedModel(Flat(), Normalize([0.0], [1.0]))
    load_checkpoint(tmp_path, fresh)
    assert fresh.normalize.mean.item() == 0.5  # normalization travels with the weights
    x = torch.rand(2, 1, 2, 2)
    assert torch.equal(_outputs(fresh, x), _outputs(model, x))


def test_parallel_wrappers_are_saved_and_loaded_unwrapped(tmp_path: Path) -> None:
    torch.manual_seed(6)
    inner = create_model("cnn4", dataset="mnist5k")
    save_checkpoint(tmp_path / "dp", nn.DataParallel(inner))  # no GPU needed to wrap
    meta = read_checkpoint_metadata(tmp_path / "dp")
    assert meta["model"]["name"] == "cnn4"
    loaded, _ = load_checkpoint(tmp_path / "dp")  # plain keys: loads without the wrapper
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(_outputs(loaded, x), _outputs(inner, x))
    target = nn.DataParallel(create_model("cnn4", dataset="mnist5k"))
    back, _ = load_checkpoint(tmp_path / "dp", target)
    assert back is target
    assert torch.equal(_outputs(target.module, x), _outputs(inner, x))


def test_extra_tensors_and_rich_metadata(tmp_path: Path) -> None:
    model = create_model("cnn4")
    ema = {"ema.fc2.weight": torch.randn(10, 50)}
    save_checkpoint(
        tmp_path / "epoch.10",  # dots in the stem are kept
        model,
        metadata={
            "config_file": Path("/some/where.toml"),
            "eps": (0.1, 0.2),
            "acc": np.float32(0.25),
            "per_class": np.arange(3),
            "tags": {"b", "a"},
        },
        extra_tensors=ema,
    )
    assert _files(tmp_path) == ["epoch.10.json", "epoch.10.safetensors"]
    meta = json.loads((tmp_path / "epoch.10.json").read_text())
    assert meta["config_file"] == "/some/where.toml"
    assert meta["eps"] == [0.1, 0.2] and meta["per_class"] == [0, 1, 2] and meta["tags"] == ["a", "b"]
    assert meta["extra_tensors"] == ["ema.fc2.weight"]
    extras = load_extra_tensors(tmp_path / "epoch.10")
    assert set(extras) == set(ema) and torch.equal(extras["ema.fc2.weight"], ema["ema.fc2.weight"])
    loaded, _ = load_checkpoint(tmp_path / "epoch.10")  # extras do not count as unexpected keys
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


def test_bad_metadata_writes_nothing(tmp_path: Path) -> None:
    model = create_model("cnn4")
    with pytest.raises(ConfigError, match="reserved"):
        save_checkpoint(tmp_path / "a", model, metadata={"sha256": "x"})
    with pytest.raises(ConfigError, match="JSON"):
        save_checkpoint(tmp_path / "a", model, metadata={"optimizer": object()})
    with pytest.raises(ConfigError, match="Tensor"):
        save_checkpoint(tmp_path / "a", model, extra_tensors={"x": [1, 2]})  # type: ignore[dict-item]
    assert _files(tmp_path) == []


# ---- refusals ------------------------------------------------------------------------------


def test_architecture_mismatch_names_both(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "s", create_model("smallcnn", dataset="mnist5k"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "s", create_model("cnn4"))
    assert "checkpoint" in str(err.value)
    assert "is smallcnn with 10 classes, model is cnn4 with 10 classes" in str(err.value)


def test_num_classes_mismatch_names_both(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "s", create_model("smallcnn", num_classes=10))
    with pytest.raises(CheckpointError, match="smallcnn with 10 classes, model is smallcnn with 5 classes"):
        load_checkpoint(tmp_path / "s", create_model("smallcnn", num_classes=5))


def test_custom_class_mismatch_and_key_mismatch(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "t", TiedNet())
    with pytest.raises(CheckpointError, match=r"is TiedNet .*model is cnn4"):
        load_checkpoint(tmp_path / "t", create_model("cnn4"))

    class TiedNet2(TiedNet):
        pass

    TiedNet2.__qualname__ = "TiedNet"  # same name, different layout: the keys must decide
    other = TiedNet2()
    other.extra = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match=r"missing keys extra\.weight, extra\.bias"):
        load_checkpoint(tmp_path / "t", other)


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "w", create_model("wrn34_10", depth=10, widen_factor=1))
    with pytest.raises(CheckpointError, match=r"shape mismatch .*\[16, 3, 3, 3\] vs model \[16, 1, 3, 3\]"):
        load_checkpoint(tmp_path / "w", create_model("wrn34_10", depth=10, widen_factor=1, in_channels=1))
    with pytest.raises(CheckpointError, match="depth=10"):  # same name, other size: kwargs shown
        load_checkpoint(tmp_path / "w", create_model("wrn34_10", depth=10, widen_factor=2, num_classes=3))


def test_expect_checks_spec_and_metadata(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m", create_model("cnn4", dataset="mnist5k"), metadata={"epoch": 3})
    load_checkpoint(tmp_path / "m", expect={"dataset": "mnist5k", "num_classes": 10, "epoch": 3})
    with pytest.raises(CheckpointError, match="dataset='mnist5k', expected 'cifar10'"):
        load_checkpoint(tmp_path / "m", expect={"dataset": "cifar10"})
    with pytest.raises(CheckpointError, match="no 'seed'"):
        load_checkpoint(tmp_path / "m", expect={"seed": 1})


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nothere\.json"):
        load_checkpoint(tmp_path / "nothere")
    weights = save_checkpoint(tmp_path / "c", create_model("cnn4"))
    json_path = tmp_path / "c.json"
    good_json = json_path.read_text()

    json_path.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint metadata .*c\.json"):
        load_checkpoint(tmp_path / "c")
    json_path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not an entrobust checkpoint"):
        load_checkpoint(tmp_path / "c")

    json_path.unlink()
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        load_checkpoint(tmp_path / "c")
    json_path.write_text(good_json)
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"weights not found: .*c\.safetensors"):
        load_checkpoint(tmp_path / "c")


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path / "t", create_model("lenet"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"t\.safetensors.*truncated"):
        load_checkpoint(tmp_path / "t")
    with pytest.raises(CheckpointError, match=r"corrupt or unreadable weights file .*t\.safetensors"):
        load_foreign_weights(weights)
    # without the recorded hash the parser itself must notice
    meta = json.loads((tmp_path / "t.json").read_text())
    del meta["sha256"]
    (tmp_path / "t.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"corrupt or unreadable weights file .*t\.safetensors"):
        load_checkpoint(tmp_path / "t")


# ---- atomicity -----------------------------------------------------------------------------


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(4)
    old = create_model("cnn4")
    save_checkpoint(tmp_path / "ck", old)
    x = torch.rand(2, 1, 28, 28)
    expected = _outputs(old, x)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(entrobust.io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", create_model("cnn4"))
    monkeypatch.undo()
    assert _files(tmp_path) == ["ck.json", "ck.safetensors"]  # no temporary files left
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert torch.equal(_outputs(loaded, x), expected)


def test_checkpoint_paths_forms(tmp_path: Path) -> None:
    stem = tmp_path / "a.b"
    expected = (tmp_path / "a.b.safetensors", tmp_path / "a.b.json")
    assert checkpoint_paths(stem) == expected
    assert checkpoint_paths(f"{stem}.json") == expected
    assert checkpoint_paths(f"{stem}.safetensors") == expected


def test_directory_means_best_else_last(tmp_path: Path) -> None:
    """A run directory resolves to what training writes: ``best`` if present, else ``last``."""
    with pytest.raises(CheckpointError, match=r"looked for .*best\.json, .*last\.json") as err:
        checkpoint_paths(tmp_path)
    assert "model" not in str(err.value)
    with pytest.raises(CheckpointError, match="directory without a checkpoint"):
        load_checkpoint(tmp_path)
    torch.manual_seed(0)
    last, best = create_model("mlp3", hidden=4), create_model("mlp3", hidden=4)
    save_checkpoint(tmp_path / "last", last)
    assert checkpoint_paths(tmp_path) == (tmp_path / "last.safetensors", tmp_path / "last.json")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(_outputs(load_checkpoint(tmp_path)[0], x), _outputs(last, x))
    save_checkpoint(tmp_path / "best", best)
    assert checkpoint_paths(f"{tmp_path}/") == (tmp_path / "best.safetensors", tmp_path / "best.json")
    assert torch.equal(_outputs(load_checkpoint(tmp_path)[0], x), _outputs(best, x))


# ---- foreign weights -----------------------------------------------------------------------


class _Payload:
    """Pickles to ``open(marker, "w")``: unpickling it creates ``marker`` (code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_malicious_torch_file_is_refused_and_not_run(tmp_path: Path) -> None:
    control_marker, marker = tmp_path / "control-ran", tmp_path / "payload-ran"
    control, evil = tmp_path / "control.pt", tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Payload(control_marker)}, control)
    torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, evil)
    torch.load(control, weights_only=False)  # the payload is live: unsafe loading runs it
    assert control_marker.exists()

    with pytest.raises(CheckpointError, match=r"refusing to unpickle .*evil\.pt.*not plain tensors") as err:
        load_foreign_weights(evil)
    assert "io.open" in str(err.value)  # says what was refused
    assert not marker.exists()


def test_malicious_raw_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    control_marker, marker = tmp_path / "control-ran", tmp_path / "payload-ran"
    control, evil = tmp_path / "control.pkl", tmp_path / "evil.pth"
    for path, m in ((control, control_marker), (evil, marker)):
        with open(path, "wb") as f:
            pickle.dump({"state_dict": {"w": _Payload(m)}}, f, protocol=2)
    with open(control, "rb") as f:
        pickle.load(f)  # proves the payload would run
    assert control_marker.exists()

    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_foreign_weights(evil)
    assert not marker.exists()


def test_foreign_state_dict_loads_into_net(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = create_model("smallcnn", dataset="mnist5k")
    path = tmp_path / "trades.pt"
    wrapped = {f"module.{k}": v for k, v in source.net.state_dict().items()}  # DataParallel keys
    torch.save({"epoch": 76, "state_dict": wrapped, "unused.weight": torch.ones(1)}, path)
    target = create_model("smallcnn", dataset="mnist5k")
    state = load_foreign_weights(path, target, normalization="dataset")
    assert "feature_extractor.conv1.weight" in state
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(_outputs(target, x), _outputs(source, x))


def test_foreign_rename_drops_and_maps_keys(tmp_path: Path) -> None:
    source = create_model("wrn34_10", depth=10, widen_factor=1).net
    state = dict(source.state_dict())
    state["sub_block1.layer.0.bn1.weight"] = torch.ones(16)  # as in TRADES/MART checkpoints
    path = tmp_path / "wrn.pth"
    torch.save(state, path)
    target = create_model("wrn34_10", depth=10, widen_factor=1)
    with pytest.raises(CheckpointError, match="unexpected keys sub_block1"):
        load_foreign_weights(path, target, normalization="dataset")
    load_foreign_weights(
        path, target, normalization="dataset", rename=lambda k: None if k.startswith("sub_block1.") else k
    )
    x = torch.rand(2, 3, 32, 32)
    source.eval()
    with torch.no_grad():
        assert torch.equal(_outputs(target, x), source(x))


def test_foreign_non_state_dict_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_foreign_weights(path)
    with pytest.raises(CheckpointError, match=r"not found: .*absent\.pt"):
        load_foreign_weights(tmp_path / "absent.pt")
    broken = tmp_path / "broken.pt"
    torch.save({"w": torch.zeros(100)}, broken)
    broken.write_bytes(broken.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        load_foreign_weights(broken)
    assert os.path.getsize(broken) == 50


# ---- crash safety of an overwrite, crafted metadata, torch's refusal text -----------------------


def test_overwrite_interrupted_after_commit_loads_new_then_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the JSON (commit point) and the weights' rename leaves the new checkpoint
    loadable (from its staged weights); the next save finishes and cleans up."""
    torch.manual_seed(1)
    old, new = create_model("cnn4"), create_model("cnn4")
    save_checkpoint(tmp_path / "ck", old)
    x = torch.rand(2, 1, 28, 28)
    real = entrobust.io.os.replace
    calls: list[str] = []

    def replace_then_crash(src: object, dst: object) -> None:
        if str(dst).endswith(".safetensors"):
            raise KeyboardInterrupt  # the process dies before the weights are renamed
        calls.append(str(dst))
        real(src, dst)

    monkeypatch.setattr(entrobust.io.os, "replace", replace_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ck", new)
    monkeypatch.undo()
    assert calls and calls[-1].endswith("ck.json")
    loaded, _ = load_checkpoint(tmp_path / "ck")  # the new checkpoint, never neither
    assert torch.equal(_outputs(loaded, x), _outputs(new, x))
    save_checkpoint(tmp_path / "ck", old)
    assert _files(tmp_path) == ["ck.json", "ck.safetensors"]
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert torch.equal(_outputs(loaded, x), _outputs(old, x))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format_version", "1", "format_version must be an integer"),
        ("sha256", 5, "sha256 must be"),
        ("extra_tensors", "x", "extra_tensors must be"),
        ("model.kwargs", [1], "model.kwargs must be"),
        ("model.num_classes", "10", "model.num_classes must be"),
        ("model.num_classes", True, "model.num_classes must be"),
        ("model.mean", ["a"], "model.mean must be"),
        ("model.name", 3, "model.name must be"),
        ("model.kwargs", {"nosuch": 1}, "cannot rebuild"),
    ],
)
def test_wrong_field_types_raise_checkpoint_error(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    save_checkpoint(tmp_path / "ck", create_model("cnn4", dataset="mnist5k"))
    meta = json.loads((tmp_path / "ck.json").read_text())
    where, _, key = field.rpartition(".")
    (meta[where] if where else meta)[key] = value
    (tmp_path / "ck.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "ck")


def test_crafted_spec_is_refused_before_allocating(tmp_path: Path) -> None:
    """A JSON asking for a huge model beside small weights is refused from the file's header —
    the model is built on the meta device first, never for real."""
    save_checkpoint(tmp_path / "ck", create_model("cnn4", dataset="mnist5k"))
    meta = json.loads((tmp_path / "ck.json").read_text())
    meta["model"]["num_classes"] = 50_000_000  # a real cnn4 of this size would need ~200 GB
    (tmp_path / "ck.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(tmp_path / "ck")


def test_blocked_module_refusal_quotes_torchs_reason(tmp_path: Path) -> None:
    """torch puts the reason for a blocked module after its advice; the message quotes the reason."""

    class _System:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _System()}, evil)
    with pytest.raises(CheckpointError, match="refusing to unpickle") as err:
        load_foreign_weights(evil)
    assert "is blocked" in str(err.value) and "system" in str(err.value)
    assert "In PyTorch 2.6" not in str(err.value)
