"""Suites resolve, parse and run with the real attacks on a tiny trained model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from entrobust.attacks import ATTACKS
from entrobust.errors import ConfigError, UnknownNameError
from entrobust.evaluation import SUITES, Suite, SuiteEntry, evaluate, get_suite, parse_value
from entrobust.evaluation.evaluate import _build_attack, build_plan

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP trained for a few seconds on scikit-learn digits (8×8), ~90 % test accuracy."""
    from entrobust.data import load_dataset
    from entrobust.models import create_model

    torch.manual_seed(0)
    train = load_dataset("digits", "train").to_float()
    test = load_dataset("digits", "test").to_float()
    model = create_model("mlp3", dataset="digits", input_size=8, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(train.x), train.y).backward()
        opt.step()
    model.eval()
    return model, test.x[:40], test.y[:40]


@pytest.mark.parametrize("name", SUITES.names())
@pytest.mark.parametrize("dataset", ["mnist5k", "cifar10", None])
def test_every_suite_builds_its_attacks(name, dataset):
    suite = get_suite(name, dataset)
    eps = suite.default_eps(dataset) or (0.1,)
    cols, steps = build_plan(suite, eps, "linf")
    assert steps and cols == sorted(cols)
    for step in steps:
        attack = _build_attack(suite.entries[step.entry_index], step.eps, step.norm)
        assert float(attack.threat.eps) == pytest.approx(step.eps)
        assert attack.threat.norm == step.norm
        assert not attack.targeted


def test_ru_suite_follows_the_paper_tables():
    cifar = get_suite("ru", "cifar10")
    mnist = get_suite("ru", "mnist5k")
    assert cifar.name == "ru-cifar" and mnist.name == "ru-mnist"
    assert {"FGSM_4", "PGD10-4", "PGD40-16", "CW40-8"} <= set(cifar.labels)
    assert {"FGSM_32", "PGD10-48", "PGD40-32"} <= set(mnist.labels)
    by = {e.label: e for e in cifar.entries}
    assert by["PGD40-16"].eps == pytest.approx(16 / 255) and by["FGSM_4"].eps == pytest.approx(4 / 255)
    attack = _build_attack(by["PGD20-8"], 8 / 255, "linf")
    assert attack.steps == 20 and attack.restarts == 5  # type: ignore[attr-defined]


def test_autoattack_suites_match_the_attack_versions():
    from entrobust.attacks.autoattack import RESTARTS, VERSIONS

    for version in ("standard", "plus"):
        suite = get_suite(f"autoattack-{version}")
        assert [e.attack for e in suite.entries] == list(VERSIONS[version])
        assert [e.kwargs["restarts"] for e in suite.entries] == [
            RESTARTS[version][a] for a in VERSIONS[version]
        ]


def test_parse_custom_suites():
    s = get_suite("pgd:steps=40:rel_step=0.1,fgsm")
    assert [e.attack for e in s.entries] == ["pgd", "fgsm"]
    assert dict(s.entries[0].kwargs) == {"steps": 40, "rel_step": 0.1}
    p = get_suite("pgd(steps=10, init=none, norm=l2, eps=0.5, label=mine),PGD20-8")
    assert p.entries[0].label == "mine" and p.entries[0].norm == "l2" and p.entries[0].eps == 0.5
    assert dict(p.entries[0].kwargs) == {"steps": 10, "init": "none"}
    assert p.entries[1].eps == pytest.approx(8 / 255)
    both = get_suite("quick,minmax")
    assert both.labels[:2] == ["FGSM", "PGD-20"] and "LinfBIA" in both.labels
    assert len(both.entries) == len(set(both.labels))
    assert get_suite("quick,quick").labels == get_suite("quick").labels  # duplicates dropped
    assert parse_value("8/255") == pytest.approx(8 / 255) and parse_value("true") is True
    assert parse_value("null") is None and parse_value("none") == "none"
    with pytest.raises(UnknownNameError, match="nosuch"):
        get_suite("quick,nosuch")
    with pytest.raises(ConfigError):
        get_suite("pgd:steps")
    with pytest.raises(ConfigError):
        get_suite("pgd(steps=3")
    with pytest.raises(ConfigError):
        get_suite("")
    with pytest.raises(ConfigError):
        Suite("dup", (SuiteEntry("a", "fgsm"), SuiteEntry("a", "pgd")))
    with pytest.raises(ConfigError):
        SuiteEntry("x", "fgsm", norm="l7")


def test_listing_reads_the_registry():
    from entrobust.cli.listing import rows

    names = [n for n, _ in rows("suites")]
    assert names == SUITES.names()
    assert all(text for _, text in rows("suites"))
    assert "fgsm" in ATTACKS


def test_real_attacks_quick_and_minmax(digits_model):
    model, x, y = digits_model
    res = evaluate(model, (x, y), "quick,minmax", [0.05, 0.15], progress=False, batch_size=16)
    clean = res.clean["clean_correct"]
    assert res.clean_accuracy > 0.7
    r1, r2 = res.robust_mask(0.05), res.robust_mask(0.15)
    assert not bool((r1 & ~clean).any()) and not bool((r2 & ~r1).any())
    assert res.robust_accuracy(0.15) < res.clean_accuracy
    found = res.adv_found & clean
    with torch.no_grad():
        pred = model(res.adv_x[found]).argmax(1)
    assert bool(pred.ne(y[found]).all())
    # L2BIA rows really run in ℓ2 with the same numeric ε
    for s in res.steps:
        ran = res.records["ran"][s.index]
        if s.label == "L2BIA" and bool(ran.any()):
            assert s.norm == "l2"
            delta = (res.adv_x - x).flatten(1)
            fooled_here = res.broken_step == s.index
            if bool(fooled_here.any()):
                assert bool((delta[fooled_here].norm(dim=1) <= s.eps + 1e-5).all())


def test_real_autoattack_standard_runs(digits_model):
    model, x, y = digits_model
    res = evaluate(model, (x[:8], y[:8]), "autoattack-standard", 0.12, progress=False)
    assert res.labels == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert res.robust_accuracy() <= res.clean_accuracy
    stats = res.attack_stats()
    assert stats[0]["n_attacked"] == int(res.clean["clean_correct"].sum())


class _AlwaysZero(nn.Module):
    """Predicts class 0 for every input (so every example labelled 1 is misclassified clean)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 10) + self.w
        logits[:, 0] = 1.0
        return logits


def _all_misclassified() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return _AlwaysZero(), torch.rand(12, 1, 4, 4, generator=g), torch.ones(12, dtype=torch.long)


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ("pgd:steps=0", "suite row 'pgd(steps=0)': steps must be an integer >= 1, got 0"),
        ("fgsm,pgd:stepz=3", "unknown option(s) ['stepz'] for attack 'pgd'; valid: "),
        ("fgsm,square:n_queries=0", "suite row 'square(n_queries=0)'"),
    ],
)
def test_bad_attack_options_fail_before_any_work_even_with_nothing_to_attack(suite, message):
    """Every point is misclassified clean, so no attack would ever run: the options are still
    checked first (attacks are built, not run), never a table of zeros."""
    model, x, y = _all_misclassified()
    with pytest.raises(ConfigError) as info:
        evaluate(model, (x, y), suite, eps=[0.1], progress=False)
    assert message in str(info.value)


def test_an_all_misclassified_set_gives_a_valid_result():
    model, x, y = _all_misclassified()
    result = evaluate(model, (x, y), "fgsm,pgd:steps=2", eps=[0.1, 0.2], progress=False)
    assert result.clean_accuracy == 0.0
    assert sorted(result.accuracy_by_eps()) == pytest.approx([0.1, 0.2])
    assert all(a == 0.0 for a in result.accuracy_by_eps().values())


def test_check_suite_builds_every_step_without_running_it():
    from entrobust.evaluation.suites import check_suite

    check_suite(get_suite("quick,minmax", "mnist5k"), (0.1, 0.3), "linf")  # valid: no error
    with pytest.raises(ConfigError, match="needs eps values"):
        check_suite(get_suite("pgd:steps=3"), (), "linf")
    with pytest.raises(ConfigError, match=r"suite row 'bim\(steps=-1\)'"):
        check_suite(get_suite("fgsm,bim:steps=-1"), (0.1,), "linf")
