"""The one robust-correctness rule (``entrobust.evaluation.robust``) on a toy whose answer is known:
a 1-D two-class model that predicts the sign of its input, attacked by a shift of known size."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from entrobust.errors import ConfigError
from entrobust.evaluation.robust import clean_correct, correct, robust_correct


class Sign(nn.Module):
    """Logits ``(x, −x)``: class 0 for x > 0, class 1 for x < 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        v = x.flatten(1)[:, :1] * self.w
        return torch.cat([v, -v], 1)


class Coin(nn.Module):
    """A randomized model: right with probability ``p`` per forward, from a seeded generator."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        right = torch.rand(x.shape[0], generator=self.g) < self.p
        return torch.stack([right.float(), (~right).float()], 1) * self.w


def shift(delta: float):
    def attack(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return x - delta * torch.where(y == 0, 1.0, -1.0).view(-1, 1)

    return attack


X = torch.tensor([[0.05], [0.2], [-0.3], [0.5], [-0.02], [0.1], [-0.7]])
Y = torch.tensor([0, 0, 1, 0, 1, 1, 1])  # the 0.1 example is labelled 1: a clean mistake


def test_clean_and_robust_correctness_match_the_closed_form() -> None:
    model = Sign()
    assert clean_correct(model, X, Y, batch_size=3).tolist() == [True, True, True, True, True, False, True]
    # a shift of 0.15 towards the other class breaks exactly the points with |x| < 0.15
    got = robust_correct(model, shift(0.15), X, Y, batch_size=3)
    assert got.tolist() == [False, True, True, True, False, False, True]
    assert got.dtype == torch.bool and got.device.type == "cpu"
    assert not robust_correct(model, shift(10.0), X, Y, batch_size=2).any()


@pytest.mark.parametrize("batch_size", [1, 2, 7, 100])
def test_the_answer_does_not_depend_on_the_batch_size(batch_size: int) -> None:
    model = Sign()
    ref = robust_correct(model, shift(0.15), X, Y, batch_size=len(X))
    assert torch.equal(robust_correct(model, shift(0.15), X, Y, batch_size=batch_size), ref)
    assert clean_correct(model, X[:0], Y[:0], batch_size=batch_size).shape == (0,)


def test_a_randomized_model_is_correct_by_a_strict_majority_of_draws() -> None:
    x, y = torch.zeros(400, 1), torch.zeros(400, dtype=torch.long)
    often, rarely = Coin(0.9), Coin(0.1)
    assert correct(often, x, y, draws=15).float().mean() > 0.95
    assert correct(rarely, x, y, draws=15).float().mean() < 0.05
    one = correct(Coin(0.5), x, y).float().mean()  # one forward reads a single draw
    assert 0.35 < float(one) < 0.65


def test_mode_and_gradient_flags_are_restored() -> None:
    model = Sign().train()
    correct(model, X, Y)
    robust_correct(model, shift(0.1), X, Y, batch_size=2)
    assert model.training and model.w.requires_grad


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        clean_correct(Sign(), X, Y, batch_size=0)
