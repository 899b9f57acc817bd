"""Auto-PGD (APGD): step-size-free PGD with momentum and progress checkpoints.

Croce & Hein, *Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks*, ICML 2020 (arXiv 2003.01690), Algorithm 1, eqs. (2)-(7); constants and
book-keeping follow the official implementation ``fra31/auto-attack``,
``autoattack/autopgd_base.py`` (``APGDAttack``, ``APGDAttack_targeted``). Reimplemented, not copied.

Registered names: ``apgd-ce`` (cross-entropy), ``apgd-dlr`` (DLR loss, eq. 6) and ``apgd-t``
(targeted DLR, eq. 7, one run per target class).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from entrobust.attacks.base import Attack, ModelMode
from entrobust.attacks.engine import eot_value_and_grad, mean_logits
from entrobust.attacks.losses import ce_loss, dlr_loss, dlr_targeted_loss
from entrobust.attacks.registry import ATTACKS
from entrobust.attacks.threat import ThreatModel, batch_view, flat_norm
from entrobust.errors import ConfigError

APGD_LOSSES: tuple[str, ...] = ("ce", "dlr", "dlr-targeted")
_TINY = 1e-12


def apgd_checkpoints(n_iter: int) -> list[int]:
    """Iteration counts after which APGD checks its progress (paper eq. 4, official integers).

    The paper sets w_j = ⌈p_j·N_iter⌉ with p_0 = 0, p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06). The official code
    (``autopgd_base.py``: ``n_iter_2``, ``size_decr``, ``n_iter_min``) uses the integer form: the
    first window has ⌊0.22·N⌋ iterations, each next window is ⌊0.03·N⌋ shorter, but never
    shorter than ⌊0.06·N⌋ (all at least 1). The returned value w means "checked right after the
    w-th gradient step", i.e. at loop index ``i = w − 1`` of a 0-based loop over iterations —
    which is exactly where the official ``counter3 == k`` test fires.

    >>> apgd_checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    if n_iter < 1:
        raise ConfigError(f"APGD needs n_iter >= 1, got {n_iter}")
    window = max(int(0.22 * n_iter), 1)
    shrink = max(int(0.03 * n_iter), 1)
    shortest = max(int(0.06 * n_iter), 1)
    points: list[int] = []
    at = window
    while at <= n_iter:
        points.append(at)
        window = max(window - shrink, shortest)
        at += window
    return points


def ranked_targets(logits: Tensor, rank: int) -> Tensor:
    """The ``rank``-th most likely class per example (rank 1 = the prediction).

    APGD-T and FAB-T attack the targets of rank 2, 3, ..., n_target_classes + 1 of the *clean*
    logits (``autopgd_base.py``: ``output.sort(dim=1)[1][:, -target_class]``).
    """
    return logits.sort(dim=1, descending=True).indices[:, rank - 1]


class APGD(Attack):
    """APGD (Croce & Hein 2020, Alg. 1) on the CE, DLR or targeted-DLR loss, ℓ∞ or ℓ2.

    Per iteration k (eq. 2): z = P(x_k + η_k·s(∇L(x_k))), with s = sign (ℓ∞) or ∇/‖∇‖₂ (ℓ2), and
    x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1})) with momentum α = 0.75 (α = 1 for the
    first step). The step starts at η = 2ε and is halved, per example, at each checkpoint
    (:func:`apgd_checkpoints`) where

    1. the loss increased in at most ρ = 0.75 of the steps since the last checkpoint, or
    2. the step was not halved at the last checkpoint and the best loss has not improved since,

    and the iterate then restarts from the best point found (with the gradient stored there).
    Only points still correctly classified are attacked; each restart runs on the points still
    robust; a point counts as broken once any iterate is misclassified (for an explicit
    ``target=``: once an iterate is classified as the target).

    The start point is ``autopgd_base.py``'s: x + ε·t/‖t‖ with t uniform in [−1, 1]ᵈ (ℓ∞, so
    ‖δ‖∞ = ε) or t Gaussian (ℓ2, on the sphere), clamped to the box. One deliberate difference:
    condition 1 compares the first step's loss with the loss at the start point (the paper's
    f(x⁽⁰⁾)), where the official code reads an unfilled 0 from its loss buffer.

    For ``loss="dlr-targeted"`` (``apgd-t``) each restart is run for every target class of rank
    2 … n_target_classes + 1 of the clean logits (capped at C − 1), on the points still robust
    (``APGDAttack_targeted.perturb``); a point is broken when misclassified. Passing ``target=``
    instead runs the targeted loss toward that class only.

    Returned point: the adversarial iterate for broken points; for the others the highest-loss
    iterate (still correctly classified; the official code returns x itself). Points already
    misclassified are returned unchanged.

    Args:
        threat: norm (``linf``/``l2``) and ε in [0, 1] pixel units.
        loss: ``"ce"`` (eq. CE), ``"dlr"`` (eq. 6, ≥ 3 classes) or ``"dlr-targeted"`` (eq. 7,
            ≥ 4 classes).
        n_iter: iterations per run (official: 100).
        restarts: random restarts (official: 1 in ``standard``, 5 in ``plus``).
        rho: checkpoint threshold ρ (official 0.75).
        momentum: α of eq. 2 (official 0.75).
        n_target_classes: targets per point for ``dlr-targeted`` (official 9; capped at C − 1).
        seed: seeds the random starts (``None``: torch's global RNG).
        eot_iter: Expectation over Transformation (Athalye et al. 2018 §4.3) for randomized
            models: every gradient, loss and logit is averaged over this many forwards
            (:func:`~entrobust.attacks.engine.eot_value_and_grad`; official ``rand`` version: 20).
        early_stop: stop iterating on a point once it is misclassified (AutoAttack's use: the
            point is broken, later iterations cannot change that). Points never broken follow
            exactly the same iterates; a broken point returns its first adversarial iterate
            instead of the last. Ignored with ``eot_iter > 1`` (a hit on averaged logits of a
            randomized model is not final). Default False.
        batch_targets: for ``dlr-targeted`` with one restart, run the target classes together
            as one batch of (target, point) rows (in groups of at most ``max_rows`` rows) instead
            of one run per target on the points still robust (``APGDAttack_targeted.perturb``).
            Rows are independent and the random starts are drawn in the same order, so while no
            point breaks this is the sequential loop row for row; a point broken by one target
            stops its other rows (with ``early_stop``) and counts as broken, as in the loop,
            where later targets skip it. Only the random starts of later targets differ once a
            point breaks (the loop draws them for fewer points). Fewer, larger model calls:
            AutoAttack turns it on. Default False.
        max_rows: most rows per run when targets are batched.

    Example:
        >>> atk = APGD(ThreatModel("linf", 8 / 255), loss="ce")      # doctest: +SKIP
        >>> x_adv = atk(model, x, y)                                 # doctest: +SKIP
    """

    name = "apgd"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        loss: str = "ce",
        n_iter: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        n_target_classes: int = 9,
        model_mode: ModelMode = "eval",
        seed: int | None = 0,
        eot_iter: int = 1,
        early_stop: bool = False,
        batch_targets: bool = False,
        max_rows: int = 4096,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        if isinstance(eot_iter, bool) or not isinstance(eot_iter, int) or eot_iter < 1:
            raise ConfigError(f"eot_iter must be an integer >= 1, got {eot_iter!r}")
        self.eot_iter = eot_iter
        if loss not in APGD_LOSSES:
            raise ConfigError(f"unknown APGD loss {loss!r}; valid: {', '.join(APGD_LOSSES)}")
        if n_iter < 1:
            raise ConfigError(f"APGD needs n_iter >= 1, got {n_iter}")
        if restarts < 1:
            raise ConfigError(f"APGD needs restarts >= 1, got {restarts}")
        if not 0.0 < rho <= 1.0:
            raise ConfigError(f"APGD rho must be in (0, 1], got {rho}")
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"APGD momentum must be in (0, 1], got {momentum}")
        if n_target_classes < 1:
            raise ConfigError(f"n_target_classes must be >= 1, got {n_target_classes}")
        if max_rows < 1:
            raise ConfigError(f"APGD max_rows must be >= 1, got {max_rows}")
        self.batch_targets = batch_targets
        self.max_rows = max_rows
        self.loss = loss
        self.early_stop = early_stop
        self.n_iter = n_iter
        self.restarts = restarts
        self.rho = rho
        self.momentum = momentum
        self.n_target_classes = n_target_classes
        self.name = {"ce": "apgd-ce", "dlr": "apgd-dlr", "dlr-targeted": "apgd-t"}[loss]

    # ------------------------------------------------------------------ search
    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        if target is not None and self.loss != "dlr-targeted":
            raise ConfigError(f"{self.name} is untargeted; use apgd-t for target=")
        gen = self.generator()
        clean = mean_logits(model, x, self.eot_iter)
        n_classes = clean.shape[1]
        if self.loss == "dlr" and n_classes < 3:
            raise ConfigError(f"apgd-dlr: the DLR loss needs at least 3 classes, the model has {n_classes}")
        if self.loss == "dlr-targeted" and n_classes < 4:
            raise ConfigError(
                f"apgd-t: the targeted DLR loss needs at least 4 classes, the model has {n_classes}"
            )
        x_out = x.clone()
        first = torch.full_like(y, -1)
        if target is None:
            active = clean.argmax(1).eq(y)
        else:
            active = clean.argmax(1).ne(target)
        first[~active] = 0
        best_loss = torch.full(y.shape, float("-inf"), device=x.device, dtype=x.dtype)

        if self.loss == "dlr-targeted" and target is None:
            ranks = list(range(2, min(self.n_target_classes, n_classes - 1) + 2))
        else:
            ranks = [0]
        if self.batch_targets and self.restarts == 1 and len(ranks) > 1:
            return self._batched_targets(model, x, y, clean, ranks, active, x_out, first, best_loss, gen)
        runs = 0
        for rank in ranks:
            for _ in range(self.restarts):
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                xs, ys = x[idx], y[idx]
                if rank:
                    tgt: Tensor | None = ranked_targets(clean[idx], rank)
                else:
                    tgt = None if target is None else target[idx]
                explicit = target is not None
                loss_fn, hit_fn = self._objective(ys, tgt, explicit=explicit)

                def subset(
                    rows: Tensor, ys: Tensor = ys, tgt: Tensor | None = tgt, explicit: bool = explicit
                ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
                    return self._objective(ys[rows], None if tgt is None else tgt[rows], explicit=explicit)

                run = _apgd_run(
                    model,
                    xs,
                    loss_fn,
                    hit_fn,
                    self.threat.subset(idx),
                    n_iter=self.n_iter,
                    rho=self.rho,
                    momentum=self.momentum,
                    generator=gen,
                    check_zero_grad=self.loss != "ce",
                    name=self.name,
                    eot_iter=self.eot_iter,
                    subset=subset if self.early_stop and self.eot_iter == 1 else None,
                )
                x_best, hit, loss_best, x_hit, first_run = run
                broken = idx[hit]
                x_out[broken] = x_hit[hit]
                first[broken] = first_run[hit] + runs * self.n_iter
                active[broken] = False
                keep = ~hit & (loss_best > best_loss[idx])
                x_out[idx[keep]] = x_best[keep]
                best_loss[idx[keep]] = loss_best[keep]
                runs += 1
        return x_out, first

    def _batched_targets(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        clean: Tensor,
        ranks: list[int],
        active: Tensor,
        x_out: Tensor,
        first: Tensor,
        best_loss: Tensor,
        gen: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """``apgd-t`` with one restart: the targets of ``ranks`` as one batch of (target, point)
        rows, row j·m + i = point ``idx[i]`` toward its target of rank ``group[j]`` (in groups
        of at most ``max_rows`` rows, each on the points still robust)."""
        runs = 0
        while ranks:
            idx = active.nonzero().squeeze(1)
            m = idx.numel()
            if m == 0:
                break
            take = max(self.max_rows // m, 1)
            group, ranks = ranks[:take], ranks[take:]
            k = len(group)
            rows = idx.repeat(k)
            ys = y[rows]
            tgt = torch.cat([ranked_targets(clean[idx], rank) for rank in group])
            loss_fn, hit_fn = self._objective(ys, tgt, explicit=False)

            def subset(
                r: Tensor, ys: Tensor = ys, tgt: Tensor = tgt
            ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
                return self._objective(ys[r], tgt[r], explicit=False)

            early = self.early_stop and self.eot_iter == 1
            x_best, hit, loss_best, x_hit, first_run = _apgd_run(
                model,
                x[rows],
                loss_fn,
                hit_fn,
                self.threat.subset(rows),
                n_iter=self.n_iter,
                rho=self.rho,
                momentum=self.momentum,
                generator=gen,
                check_zero_grad=True,
                name=self.name,
                eot_iter=self.eot_iter,
                subset=subset if early else None,
                point=torch.arange(m, device=x.device).repeat(k),
            )
            cols = torch.arange(m, device=x.device)
            hits = hit.view(k, m)
            broke = hits.any(0)
            j = hits.to(torch.uint8).argmax(0)  # the lowest-rank target that broke the point
            pick = (j * m + cols)[broke]
            x_out[idx[broke]] = x_hit[pick]
            first[idx[broke]] = first_run[pick] + (runs + j[broke]) * self.n_iter
            active[idx[broke]] = False
            # the others: the highest-loss iterate over the targets (the earliest on ties)
            top, jl = loss_best.view(k, m).max(0)
            keep = ~broke & (top > best_loss[idx])
            x_out[idx[keep]] = x_best[(jl * m + cols)[keep]]
            best_loss[idx[keep]] = top[keep]
            runs += k
        return x_out, first

    def _objective(
        self, y: Tensor, target: Tensor | None, *, explicit: bool
    ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """(per-example loss of logits, "broken" test of logits) for one run."""
        if self.loss == "ce":
            loss_fn: Callable[[Tensor], Tensor] = lambda z: ce_loss(z, y)  # noqa: E731
        elif self.loss == "dlr":
            loss_fn = lambda z: dlr_loss(z, y)  # noqa: E731
        else:
            assert target is not None
            loss_fn = lambda z: dlr_targeted_loss(z, y, target)  # noqa: E731
        if explicit:
            assert target is not None
            return loss_fn, lambda z: z.argmax(1).eq(target)
        return loss_fn, lambda z: z.argmax(1).ne(y)


def _random_start(x: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
    """``autopgd_base.py``'s start: x + ε·t/‖t‖ (t ~ U[−1,1]ᵈ for ℓ∞, N(0, I) for ℓ2), in the box."""
    eps = threat.eps_for(x)
    if threat.norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1
    else:
        t = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    t = t.to(x.device)
    t = t / (batch_view(flat_norm(t, threat.norm), t) + _TINY)
    return (x + eps * t).clamp(threat.lower, threat.upper)


def _apgd_run(
    model: nn.Module,
    x: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    hit_fn: Callable[[Tensor], Tensor],
    threat: ThreatModel,
    *,
    n_iter: int,
    rho: float,
    momentum: float,
    generator: torch.Generator | None,
    check_zero_grad: bool = False,
    name: str = "apgd",
    eot_iter: int = 1,
    subset: Callable[[Tensor], tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] | None = None,
    point: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One APGD run (``attack_single_run`` of ``autopgd_base.py``) on a batch.

    Returns ``(x_best, hit, loss_best, x_hit, first)``: the highest-loss iterate, whether any
    iterate was a hit, the best loss, the last hit iterate and the 1-based iteration of the first
    hit (0 = the start point, −1 = never).

    ``subset`` (early stop): maps the indices of the rows still iterated to their
    ``(loss_fn, hit_fn)``; when given, a row stops at its first hit (its ``x_hit`` is then the
    first hit iterate) and the run ends when every row is hit. Rows are independent, so the
    other rows' iterates do not change.

    ``point`` (batched targets): the point id of each row. With ``subset``, a hit stops every
    row of its point (the point is broken); the zero-gradient warning counts points, not rows.
    """
    n = x.shape[0]
    x_full, threat_full = x, threat
    eps = threat.eps_for(x)

    def evaluate(point: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return eot_value_and_grad(model, point, loss_fn, eot_iter)

    x_adv = _random_start(x, threat, generator)
    logits, loss, grad = evaluate(x_adv)
    if check_zero_grad:
        flat = grad.flatten(1).abs().sum(1) == 0
        zero = int(flat.sum()) if point is None else int(point[flat].unique().numel())
        if zero:
            warnings.warn(
                f"{name}: {zero} point(s) have a zero gradient at the start; gradient-based "
                "evaluation may be unreliable (possible gradient masking)",
                RuntimeWarning,
                stacklevel=4,
            )
    hit = hit_fn(logits)
    first = torch.where(hit, 0, -1).to(torch.long)
    x_hit = x_adv.clone()
    x_best = x_adv.clone()
    grad_best = grad.clone()
    loss_best = loss.clone()
    # rows still iterated: all of them without ``subset``; with it, the rows not yet hit
    live = torch.arange(n, device=x.device)
    x_best_all, loss_best_all = x_best, loss_best
    loss_prev = loss.clone()  # loss of the previous iterate (start point for the first step)

    step = 2.0 * eps.expand(n, *([1] * (x.dim() - 1))).clone()
    x_prev = x_adv.clone()
    checkpoints = apgd_checkpoints(n_iter)
    last_check = 0
    n_increase = torch.zeros(n, device=x.device, dtype=torch.long)
    best_at_check = loss_best.clone()
    reduced_at_check = torch.ones(n, device=x.device, dtype=torch.bool)

    def compact(keep: Tensor) -> None:
        nonlocal live, x, threat, eps, loss_fn, hit_fn, x_adv, x_prev, grad, step, x_best
        nonlocal grad_best, loss_best, loss_prev, n_increase, best_at_check, reduced_at_check
        if x_best is not x_best_all:  # write the finished rows' best iterate back
            x_best_all[live] = x_best
            loss_best_all[live] = loss_best
        live = live[keep]
        x, threat = x_full[live], threat_full.subset(live)
        eps = threat.eps_for(x)
        assert subset is not None
        loss_fn, hit_fn = subset(live)
        x_adv, x_prev, grad, step = x_adv[keep], x_prev[keep], grad[keep], step[keep]
        x_best, grad_best, loss_best, loss_prev = (
            x_best[keep],
            grad_best[keep],
            loss_best[keep],
            loss_prev[keep],
        )
        n_increase, best_at_check, reduced_at_check = (
            n_increase[keep],
            best_at_check[keep],
            reduced_at_check[keep],
        )

    def stopped(now: Tensor) -> Tensor:
        """Rows to keep after the hits ``now`` of the live rows (all rows of a hit point)."""
        if point is None:
            return ~now
        return ~torch.isin(point[live], point[live[now]])

    if subset is not None and bool(hit.any()):
        compact(stopped(hit))
    for i in range(n_iter):
        if live.numel() == 0:
            break
        with torch.no_grad():
            velocity = x_adv - x_prev
            x_prev = x_adv
            a = momentum if i > 0 else 1.0
            z = threat.project(x_adv + step * threat.steepest_step(grad), x)
            x_adv = threat.project(x_adv + a * (z - x_adv) + (1 - a) * velocity, x)

        logits, loss, grad = evaluate(x_adv)
        with torch.no_grad():
            now = hit_fn(logits)
            first[live[now & ~hit[live]]] = i + 1
            hit[live[now]] = True
            x_hit[live[now]] = x_adv[now]
            n_increase += (loss > loss_prev).long()
            loss_prev = loss
            better = loss > loss_best
            x_best[better] = x_adv[better]
            grad_best[better] = grad[better]
            loss_best[better] = loss[better]

            if i + 1 in checkpoints:
                window = i + 1 - last_check
                last_check = i + 1
                stalled = n_increase.to(x.dtype) <= rho * window  # condition 1
                stuck = ~reduced_at_check & (best_at_check >= loss_best)  # condition 2
                reduce = stalled | stuck
                reduced_at_check = reduce
                best_at_check = loss_best.clone()
                n_increase.zero_()
                if bool(reduce.any()):
                    step[reduce] /= 2.0
                    x_adv = x_adv.clone()
                    x_adv[reduce] = x_best[reduce]
                    grad[reduce] = grad_best[reduce]
            if subset is not None and bool(now.any()):
                compact(stopped(now))
    if x_best is not x_best_all:
        x_best_all[live] = x_best
        loss_best_all[live] = loss_best
    return x_best_all, hit, loss_best_all, x_hit, first


def _apgd_factory(loss: str) -> Callable[..., APGD]:
    def build(threat: ThreatModel, **kwargs: object) -> APGD:
        return APGD(threat, loss=loss, **kwargs)  # type: ignore[arg-type]

    return build


ATTACKS.register("apgd-ce", _apgd_factory("ce"), help="APGD on cross-entropy (Croce & Hein 2020)")
ATTACKS.register("apgd-dlr", _apgd_factory("dlr"), help="APGD on the DLR loss (Croce & Hein 2020, eq. 6)")
ATTACKS.register(
    "apgd-t", _apgd_factory("dlr-targeted"), help="APGD on targeted DLR, 9 target classes (eq. 7)"
)
