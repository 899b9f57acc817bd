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
from entrobust.attacks.threat import ThreatModel, _view, flat_norm
from entrobust.errors import ConfigError

_BIG = 1e10


def project_hyperplane_box(
    t: Tensor, w: Tensor, b: Tensor, norm: str, lower: float = 0.0, upper: float = 1.0
) -> Tensor:
    """Minimal-norm step d with ⟨w, t + d⟩ = b and lower ≤ t + d ≤ upper (FAB eq. 5).

    Shapes: ``t``, ``w`` ``(N, D)``, ``b`` ``(N,)``; returns ``d`` ``(N, D)``. Solved exactly in
    O(D log D) per row. With c = b − ⟨w, t⟩ (sign-flipped so c ≥ 0) and cap_i the room to the
    box in the direction sign(w_i)·sign(c), the optimum is d_i = sign(w_i)·min(λ·g_i, cap_i), with
    g_i = |w_i| for ℓ2 (KKT: d = clip(λw) on the box) and g_i = 1 for ℓ∞ (a common level λ = ‖d‖∞),
    and the scalar λ ≥ 0 solves the piecewise-linear, nondecreasing equation
    Σ_i |w_i|·min(λ·g_i, cap_i) = c, found by sorting the breakpoints cap_i/g_i. When even the
    full box cannot reach the hyperplane, the box corner that gets closest is returned (the
    caller clamps to the box anyway).
    """
    dtype = t.dtype
    t64, w64, b64 = t.double(), w.double(), b.double()
    c = b64 - (w64 * t64).sum(1)
    sgn = torch.where(c < 0, -1.0, 1.0).to(torch.float64)
    w_s = w64 * sgn[:, None]  # now the goal is ⟨w_s, d⟩ = |c|
    c_abs = c.abs()
    room_up = upper - t64
    room_down = t64 - lower
    cap = torch.where(w_s > 0, room_up, room_down).clamp_min(0.0)
    a = w_s.abs()
    cap = torch.where(a > 0, cap, torch.zeros_like(cap))
    g = a if norm == "l2" else torch.ones_like(a)
    # breakpoint of each coordinate: λ at which it hits the box (inf where it never moves)
    lam_i = torch.where(a > 0, cap / g.clamp_min(1e-300), torch.full_like(cap, float("inf")))
    order = lam_i.argsort(dim=1)
    lam_s = lam_i.gather(1, order)
    a_s = a.gather(1, order)
    g_s = g.gather(1, order)
    cap_s = cap.gather(1, order)
    # φ(λ_k) = Σ_{j<=k} a_j cap_j + λ_k Σ_{j>k} a_j g_j  (coordinates sorted by breakpoint)
    sat = torch.cumsum(a_s * cap_s, dim=1)
    ag = a_s * g_s
    free_after = ag.sum(1, keepdim=True) - torch.cumsum(ag, dim=1)
    lam_fin = torch.where(torch.isfinite(lam_s), lam_s, torch.zeros_like(lam_s))
    phi = sat + lam_fin * free_after
    phi = torch.where(torch.isfinite(lam_s), phi, torch.full_like(phi, float("inf")))
    # first breakpoint where φ reaches |c|; λ* lies in the segment just before it
    k = (phi < c_abs[:, None]).sum(1)  # number of breakpoints strictly below the solution
    total = sat[:, -1]
    feasible = total >= c_abs
    k_c = k.clamp(max=lam_s.shape[1] - 1)
    sat_before = torch.where(k > 0, sat.gather(1, (k_c - 1).clamp_min(0)[:, None]).squeeze(1), 0.0)
    free_from = torch.where(
        k > 0, free_after.gather(1, (k_c - 1).clamp_min(0)[:, None]).squeeze(1), ag.sum(1)
    )
    lam = (c_abs - sat_before) / free_from.clamp_min(1e-300)
    lam = torch.where(free_from > 0, lam, torch.zeros_like(lam))
    lam = torch.where(feasible, lam.clamp_min(0.0), torch.full_like(lam, float("inf")))
    mag = torch.minimum(lam[:, None] * g, cap)
    mag = torch.where(a > 0, mag, torch.zeros_like(mag))
    d = torch.sign(w_s) * mag  # ⟨w_s, d⟩ = |c|  ⇔  ⟨w, d⟩ = c
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
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        if n_iter < 1:
            raise ConfigError(f"FAB needs n_iter >= 1, got {n_iter}")
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
                )
                eps = self.threat.subset(idx).eps_for(x[idx]).flatten()
                with torch.no_grad():
                    pred = model(adv).argmax(1)
                hit = pred.eq(target[idx]) if target is not None else pred.ne(y[idx])
                ok = hit & (dist <= eps)
                x_out[idx[ok]] = adv[ok]
                active[idx[ok]] = False
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
) -> tuple[Tensor, Tensor]:
    """One FAB run (``fab_base.py: attack_single_run``); returns (closest adversarial, its distance).

    The distance is +inf (and the point is x0) where no adversarial example was found.
    """
    n = x0.shape[0]
    norm = threat.norm
    lo, hi = threat.lower, threat.upper
    flat0 = x0.reshape(n, -1)
    best = torch.full((n,), float("inf"), device=x0.device, dtype=x0.dtype)
    adv = x0.clone()
    x1 = x0.clone()
    if random_start:
        eps = threat.eps_for(x0)
        if norm == "linf":
            t = 2 * torch.rand(x0.shape, generator=generator, dtype=x0.dtype) - 1
        else:
            t = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        t = t.to(x0.device)
        t = t / (_view(flat_norm(t, norm), t) + 1e-12)
        x1 = (x0 + 0.5 * eps * t).clamp(lo, hi)
    rows = torch.arange(n, device=x0.device)
    dual: Callable[[Tensor], Tensor] = (
        (lambda g: g.abs().sum(-1)) if norm == "linf" else (lambda g: g.norm(dim=-1))
    )
    for _ in range(n_iter):
        f, df = _logit_gaps(model, x1, y, target)
        with torch.no_grad():
            dist = f.abs() / (dual(df) + 1e-12)
            s = dist.argmin(1)
            w = df[rows, s]
            flat1 = x1.reshape(n, -1)
            b = -f[rows, s] + (w * flat1).sum(1)
            d = project_hyperplane_box(
                torch.cat((flat1, flat0)), torch.cat((w, w)), torch.cat((b, b)), norm, lo, hi
            )
            d1, d2 = d[:n], d[n:]
            a1 = flat_norm(d1, norm).clamp_min(1e-8)
            a2 = flat_norm(d2, norm).clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
            nxt = ((flat1 + eta * d1) * (1 - alpha) + (flat0 + eta * d2) * alpha).clamp(lo, hi)
            x1 = nxt.reshape(x0.shape)
            pred = model(x1).argmax(1)
            hit = pred.eq(target) if (explicit_target and target is not None) else pred.ne(y)
            if bool(hit.any()):
                r = flat_norm(x1 - x0, norm)
                closer = hit & (r < best)
                adv[closer] = x1[closer]
                best[closer] = r[closer]
                x1 = torch.where(_view(hit, x1), x0 + beta * (x1 - x0), x1)
    return adv, best


def _fab_factory(targeted: bool) -> Callable[..., FAB]:
    def build(threat: ThreatModel, **kwargs: object) -> FAB:
        return FAB(threat, targeted=targeted, **kwargs)  # type: ignore[arg-type]

    return build


ATTACKS.register("fab", _fab_factory(False), help="FAB minimal-distortion attack (Croce & Hein 2020)")
ATTACKS.register("fab-t", _fab_factory(True), help="targeted FAB, 9 target classes (AutoAttack)")
