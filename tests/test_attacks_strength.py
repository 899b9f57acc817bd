"""Relative strength on a small, normally trained CNN (scikit-learn digits, trained in seconds):
FGSM ≥ PGD-10 ≥ PGD-100 ≥ AutoAttack robust accuracy, random search and noise never beat PGD, and every
gradient attack really lowers accuracy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from entrobust.attacks import Attack, ThreatModel, build_attack

torch.set_num_threads(1)


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(h.flatten(1))


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return train_digits_cnn()


def train_digits_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A CNN trained for a few epochs on 1,500 digits; returns 150 correctly classified test points."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        for i in range(0, 1500, 50):
            opt.zero_grad()
            F.cross_entropy(model(x_train[i : i + 50]), y_train[i : i + 50]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        correct = model(x_test).argmax(1).eq(y_test)
    assert float(correct.float().mean()) > 0.9
    return model, x_test[correct][:150], y_test[correct][:150]


def robust(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bool per example: still correctly classified after the attack."""
    with torch.no_grad():
        return model(attack(model, x, y)).argmax(1).eq(y)


EPS = {"linf": 0.1, "l2": 1.0}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_stronger_attacks_never_help_the_model(trained: tuple, norm: str) -> None:
    model, x, y = trained
    threat = ThreatModel(norm, EPS[norm])
    fgsm = robust(build_attack("fgsm", threat), model, x, y)
    pgd10 = robust(build_attack("pgd", threat, steps=10, seed=0), model, x, y)
    pgd100 = robust(build_attack("pgd", threat, steps=100, seed=0), model, x, y)
    autoattack = robust(build_attack("autoattack", threat, version="standard", n_queries=500), model, x, y)
    acc = [float(r.float().mean()) for r in (fgsm, pgd10, pgd100, autoattack)]
    assert acc[0] >= acc[1] >= acc[2] >= acc[3], acc
    assert acc[0] > acc[2], acc  # the comparison is not vacuous at this ε
    assert 0.0 < acc[1] < 1.0, acc
    # per-example worst case over the suite is at most every member
    suite = fgsm & pgd10 & pgd100 & autoattack
    assert float(suite.float().mean()) <= min(acc)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_search_and_noise_never_beat_pgd(trained: tuple, norm: str) -> None:
    model, x, y = trained
    threat = ThreatModel(norm, EPS[norm])
    pgd = robust(build_attack("pgd", threat, steps=20, seed=0), model, x, y)
    search = robust(build_attack("random-search", threat, n=300, seed=0), model, x, y)
    noise = robust(build_attack("noise", threat, n=5, seed=0), model, x, y)
    acc_pgd, acc_rs, acc_noise = (float(r.float().mean()) for r in (pgd, search, noise))
    assert acc_rs >= acc_pgd and acc_noise >= acc_pgd, (acc_pgd, acc_rs, acc_noise)
    assert acc_rs < 1.0 or acc_pgd < 0.5  # the search itself does something on a normal model


GRADIENT_ATTACKS = {
    "bim": {},
    "mim": {},
    "cw-pgd": {"steps": 20},
    "adaptive-ls": {"steps": 10, "gammas": (0.0, 0.5, 1.0)},
    "atent": {},
    "deepfool": {},
    "PGD10-8": {},
    "CW10-8": {},
    "apgd-ce": {"n_iter": 20},
}


@pytest.mark.parametrize("name", sorted(GRADIENT_ATTACKS))
def test_gradient_attacks_lower_accuracy(trained: tuple, name: str) -> None:
    model, x, y = trained
    threat = ThreatModel("linf", EPS["linf"])
    kw = {**GRADIENT_ATTACKS[name]}
    attack = build_attack(name, threat, **kw)
    acc = float(robust(attack, model, x[:60], y[:60]).float().mean())
    pgd = build_attack("pgd", threat, steps=20, seed=0)
    pgd_acc = float(robust(pgd, model, x[:60], y[:60]).float().mean())
    assert acc < 1.0 - 0.5 * (1.0 - pgd_acc), (name, acc, pgd_acc)  # at least half of PGD's effect


def test_cw_l2_beats_fgm_on_l2(trained: tuple) -> None:
    model, x, y = trained
    threat = ThreatModel("l2", EPS["l2"])
    cw = robust(build_attack("cw-l2", threat, steps=100, search_steps=5), model, x[:40], y[:40])
    fgm = robust(build_attack("fgsm", threat), model, x[:40], y[:40])
    assert float(cw.float().mean()) <= float(fgm.float().mean())
