"""Square Attack: score-based random search with square-shaped updates (no gradients).

Andriushchenko, Croce, Flammarion & Hein, *Square Attack: a query-efficient black-box
adversarial attack via random search*, ECCV 2020 (arXiv 1912.00049), Algorithms 1-3; the
schedule, initialisations and constants follow the AutoAttack version,
``fra31/auto-attack`` ``autoattack/square.py`` (``SquareAttack``). Reimplemented, not copied.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entrobust.attacks.base import Attack, ModelMode
from entrobust.attacks.losses import fp32
from entrobust.attacks.registry import ATTACKS
from entrobust.attacks.threat import ThreatModel, batch_view, flat_norm
from entrobust.errors import ConfigError

SQUARE_LOSSES: tuple[str, ...] = ("margin", "ce")
# iteration thresholds after which p is halved once more (``square.py: p_selection``)
P_SCHEDULE: tuple[int, ...] = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_p(iteration: int, p_init: float = 0.8, n_queries: int = 5000, rescale: bool = False) -> float:
    """Fraction p of pixels changed at ``iteration`` (0-based): p_init / 2^m, where m counts the
    thresholds 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 strictly below the iteration.

    AutoAttack uses the absolute schedule (``resc_schedule=False``); with ``rescale`` the
    iteration is first mapped to ⌊iteration / n_queries · 10000⌋ as in ``square.py``.
    """
    it = int(iteration / n_queries * 10000) if rescale else iteration
    halvings = sum(1 for threshold in P_SCHEDULE if it > threshold)
    return p_init / 2**halvings


def _eta_stripe(rows: int, cols: int) -> Tensor:
    """Half of the ℓ2 update pattern (Square paper, Alg. 3 "M(r, s)"): concentric rectangles
    around the centre, cell weight Σ_{k ≥ dist} 1/(k + 1)², dist = Chebyshev distance to the
    centre cell ⌊rows/2⌋, ⌊cols/2⌋; normalised to unit ℓ2 norm (``square.py: eta_rectangles``)."""
    ci, cj = rows // 2, cols // 2
    n_rings = max(rows // 2 + 1, cols // 2 + 1)
    ii = torch.arange(rows, dtype=torch.float64)[:, None]
    jj = torch.arange(cols, dtype=torch.float64)[None, :]
    dist = torch.maximum((ii - ci).abs(), (jj - cj).abs())
    weights = 1.0 / torch.arange(1, n_rings + 1, dtype=torch.float64) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = Σ_{j ≥ k} 1/(j+1)²
    out = tail[dist.long().clamp(max=n_rings - 1)]
    out = torch.where(dist < n_rings, out, torch.zeros_like(out))
    return out / out.norm()


def square_eta(s: int) -> Tensor:
    """The s×s ℓ2 update: +stripe on the top half, −stripe on the bottom half, unit ℓ2 norm."""
    top = _eta_stripe(s // 2, s) if s // 2 > 0 else torch.zeros(0, s, dtype=torch.float64)
    bottom = -_eta_stripe(s - s // 2, s)
    eta = torch.cat((top, bottom), dim=0)
    return eta / eta.norm()


class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020), ℓ∞ and ℓ2, score-based: only forward passes.

    Random search on the margin loss z_y − max_{i≠y} z_i (minimised; ``loss="ce"``: −CE). Each
    iteration proposes, for every point still robust, a change of one random s×s window
    (s = round(√(p·h·w)), p from the :func:`square_p` schedule, p_init = 0.8) and keeps it if the
    loss decreases or the point becomes misclassified:

    * ℓ∞ (Alg. 2): start x + ε·(random sign per channel and column, "vertical stripes"); the
      window is set to x ± ε with one random sign per channel.
    * ℓ2 (Alg. 3): start a grid of the ``square_eta`` patterns (window side h // 5) with random
      signs, rescaled to ‖δ‖₂ = ε; a proposal moves the mass of a second random window into the
      first, shaped by ``square_eta``, and the whole δ is rescaled to ‖δ‖₂ = ε.

    Differences to ``autoattack/square.py``, all toward the paper's Algorithm 2/3: window
    positions, signs and the transposition of the ℓ2 pattern are drawn per example (upstream
    draws one position per batch), and positions are uniform over all h − s + 1 offsets
    (upstream never picks the last one). A point's random stream therefore does not depend on
    which other points are still robust.

    Args:
        threat: norm (``linf``/``l2``) and ε in [0, 1] pixel units. Inputs must be images
            ``(N, C, H, W)``.
        n_queries: iterations (one query each) per restart (official 5,000 in AutoAttack).
        p_init: initial fraction of pixels changed (official 0.8).
        restarts: independent runs on the points still robust (official 1).
        loss: ``"margin"`` (official) or ``"ce"``.
        rescale_schedule: stretch the p schedule to ``n_queries`` (``square.py`` default); False
            (the absolute schedule) is what AutoAttack uses.
        seed: seeds every random draw (``None``: torch's global RNG).

    Example:
        >>> atk = Square(ThreatModel("linf", 8 / 255), n_queries=1000)  # doctest: +SKIP
        >>> x_adv = atk(model, x, y)                                    # doctest: +SKIP
    """

    name = "square"
    #: skip the forward of proposals that equal the current best (identical result; False only
    #: for tests that compare with the plain loop)
    _skip_unchanged = True

    def __init__(
        self,
        threat: ThreatModel,
        *,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        loss: str = "margin",
        rescale_schedule: bool = False,
        model_mode: ModelMode = "eval",
        seed: int | None = 0,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        if n_queries < 1:
            raise ConfigError(f"Square needs n_queries >= 1, got {n_queries}")
        if not 0.0 < p_init <= 1.0:
            raise ConfigError(f"Square p_init must be in (0, 1], got {p_init}")
        if restarts < 1:
            raise ConfigError(f"Square needs restarts >= 1, got {restarts}")
        if loss not in SQUARE_LOSSES:
            raise ConfigError(f"unknown Square loss {loss!r}; valid: {', '.join(SQUARE_LOSSES)}")
        self.n_queries = n_queries
        self.p_init = p_init
        self.restarts = restarts
        self.loss = loss
        self.rescale_schedule = rescale_schedule

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        if target is not None:
            raise ConfigError("square is untargeted here; target= is not supported")
        if x.dim() != 4:
            raise ConfigError(f"square needs images (N, C, H, W), got shape {tuple(x.shape)}")
        gen = self.generator()
        with torch.no_grad():
            active = model(x).argmax(1).eq(y)
            x_out = x.clone()
            for _ in range(self.restarts):
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                adv = self._run(model, x[idx], y[idx], self.threat.subset(idx), gen)
                broken = model(adv).argmax(1).ne(y[idx])
                x_out[idx[broken]] = adv[broken]
                active[idx[broken]] = False
        return x_out

    # ---------------------------------------------------------------- internals
    def _objective(
        self, model: nn.Module, x: Tensor, y: Tensor, label: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(margin, loss, ``label``): ``label`` is the one-hot mask of ``y`` (made here when not
        given), so that the loop does not rebuild it for every query; the margin is
        :func:`~entrobust.attacks.base.margin_of`'s, op for op."""
        logits = fp32(model(x))  # the accept / reject test compares float32 scores
        if label is None:
            label = F.one_hot(y, logits.shape[1]).bool()
        margin = logits.gather(1, y[:, None]).squeeze(1) - logits.masked_fill(label, float("-inf")).amax(1)
        if self.loss == "margin":
            return margin, margin, label
        return margin, -F.cross_entropy(logits, y, reduction="none"), label

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, gen: torch.Generator | None
    ) -> Tensor:
        """One restart (``square.py: attack_single_run``) on points that are all still robust.

        The search state is kept for the points still searched only (rows leave, written back to
        the result, when they break), so an iteration indexes nothing; on ℓ∞ the two values a
        window can take, clip(x ± ε), are computed once. The random draws, their order and every
        accepted point are those of the plain loop.
        """
        n, c, h, w = x.shape
        eps = threat.eps_for(x)
        lo, hi = threat.lower, threat.upper
        linf = threat.norm == "linf"
        if linf:
            signs = _rand_sign((n, c, 1, w), gen, x)
            x_best = (x + eps * signs).clamp(lo, hi)
        else:
            x_best = (x + eps * _normalize_l2(self._l2_init(x, gen))).clamp(lo, hi)
        margin_best, loss_best, label = self._objective(model, x_best, y)
        out = x_best.clone()
        side = min(h, w)
        tables: dict[int, tuple[Tensor, Tensor]] = {}  # side -> the windows at every offset
        live = torch.arange(n, device=x.device)  # rows of ``out`` still searched
        xs, ys, es, xb = x, y, eps, x_best
        # ℓ∞: a window is set to x ± ε, which only the box can clip (x_best is inside the ball)
        x_minus, x_plus = ((x - eps).clamp(lo, hi), (x + eps).clamp(lo, hi)) if linf else (x, x)
        for it in range(self.n_queries):
            still = margin_best > 0  # broken points leave for good: compact only then
            if not bool(still.all()):
                out[live] = xb
                live = live[still]
                if live.numel() == 0:
                    return out
                xs, ys, es, xb, label = xs[still], ys[still], es[still], xb[still], label[still]
                margin_best, loss_best = margin_best[still], loss_best[still]
                if linf:
                    x_minus, x_plus = x_minus[still], x_plus[still]
            m = live.numel()
            p = square_p(it, self.p_init, self.n_queries, self.rescale_schedule)
            s = max(round(math.sqrt(p * h * w)), 1)  # Python round, as upstream
            if linf:
                s = min(s, side)
                if s not in tables:
                    tables[s] = (_windows(h, s, x.device), _windows(w, s, x.device))
                vh, vw = _rand_pos(m, h, s, gen, x), _rand_pos(m, w, s, gen, x)
                in_r, in_c = tables[s][0][vh], tables[s][1][vw]
                mask = (in_r[:, :, None] & in_c[:, None, :])[:, None]
                minus = torch.rand((m, c, 1, 1), generator=gen, dtype=x.dtype).to(x.device) < 0.5
                x_new = torch.where(mask, torch.where(minus, x_minus, x_plus), xb)
            else:
                s = max(s, 3)
                if s % 2 == 0:
                    s += 1
                s = min(s, side)
                x_new = self._l2_proposal(xs, xb, es, s, gen).clamp(lo, hi)
            if self._skip_unchanged:
                # a proposal equal to the current best (its window already held those values,
                # or the box clipped the change away) has the best's loss: no query needed
                changed = x_new.ne(xb).flatten(1).any(1)
                if not bool(changed.all()):
                    rows = changed.nonzero().squeeze(1)
                    if rows.numel() == 0:
                        continue
                    margin, loss, _ = self._objective(model, x_new[rows], ys[rows], label[rows])
                    improved = loss < loss_best[rows]
                    loss_best[rows] = torch.where(improved, loss, loss_best[rows])
                    accept = improved | (margin <= 0)
                    margin_best[rows] = torch.where(accept, margin, margin_best[rows])
                    xb[rows] = torch.where(batch_view(accept, x_new), x_new[rows], xb[rows])
                    continue
            margin, loss, _ = self._objective(model, x_new, ys, label)
            improved = loss < loss_best
            accept = improved | (margin <= 0)
            loss_best = torch.where(improved, loss, loss_best)
            margin_best = torch.where(accept, margin, margin_best)
            xb = torch.where(batch_view(accept, x_new), x_new, xb)
        out[live] = xb
        return out

    def _l2_init(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """Grid of ``square_eta`` tiles (side h // 5, centred), each with a random orientation and
        a random sign per example × channel."""
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        start_h = (h - 5 * s) // 2 if h >= 5 * s else 0
        start_w = (w - 5 * s) // 2 if w >= 5 * s else 0
        delta = torch.zeros_like(x)
        for r in range(h // s):
            for q in range(w // s):
                vh, vw = start_h + r * s, start_w + q * s
                if vh >= h or vw >= w:
                    continue
                tile = _eta_batch(n, s, gen, x)[:, None, : h - vh, : w - vw]
                delta[:, :, vh : vh + s, vw : vw + s] += tile * _rand_sign((n, c, 1, 1), gen, x)
        return delta

    def _l2_proposal(
        self, x: Tensor, x_best: Tensor, eps: Tensor, s: int, gen: torch.Generator | None
    ) -> Tensor:
        """Alg. 3: move the energy of window 2 into window 1 with the ``square_eta`` shape."""
        m, c, h, w = x.shape
        delta = x_best - x
        vh1, vw1 = _rand_pos(m, h, s, gen, x), _rand_pos(m, w, s, gen, x)
        vh2, vw2 = _rand_pos(m, h, s, gen, x), _rand_pos(m, w, s, gen, x)
        mask1 = _mask_at(vh1, vw1, h, w, s)
        mask2 = _mask_at(vh2, vw2, h, w, s)
        win1 = _take(delta, vh1, vw1, s)  # (m, c, s, s)
        norm_win1 = win1.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        norm_img = batch_view(flat_norm(delta, "l2"), x)
        norm_union = (delta * (mask1 | mask2)).pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        shape = _eta_batch(m, s, gen, x)
        new = shape[:, None] * _rand_sign((m, c, 1, 1), gen, x) + win1 / (norm_win1 + 1e-12)
        budget = ((eps**2 - norm_img**2).clamp_min(0.0) / c + norm_union**2).sqrt()
        new = new / (new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt() + 1e-12) * budget
        delta = delta.masked_fill(mask2, 0.0)
        delta = _put(delta, vh1, vw1, new)
        return x + _normalize_l2(delta) * eps


def _eta_batch(m: int, s: int, gen: torch.Generator | None, like: Tensor) -> Tensor:
    """``m`` copies of ``square_eta(s)``, each transposed with probability 1/2: ``(m, s, s)``."""
    eta = square_eta(s).to(device=like.device, dtype=like.dtype).expand(m, s, s)
    flip = torch.rand(m, generator=gen, dtype=like.dtype).to(like.device) > 0.5
    return torch.where(batch_view(flip, eta), eta.transpose(1, 2), eta)


def _rand_sign(shape: tuple[int, ...], gen: torch.Generator | None, like: Tensor) -> Tensor:
    u = torch.rand(shape, generator=gen, dtype=like.dtype).to(like.device)
    return torch.where(u < 0.5, -1.0, 1.0).to(like.dtype)


def _rand_pos(m: int, size: int, s: int, gen: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform offsets in {0, …, size − s} per example."""
    return torch.randint(0, size - s + 1, (m,), generator=gen).to(like.device)


def _windows(size: int, s: int, device: torch.device) -> Tensor:
    """Boolean ``(size − s + 1, size)``: row k marks the s positions of a window at offset k."""
    pos = torch.arange(size, device=device)
    start = pos[: size - s + 1, None]
    return (pos >= start) & (pos < start + s)


def _mask_at(vh: Tensor, vw: Tensor, h: int, w: int, s: int) -> Tensor:
    """Boolean ``(m, 1, h, w)`` mask of the s×s windows with top-left corners ``(vh, vw)``."""
    rows = torch.arange(h, device=vh.device)[None, :]
    cols = torch.arange(w, device=vh.device)[None, :]
    in_r = (rows >= vh[:, None]) & (rows < vh[:, None] + s)
    in_c = (cols >= vw[:, None]) & (cols < vw[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _index(vh: Tensor, vw: Tensor, s: int) -> tuple[Tensor, Tensor, Tensor]:
    ar = torch.arange(s, device=vh.device)
    n_idx = torch.arange(vh.shape[0], device=vh.device)[:, None, None]
    return n_idx, (vh[:, None] + ar)[:, :, None], (vw[:, None] + ar)[:, None, :]


def _take(t: Tensor, vh: Tensor, vw: Tensor, s: int) -> Tensor:
    """Per-example s×s windows of ``t`` ``(m, c, h, w)`` → ``(m, c, s, s)``."""
    n_idx, r_idx, c_idx = _index(vh, vw, s)
    return t.permute(0, 2, 3, 1)[n_idx, r_idx, c_idx].permute(0, 3, 1, 2)


def _put(t: Tensor, vh: Tensor, vw: Tensor, vals: Tensor) -> Tensor:
    """Copy of ``t`` with the per-example windows replaced by ``vals`` ``(m, c, s, s)``."""
    n_idx, r_idx, c_idx = _index(vh, vw, vals.shape[-1])
    out = t.permute(0, 2, 3, 1).clone()
    out[n_idx, r_idx, c_idx] = vals.permute(0, 2, 3, 1)
    return out.permute(0, 3, 1, 2)


def _normalize_l2(delta: Tensor) -> Tensor:
    return delta / (batch_view(flat_norm(delta, "l2"), delta) + 1e-12)


ATTACKS.register("square", Square, help="Square Attack, score-based (Andriushchenko et al. 2020)")
