"""The foreign-weights recipe of docs/models.md reproduces the source model's numbers.

A "foreign" network is trained the way third-party robustness code does it — on raw [0, 1]
pixels, no normalization anywhere — and saved as a plain ``.pt`` state dict. Loaded into an
entrobust model with ``normalization="none"`` it must give exactly the source's clean and PGD
robust accuracy; with ``"dataset"`` (the model's digits mean/std) the numbers are another
model's — why the choice is required. (Here: source and ``"none"`` 88.6 % clean / 16.7 % PGD-10
at ε = 0.1; ``"dataset"`` 63.8 % / 6.7 %. On a TRADES-style MNIST model the wrong choice kept
clean accuracy within 0.2 points and overstated robust accuracy by 3.3.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from entrobust.checkpoint import load_checkpoint, load_foreign_weights, save_checkpoint
from entrobust.data import load_dataset
from entrobust.errors import CheckpointError, ConfigError
from entrobust.evaluation import evaluate
from entrobust.models import NormalizedModel, create_model

EPS = 0.1
SUITE = "pgd:steps=10:label=PGD-10"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ForeignNet(nn.Module):
    """What another code base would define: the mlp3 layout, no normalization."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


def _numbers(model: nn.Module) -> tuple[float, float]:
    result = evaluate(model, "digits", SUITE, [EPS], progress=False, seed=0)
    return result.clean_accuracy, result.robust_accuracy(EPS)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[float, float]]:
    """``(path of the .pt, (clean, robust) of the source model)``."""
    torch.manual_seed(0)
    train = load_dataset("digits", "train").to_float()
    net = ForeignNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):  # raw [0, 1] input, as TRADES / MART / AWP train
        opt.zero_grad()
        nn.functional.cross_entropy(net(train.x), train.y).backward()
        opt.step()
    net.eval()
    path = tmp_path_factory.mktemp("foreign") / "model-epoch150.pt"
    torch.save({"epoch": 150, "state_dict": net.state_dict()}, path)
    return path, _numbers(net)


def _recipe(path: Path, normalization: object) -> NormalizedModel:
    model = create_model("mlp3", dataset="digits", input_size=8, hidden=16)
    load_foreign_weights(path, model, normalization=normalization)  # type: ignore[arg-type]
    return model


def test_none_reproduces_the_source_and_dataset_does_not(foreign) -> None:
    path, (clean, robust) = foreign
    assert 0.8 < clean and robust < clean  # a real model, and the attack bites

    model = _recipe(path, "none")
    assert model.normalize.mean.flatten().tolist() == [0.0]
    assert model.normalize.std.flatten().tolist() == [1.0]
    assert _numbers(model) == (clean, robust)  # same path, same threads: identical

    _, robust_ds = _numbers(_recipe(path, "dataset"))
    assert robust_ds != robust  # the wrong normalization misstates robustness

    custom = _recipe(path, ([0.0], [1.0]))  # the same choice spelled as statistics
    assert _numbers(custom) == (clean, robust)


def test_choice_survives_a_save_and_rebuild(foreign, tmp_path: Path) -> None:
    path, (clean, robust) = foreign
    save_checkpoint(tmp_path / "best", _recipe(path, "none"))
    rebuilt, meta = load_checkpoint(tmp_path)  # the directory means its best checkpoint
    assert meta["model"]["mean"] == [0.0] and meta["model"]["std"] == [1.0]
    assert _numbers(rebuilt) == (clean, robust)


def test_normalization_is_a_required_explicit_choice(foreign) -> None:
    path, _ = foreign
    model = create_model("mlp3", dataset="digits", input_size=8, hidden=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r'"none".*\n.*\n.*"dataset".*mean=\[0\.3054\].*\n.*\(mean, std\)'):
        load_foreign_weights(path, model)
    with pytest.raises(ConfigError, match="not a valid choice"):
        load_foreign_weights(path, model, normalization="imagenet")
    with pytest.raises(ConfigError, match="1 input channels"):
        load_foreign_weights(path, model, normalization=([0.5] * 3, [0.2] * 3))
    with pytest.raises(ConfigError, match="positive stds"):
        load_foreign_weights(path, model, normalization=([0.5], [0.0]))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    with pytest.raises(ConfigError, match="plain ForeignNet"):
        load_foreign_weights(path, ForeignNet(), normalization="dataset")
    load_foreign_weights(path, ForeignNet(), normalization="none")
    assert "layers.1.weight" in load_foreign_weights(path)  # reading alone needs no choice


def test_file_normalization_must_agree_with_the_choice(tmp_path: Path) -> None:
    model = create_model("mlp3", dataset="digits", input_size=8, hidden=16)
    path = tmp_path / "with-buffers.pt"
    torch.save(model.state_dict(), path)  # an entrobust state dict: normalization included
    with pytest.raises(CheckpointError, match=r"carries its own normalization.*'none'"):
        load_foreign_weights(
            path, create_model("mlp3", dataset="digits", input_size=8, hidden=16), normalization="none"
        )
    load_foreign_weights(
        path, create_model("mlp3", dataset="digits", input_size=8, hidden=16), normalization="dataset"
    )
