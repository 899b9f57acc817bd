"""FAB: the fast adaptive boundary attack (minimal-distortion adversarial examples).

Croce & Hein, *Minimally distorted adversarial examples with a fast adaptive boundary attack*,
ICML 2020 (arXiv 1907.02044), Algorithm 1, eqs. (4)-(9); the constants and the restart / target
loops follow the official AutoAttack code, ``fra31/auto-attack`` ``autoattack/fab_base.py`` and
``autoattack/fab_pt.py``. The box-constrained hyperplane projections (``fab_projections.py``
upstream) are re-derived here from their KKT conditions (see :func:`project_hyperplane_box`).

Registered names: ``fab`` (untargeted) and ``fab-t`` (targeted, 9 target classes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from entrobust.attacks.apgd import ranked_targets
from entrobust.attacks.base import Attack, ModelMode
from entrobust.attacks.losses import fp32
from entrobust.attacks.registry import ATTACKS
from entrobust.attacks.threat import ThreatModel, batch_view, flat_norm
from entrobust.errors import ConfigError

_BIG = 1e10


def project_hyperplane_box(
    t: Tensor, w: Tensor, b: Tensor, norm: str, lower: float = 0.0, upper: float = 1.0
) -> Tensor:
    """Minimal-norm step d with ⟨w, t + d⟩ = b and lower ≤ t + d ≤ upper (FAB eq. 5).

    Shapes: ``t``, ``w`` ``(N, D)``, ``b`` ``(N,)``; returns ``d`` ``(N, D)``. Solved exactly (up to
    rounding) in O(D log D) per row. With c = b − ⟨w, t⟩ (sign-flipped so c ≥ 0) and cap_i the room to the
    box in the direction sign(w_i)·sign(c), the optimum is d_i = sign(w_i)·min(λ·g_i, cap_i), with
    g_i = |w_i| for ℓ2 (KKT: d = clip(λw) on the box) and g_i = 1 for ℓ∞ (a common level λ = ‖d‖∞),
    and the scalar λ ≥ 0 solves the piecewise-linear, nondecreasing equation
    Σ_i |w_i|·min(λ·g_i, cap_i) = c, found by sorting the breakpoints cap_i/g_i. When even the
    full box cannot reach the hyperplane, the box corner that gets closest is returned (the
    caller clamps to the box anyway).

    Computed in the inputs' dtype, at least float32 (``fab_projections.py`` works in float32
    too; float64 costs ≈ 1.7× the time here, which was ≈ 20 % of FAB-T's on cnn4).
    """
    dtype = t.dtype
    work = torch.promote_types(dtype, torch.float32)
    tw, ww, bw = t.to(work), w.to(work), b.to(work)
    c = bw - (ww * tw).sum(1)
    w_s = torch.where(c[:, None] < 0, -ww, ww)  # now the goal is ⟨w_s, d⟩ = |c|
    c_abs = c.abs()
    a = w_s.abs()
    moves = a > 0
    cap = torch.where(w_s > 0, upper - tw, tw - lower).clamp_min_(0.0).mul_(moves)
    inf = float("inf")
    # breakpoint of each coordinate: λ at which it hits the box (inf where it never moves)
    if norm == "l2":
        lam_i = torch.where(moves, cap / a, inf)
    else:  # g = 1: the breakpoint is the room itself
        lam_i = cap.masked_fill(~moves, inf)
    lam_s, order = lam_i.sort(dim=1)
    finite = lam_s < inf
    lam_fin = torch.where(finite, lam_s, 0.0)
    a_s = a.gather(1, order)
    # φ(λ_k) = Σ_{j<=k} a_j cap_j + λ_k Σ_{j>k} a_j g_j  (coordinates sorted by breakpoint);
    # a_j cap_j = a_j g_j λ_j, and 0 for the coordinates that never move (a_j = 0)
    ag = a_s * a_s if norm == "l2" else a_s
    sat = torch.cumsum(ag * lam_fin, dim=1)
    cum_ag = torch.cumsum(ag, dim=1)
    total_ag = cum_ag[:, -1:]
    free_after = total_ag - cum_ag
    phi = torch.where(finite, sat + lam_fin * free_after, inf)
    # first breakpoint where φ reaches |c|; λ* lies in the segment just before it
    k = (phi < c_abs[:, None]).sum(1, keepdim=True)  # breakpoints strictly below the solution
    feasible = sat[:, -1] >= c_abs
    prev = (k - 1).clamp(0, lam_s.shape[1] - 1)
    sat_before = torch.where(k > 0, sat.gather(1, prev), 0.0).squeeze(1)
    free_from = torch.where(k > 0, free_after.gather(1, prev), total_ag).squeeze(1)
    tiny = torch.finfo(work).tiny
    lam = torch.where(free_from > 0, (c_abs - sat_before) / free_from.clamp_min(tiny), 0.0)
    lam = torch.where(feasible, lam.clamp_min(0.0), inf)
    # |d_i| = min(λ·g_i, cap_i) (cap_i = 0 where the coordinate never moves)
    if norm == "l2":  # (λ = inf when infeasible: inf·0 = nan on the coordinates that never move)
        mag = torch.minimum(lam[:, None] * a, cap).masked_fill_(~moves, 0.0)
    else:
        mag = torch.minimum(lam[:, None], cap)
    d = mag.copysign_(w_s)  # sign(w_s)·|d|: ⟨w_s, d⟩ = |c|  ⇔  ⟨w, d⟩ = c
    return d.to(dtype)


class FAB(Attack):
    """FAB (Croce & Hein 2020b, Alg. 1), ℓ∞ / ℓ2, untargeted or over ranked target classes.

    At the current iterate x⁽ⁱ⁾ the classifier is linearised; among the decision hyperplanes
    π_s = {z : f_s(x⁽ⁱ⁾) + ⟨∇f_s(x⁽ⁱ⁾), z − x⁽ⁱ⁾⟩ = 0}, f_s = z_s − z_y, the closest in the norm
    (|f_s| / ‖∇f_s‖_dual, eq. 4) is chosen (for the targeted version: s = the target). Both the
    iterate and the original point are projected onto π_s ∩ box (eq. 5,
    :func:`project_hyperplane_box`), giving steps δ and δ_orig, and (eqs. 6-7)

        x⁽ⁱ⁺¹⁾ = clip((1 − α)(x⁽ⁱ⁾ + η·δ) + α(x_orig + η·δ_orig)),
        α = min(‖δ‖ / (‖δ‖ + ‖δ_orig‖), α_max).

    When x⁽ⁱ⁺¹⁾ is misclassified it is stored if closer than the best so far, and the iterate moves
    back toward x_orig: x_orig + β(x⁽ⁱ⁺¹⁾ − x_orig) (eq. 8). Restarts after the first start from
    x_orig + (ε/2)·t/‖t‖ (t uniform in [−1, 1]ᵈ for ℓ∞, Gaussian for ℓ2), as ``fab_base.py``.

    FAB minimises the distortion and ignores ε while searching; the result for a point is the
    closest adversarial example found if its distance is ≤ ε, else the original point
    (``fab_base.py: perturb``). Only points correctly classified are attacked; each restart (and
    each target class) runs on the points still robust.

    Args:
        threat: norm (``linf``/``l2``) and ε in [0, 1] pixel units.
        targeted: False (``fab``: all classes' hyperplanes, needs the full Jacobian, C backward
            passes per iteration) or True (``fab-t``: one run per target class of rank 2 …
            n_target_classes + 1 of the clean logits, capped at C − 1, one backward per step).
        n_iter: iterations per run (official 100).
        restarts: runs per point (per target class for ``fab-t``); official 1, 5 for ``fab`` in
            AutoAttack ``plus``.
        alpha_max, eta, beta: α_max = 0.1, overshoot η = 1.05, backward step β = 0.9 (official).
        n_target_classes: target classes for ``fab-t`` (official 9).
        seed: seeds the random restarts.
        batch_targets: run the target classes of ``fab-t`` together, as one batch of (target,
            point) rows (with one restart; in groups of at most ``max_rows`` rows). Each run is
            deterministic and rows are independent, so the result equals the sequential loop
            over targets (each point keeps the adversarial example of its lowest-rank successful
            target); it trades a few wasted rows on points an early target breaks for fewer,
            larger model calls (on robust models FAB-T breaks almost nothing, so almost no row
            is wasted: ≈ 20 % less CPU time for cnn4, ``docs/autoattack.md``, "Cost"). Default
            True; False: the sequential loop, as ``fab_base.py``.
        early_stop: stop iterating on a point as soon as an adversarial example within ε is
            found (AutoAttack's use: the point is broken whatever the remaining iterations
            find). The set of broken points is the same as without it; the returned example is
            the first one found within ε instead of the closest one. Default False (FAB as a
            minimal-distortion attack).
        max_rows: most rows per FAB run when targets are batched.

    Passing ``target=`` runs the targeted version toward that class only; a point then counts as
    broken when classified as the target.

    Example:
        >>> atk = FAB(ThreatModel("l2", 0.5), targeted=True)        # doctest: +SKIP
        >>> x_adv = atk(model, x, y)                                 # doctest: +SKIP
    """

    name = "fab"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        targeted: bool = False,
        n_iter: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        n_target_classes: int = 9,
        model_mode: ModelMode = "eval",
        seed: int | None = 0,
        batch_targets: bool = True,
        early_stop: bool = False,
        max_rows: int = 4096,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        if n_iter < 1:
            raise ConfigError(f"FAB needs n_iter >= 1, got {n_iter}")
        if max_rows < 1:
            raise ConfigError(f"FAB max_rows must be >= 1, got {max_rows}")
        if restarts < 1:
            raise ConfigError(f"FAB needs restarts >= 1, got {restarts}")
        if not 0.0 <= alpha_max <= 1.0:
            raise ConfigError(f"FAB alpha_max must be in [0, 1], got {alpha_max}")
        if eta < 1.0:
            raise ConfigError(f"FAB overshoot eta must be >= 1, got {eta}")
        if not 0.0 < beta <= 1.0:
            raise ConfigError(f"FAB beta must be in (0, 1], got {beta}")
        if n_target_classes < 1:
            raise ConfigError(f"n_target_classes must be >= 1, got {n_target_classes}")
        self.use_targets = targeted
        self.n_iter = n_iter
        self.restarts = restarts
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self.n_target_classes = n_target_classes
        self.batch_targets = batch_targets
        self.early_stop = early_stop
        self.max_rows = max_rows
        self.name = "fab-t" if targeted else "fab"

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        if target is not None and not self.use_targets:
            raise ConfigError("fab is untargeted; use fab-t for target=")
        gen = self.generator()
        with torch.no_grad():
            clean = model(x)
        n_classes = clean.shape[1]
        if n_classes < 2:
            raise ConfigError(f"{self.name} needs at least 2 classes, the model has {n_classes}")
        x_out = x.clone()
        active = clean.argmax(1).eq(y) if target is None else clean.argmax(1).ne(target)
        if self.use_targets and target is None:
            ranks = list(range(2, min(self.n_target_classes, n_classes - 1) + 2))
        else:
            ranks = [0]
        if self.batch_targets and self.restarts == 1 and len(ranks) > 1:
            return self._batched_targets(model, x, y, clean, ranks, active, x_out, gen)
        for rank in ranks:
            for restart in range(self.restarts):
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                if rank:
                    tgt: Tensor | None = ranked_targets(clean[idx], rank)
                else:
                    tgt = None if target is None else target[idx]
                adv, dist = _fab_run(
                    model,
                    x[idx],
                    y[idx],
                    tgt,
                    self.threat.subset(idx),
                    n_iter=self.n_iter,
                    alpha_max=self.alpha_max,
                    eta=self.eta,
                    beta=self.beta,
                    random_start=restart > 0,
                    generator=gen,
                    explicit_target=target is not None,
                    point=torch.arange(idx.numel(), device=x.device) if self.early_stop else None,
                )
                eps = self.threat.subset(idx).eps_for(x[idx]).flatten()
                with torch.no_grad():
                    pred = model(adv).argmax(1)
                hit = pred.eq(target[idx]) if target is not None else pred.ne(y[idx])
                ok = hit & (dist <= eps)
                x_out[idx[ok]] = adv[ok]
                active[idx[ok]] = False
        return x_out

    def _batched_targets(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        clean: Tensor,
        ranks: list[int],
        active: Tensor,
        x_out: Tensor,
        gen: torch.Generator | None,
    ) -> Tensor:
        """``fab-t`` with one restart: the targets of ``ranks`` run as one batch of (target, point)
        rows (in groups of at most ``max_rows`` rows, each on the points still robust)."""
        while ranks:
            idx = active.nonzero().squeeze(1)
            m = idx.numel()
            if m == 0:
                break
            group, ranks = ranks[: max(self.max_rows // m, 1)], ranks[max(self.max_rows // m, 1) :]
            k = len(group)
            rows = idx.repeat(k)  # row j·m + i: point idx[i], target of rank group[j]
            tgt = torch.cat([ranked_targets(clean[idx], rank) for rank in group])
            point = torch.arange(m, device=x.device).repeat(k)
            threat = self.threat.subset(rows)
            adv, dist = _fab_run(
                model,
                x[rows],
                y[rows],
                tgt,
                threat,
                n_iter=self.n_iter,
                alpha_max=self.alpha_max,
                eta=self.eta,
                beta=self.beta,
                random_start=False,
                generator=gen,
                explicit_target=False,
                point=point if self.early_stop else None,
            )
            with torch.no_grad():
                pred = model(adv).argmax(1)
            eps = threat.eps_for(adv).flatten()
            ok = (pred.ne(y[rows]) & (dist <= eps)).view(k, m)
            first = ok.to(torch.uint8).argmax(0)  # the lowest-rank target that broke the point
            broke = ok.any(0)
            pick = (first * m + torch.arange(m, device=x.device))[broke]
            x_out[idx[broke]] = adv[pick]
            active[idx[broke]] = False
        return x_out


def _logit_gaps(model: nn.Module, x1: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
    """f_s = z_s − z_y and ∇f_s at ``x1``: shapes ``(N, S)`` and ``(N, S, D)``.

    Untargeted: every class s (the true class gets f = 1e10 so it is never chosen,
    ``fab_pt.py: get_diff_logits_grads_batch``); targeted: the single s = target.
    """
    n = x1.shape[0]
    point = x1.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = fp32(model(point))  # gaps f_s in float32 even for a bf16 forward
        if target is not None:
            gap = logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
            grad = torch.autograd.grad(gap.sum(), point)[0]
            return gap.detach()[:, None], grad.reshape(n, 1, -1)
        n_classes = logits.shape[1]
        grads = []
        for s in range(n_classes):
            (g,) = torch.autograd.grad(logits[:, s].sum(), point, retain_graph=s < n_classes - 1)
            grads.append(g.reshape(n, -1))
    jac = torch.stack(grads, dim=1)  # (N, C, D)
    z = logits.detach()
    rows = torch.arange(n, device=x1.device)
    f = z - z[rows, y][:, None]
    df = jac - jac[rows, y][:, None, :]
    f[rows, y] = _BIG
    return f, df


def _fab_run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    target: Tensor | None,
    threat: ThreatModel,
    *,
    n_iter: int,
    alpha_max: float,
    eta: float,
    beta: float,
    random_start: bool,
    generator: torch.Generator | None,
    explicit_target: bool,
    point: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One FAB run (``fab_base.py: attack_single_run``); returns (closest adversarial, its distance).

    The distance is +inf (and the point is x0) where no adversarial example was found.

    ``point`` (early stop): the point id of each row (several rows may attack one point, e.g.
    one per target class). Once a row finds an adversarial example within ε, every row of its
    point stops; the other rows run on unchanged (rows are independent).
    """
    n = x0.shape[0]
    norm = threat.norm
    lo, hi = threat.lower, threat.upper
    best = torch.full((n,), float("inf"), device=x0.device, dtype=x0.dtype)
    adv = x0.clone()
    x1 = x0.clone()
    eps = threat.eps_for(x0)
    if random_start:
        if norm == "linf":
            t = 2 * torch.rand(x0.shape, generator=generator, dtype=x0.dtype) - 1
        else:
            t = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        t = t.to(x0.device)
        t = t / (batch_view(flat_norm(t, norm), t) + 1e-12)
        x1 = (x0 + 0.5 * eps * t).clamp(lo, hi)
    dual: Callable[[Tensor], Tensor] = (
        (lambda g: g.abs().sum(-1)) if norm == "linf" else (lambda g: g.norm(dim=-1))
    )
    # the rows still iterated (all of them unless ``point`` stops some) and their inputs
    live = torch.arange(n, device=x0.device)
    x0l, yl, tl, epsl = x0, y, target, eps.flatten()
    for _ in range(n_iter):
        m = live.numel()
        f, df = _logit_gaps(model, x1, yl, tl)
        with torch.no_grad():
            rows = torch.arange(m, device=x0.device)
            dist = f.abs() / (dual(df) + 1e-12)
            s = dist.argmin(1)
            w = df[rows, s]
            flat0 = x0l.reshape(m, -1)
            flat1 = x1.reshape(m, -1)
            b = -f[rows, s] + (w * flat1).sum(1)
            d = project_hyperplane_box(
                torch.cat((flat1, flat0)), torch.cat((w, w)), torch.cat((b, b)), norm, lo, hi
            )
            d1, d2 = d[:m], d[m:]
            a1 = flat_norm(d1, norm).clamp_min(1e-8)
            a2 = flat_norm(d2, norm).clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
            nxt = ((flat1 + eta * d1) * (1 - alpha) + (flat0 + eta * d2) * alpha).clamp(lo, hi)
            x1 = nxt.reshape(x0l.shape)
            pred = model(x1).argmax(1)
            hit = pred.eq(tl) if (explicit_target and tl is not None) else pred.ne(yl)
            if not bool(hit.any()):
                continue
            r = flat_norm(x1 - x0l, norm)
            closer = hit & (r < best[live])
            adv[live[closer]] = x1[closer]
            best[live[closer]] = r[closer]
            x1 = torch.where(batch_view(hit, x1), x0l + beta * (x1 - x0l), x1)
            if point is None:
                continue
            done = hit & (best[live] <= epsl)
            if not bool(done.any()):
                continue
            keep = ~torch.isin(point[live], point[live[done]])
            if not bool(keep.any()):
                break
            live, x1, x0l, yl, epsl = live[keep], x1[keep], x0l[keep], yl[keep], epsl[keep]
            tl = None if tl is None else tl[keep]
    return adv, best


def _fab_factory(targeted: bool) -> Callable[..., FAB]:
    def build(threat: ThreatModel, **kwargs: object) -> FAB:
        return FAB(threat, targeted=targeted, **kwargs)  # type: ignore[arg-type]

    return build


ATTACKS.register("fab", _fab_factory(False), help="FAB minimal-distortion attack (Croce & Hein 2020)")
ATTACKS.register("fab-t", _fab_factory(True), help="targeted FAB, 9 target classes (AutoAttack)")
