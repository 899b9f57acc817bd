"""AutoAttack's speed-ups keep its results: early stops and batched FAB-T targets (issue 15 item 6).

AutoAttack only asks whether each point breaks, so APGD and FAB may stop iterating on a point
once it does (``early_stop=True``) and FAB-T may run its target classes as one batch
(``batch_targets=True``). These tests compare each against the straightforward path: the same
points broken, the same iterates for the points that are not, and the cascade's per-example
worst case unchanged.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entrobust.attacks import ThreatModel
from entrobust.attacks.apgd import APGD
from entrobust.attacks.autoattack import AutoAttack
from entrobust.attacks.fab import FAB
from entrobust.attacks.square import Square

torch.set_num_threads(1)


def _same(a: Tensor, b: Tensor) -> bool:
    """The same float64 points up to rounding: rows computed in a batch of another size (a subset of
    points, several targets at once) take other kernel paths, which differ in the last bits — more
    so between CPU kinds (AVX-512, AVX2, generic)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=0.0, atol=1e-9)


def _data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, 5, (n,), generator=g)
    x = (0.6 * protos[y] + 0.4 * torch.rand(n, 1, 6, 6, generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, Tensor, Tensor]:
    """A trained 5-class CNN and 20 points it classifies correctly, in float64 (so that the
    result of a row does not depend on the batch it is computed in, up to the last bit)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 5))
    x, y = _data(256, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model = model.double().eval()
    x, y = _data(64, seed=2)
    x = x.double()
    with torch.no_grad():
        keep = model(x).argmax(1).eq(y)
    return model, x[keep][:20], y[keep][:20]


def _mixed_eps(norm: str, n: int) -> Tensor:
    """Per-example ε from easy to hopeless, so that some points break early, some late, some never."""
    top = 0.3 if norm == "linf" else 1.5
    return torch.linspace(0.02, top, n, dtype=torch.float64)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
def test_apgd_early_stop_breaks_the_same_points_along_the_same_iterates(
    tiny: tuple[nn.Module, Tensor, Tensor], norm: str, loss: str
) -> None:
    model, x, y = tiny
    threat = ThreatModel(norm, _mixed_eps(norm, x.shape[0]))
    kw: dict[str, object] = {"loss": loss, "n_iter": 15, "n_target_classes": 3, "seed": 3}
    full = APGD(threat, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    fast = APGD(threat, early_stop=True, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    assert 0 < int(full.success.sum()) < x.shape[0]  # the constructed case mixes both outcomes
    assert torch.equal(fast.success, full.success)
    assert torch.equal(fast.first_success, full.first_success)
    # points never broken follow the very same iterates
    assert _same(fast.x_adv[~full.success], full.x_adv[~full.success])


def test_apgd_early_stop_ends_the_run_when_every_point_is_broken(
    tiny: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = tiny
    calls = {"n": 0}

    def counted(inp: Tensor) -> Tensor:
        calls["n"] += 1
        return model(inp)

    net = nn.Module()
    net.forward = counted  # type: ignore[method-assign]
    atk = APGD(ThreatModel("linf", 0.5), n_iter=50, seed=0, early_stop=True)
    res = atk(net, x, y, return_info=True)
    assert bool(res.success.all())
    assert calls["n"] < 20  # far fewer than the 50 iterations' passes


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_early_stop_breaks_the_same_points(tiny: tuple[nn.Module, Tensor, Tensor], norm: str) -> None:
    model, x, y = tiny
    threat = ThreatModel(norm, _mixed_eps(norm, x.shape[0]))
    for targeted in (False, True):
        kw: dict[str, object] = {
            "targeted": targeted,
            "n_iter": 15,
            "n_target_classes": 3,
            "batch_targets": False,
        }
        full = FAB(threat, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
        fast = FAB(threat, early_stop=True, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
        assert 0 < int(full.success.sum()) < x.shape[0]
        assert torch.equal(fast.success, full.success)
        assert _same(fast.x_adv[~full.success], full.x_adv[~full.success])
        eps = threat.eps_for(x).flatten()
        assert bool((fast.distance[fast.success] <= eps[fast.success] + 1e-6).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("early_stop", [False, True])
def test_fab_t_batched_targets_equal_the_sequential_loop(
    tiny: tuple[nn.Module, Tensor, Tensor], norm: str, early_stop: bool
) -> None:
    model, x, y = tiny
    threat = ThreatModel(norm, _mixed_eps(norm, x.shape[0]))
    kw: dict[str, object] = {"targeted": True, "n_iter": 15, "n_target_classes": 4, "early_stop": early_stop}
    seq = FAB(threat, batch_targets=False, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    bat = FAB(threat, batch_targets=True, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    assert 0 < int(seq.success.sum()) < x.shape[0]
    assert torch.equal(bat.success, seq.success)
    if not early_stop:  # the same lowest-rank target's closest example
        assert _same(bat.x_adv, seq.x_adv)
    # groups of targets (max_rows smaller than all rows) give the same broken set
    grouped = FAB(threat, batch_targets=True, max_rows=2 * x.shape[0], **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    assert torch.equal(grouped.success, seq.success)


def test_autoattack_early_stops_keep_the_per_example_worst_case(
    tiny: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = tiny
    threat = ThreatModel("linf", _mixed_eps("linf", x.shape[0]))
    common: dict[str, object] = {"version": "standard", "n_iter": 10, "n_queries": 40, "n_target_classes": 3}
    off = {name: {"early_stop": False} for name in ("apgd-ce", "apgd-t", "fab-t")}
    full = AutoAttack(threat, attack_kwargs=off, **common)  # type: ignore[arg-type]
    fast = AutoAttack(threat, **common)  # type: ignore[arg-type]
    _, rep_full = full.run(model, x, y)
    x_fast, rep_fast = fast.run(model, x, y)
    assert torch.equal(rep_fast.robust, rep_full.robust)
    assert torch.equal(rep_fast.broken_by, rep_full.broken_by)
    assert fast.component("fab-t", threat).early_stop  # type: ignore[attr-defined]
    assert float(threat.distance(x_fast, x).sub(threat.eps_for(x).flatten()).max()) <= 1e-6


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_skipping_unchanged_proposals_changes_nothing(
    tiny: tuple[nn.Module, Tensor, Tensor], norm: str
) -> None:
    """Proposals equal to the current best are not queried: same result, fewer forwards."""
    model, x, y = tiny
    threat = ThreatModel(norm, _mixed_eps(norm, x.shape[0]))
    rows = {"n": 0}

    def counted(inp: Tensor) -> Tensor:
        rows["n"] += inp.shape[0]
        return model(inp)

    net = nn.Module()
    net.forward = counted  # type: ignore[method-assign]
    plain = Square(threat, n_queries=150, seed=1)
    plain._skip_unchanged = False
    ref = plain(net, x, y)
    rows_plain, rows["n"] = rows["n"], 0
    fast = Square(threat, n_queries=150, seed=1)(net, x, y)
    assert _same(fast, ref)
    if norm == "linf":  # on ℓ∞ some windows already hold the proposed values
        assert rows["n"] < rows_plain


@pytest.mark.parametrize("early_stop", [False, True])
def test_apgd_t_batched_targets_are_the_sequential_runs_while_no_point_breaks(
    tiny: tuple[nn.Module, Tensor, Tensor], early_stop: bool
) -> None:
    """The random starts are drawn in the same order, so the rows follow the loop's iterates."""
    model, x, y = tiny
    threat = ThreatModel("linf", 0.005)
    kw: dict[str, object] = {"loss": "dlr-targeted", "n_iter": 15, "n_target_classes": 3, "seed": 3}
    seq = APGD(threat, early_stop=early_stop, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    bat = APGD(threat, early_stop=early_stop, batch_targets=True, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    grouped = APGD(threat, batch_targets=True, max_rows=2 * x.shape[0], **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    assert not bool(seq.success.any())
    assert _rows_follow(bat.x_adv, seq.x_adv) and _rows_follow(grouped.x_adv, seq.x_adv)


def _rows_follow(a: Tensor, b: Tensor) -> bool:
    """Nearly every row is the same point up to rounding. A step takes the sign of each gradient
    coordinate, so one near zero may flip on another CPU kind (AVX2: 1 row of 20 moved by 1.5e-5)
    and that row drifts; starts drawn in another order would move every row."""
    if a.shape != b.shape:
        return False
    moved = (a - b).abs().flatten(1).amax(1) > 1e-9
    return int(moved.sum()) <= max(1, a.shape[0] // 10)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_t_batched_targets_stop_every_row_of_a_broken_point_only(
    tiny: tuple[nn.Module, Tensor, Tensor], norm: str
) -> None:
    """With early stop a hit ends all rows of its point; the broken set is the one without it,
    and the first target's rows are the loop's first run, so what it breaks stays broken."""
    model, x, y = tiny
    threat = ThreatModel(norm, _mixed_eps(norm, x.shape[0]))
    kw: dict[str, object] = {"loss": "dlr-targeted", "n_iter": 15, "n_target_classes": 3, "seed": 3}
    full = APGD(threat, batch_targets=True, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    fast = APGD(threat, batch_targets=True, early_stop=True, **kw)(model, x, y, return_info=True)  # type: ignore[arg-type]
    assert 0 < int(full.success.sum()) < x.shape[0]
    assert torch.equal(fast.success, full.success)
    assert _same(fast.x_adv[~full.success], full.x_adv[~full.success])
    first = APGD(threat, **{**kw, "n_target_classes": 1})(model, x, y, return_info=True)  # type: ignore[arg-type]
    assert bool(fast.success[first.success].all())


def test_autoattack_channels_last_changes_no_result(tiny: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = tiny
    threat = ThreatModel("linf", _mixed_eps("linf", x.shape[0]))
    common: dict[str, object] = {"version": "standard", "n_iter": 10, "n_queries": 40, "n_target_classes": 3}
    _, nchw = AutoAttack(threat, channels_last=False, **common).run(model, x, y)  # type: ignore[arg-type]
    _, nhwc = AutoAttack(threat, channels_last=True, **common).run(model, x, y)  # type: ignore[arg-type]
    assert torch.equal(nhwc.broken_by, nchw.broken_by)


def test_autoattack_keeps_the_layout_of_a_model_that_needs_it() -> None:
    """A model that ``view``s a 4-D weight fails in channels-last: AutoAttack then runs it as is."""

    class Viewing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 2, 2, 2))

        def forward(self, x: Tensor) -> Tensor:
            return x.flatten(1) @ self.w.view(4, 8).t()

    x, y = torch.rand(4, 2, 2, 2), torch.tensor([0, 1, 2, 3])
    _, report = AutoAttack(ThreatModel("linf", 0.1), n_iter=3, n_queries=5).run(Viewing().eval(), x, y)
    assert report.broken_by.shape == (4,)
