"""AutoAttack: the parameter-free ensemble that defines "robust accuracy" in RobustBench.

Croce & Hein, *Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks*, ICML 2020 (arXiv 2003.01690), §5; versions, per-attack settings and the
cascade follow ``fra31/auto-attack`` ``autoattack/autoattack.py`` (``set_version``,
``run_standard_evaluation``) and the sanity checks of ``autoattack/checks.py``. Reimplemented.

Robust accuracy is the per-example worst case: each attack runs only on the points that every
earlier attack failed on, and the first adversarial example found for a point is kept.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from entrobust.accel import channels_last_weights
from entrobust.attacks.apgd import APGD
from entrobust.attacks.base import Attack, ModelMode, frozen
from entrobust.attacks.engine import accuracy_over_draws
from entrobust.attacks.fab import FAB
from entrobust.attacks.registry import ATTACKS
from entrobust.attacks.square import Square
from entrobust.attacks.threat import ThreatModel
from entrobust.errors import ConfigError

COMPONENTS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
#: EOT forwards per gradient and scoring draws of each version (``autoattack.py: set_version``:
#: ``rand`` runs APGD-CE and APGD-DLR with ``eot_iter = 20``, 1 restart)
EOT_ITER: dict[str, int] = {"standard": 1, "plus": 1, "rand": 20, "custom": 1}
DRAWS: dict[str, int] = {"standard": 1, "plus": 1, "rand": 20, "custom": 1}
# restarts per component and version (``autoattack.py``: constructor defaults for ``custom``,
# ``set_version`` for the others; ``fab-t`` always runs 1 restart per target class)
RESTARTS: dict[str, dict[str, int]] = {
    "standard": {"apgd-ce": 1, "apgd-dlr": 1, "apgd-t": 1, "fab": 1, "fab-t": 1, "square": 1},
    "plus": {"apgd-ce": 5, "apgd-dlr": 5, "apgd-t": 1, "fab": 5, "fab-t": 1, "square": 1},
    "rand": {"apgd-ce": 1, "apgd-dlr": 1, "apgd-t": 1, "fab": 1, "fab-t": 1, "square": 1},
    "custom": {"apgd-ce": 5, "apgd-dlr": 5, "apgd-t": 1, "fab": 5, "fab-t": 1, "square": 1},
}
LogFn = Callable[[str], None]


@dataclass
class AutoAttackReport:
    """What one AutoAttack run found, per example and per stage.

    ``robust_accuracy`` maps ``"clean"`` and then each attack name, in cascade order, to the
    fraction of points still robust after it. ``broken_by[i]`` is −1 (robust to everything),
    0 (misclassified without attack) or k ≥ 1 (first broken by ``attacks[k − 1]``).
    """

    attacks: list[str]
    robust_accuracy: dict[str, float]
    broken_by: Tensor
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: mean over points of the fraction of ``draws`` forwards classifying the returned point
    #: correctly (the randomized model's expected robust accuracy); ``None`` when ``draws = 1``
    expected_accuracy: float | None = None

    @property
    def robust(self) -> Tensor:
        """Boolean mask of points robust to every attack."""
        return self.broken_by.eq(-1)

    def broken_by_names(self) -> list[str | None]:
        """Per example: the attack that broke it, ``"clean"`` or ``None`` (robust)."""
        names: list[str | None] = [None, "clean", *self.attacks]
        return [names[int(k) + 1] for k in self.broken_by]


class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020) as a cascade of APGD-CE, APGD-T, FAB-T and Square.

    Versions (``autoattack.py: set_version``), ℓ∞ and ℓ2:

    * ``standard``: APGD-CE (1 restart), APGD-T (9 target classes), FAB-T (9 target classes),
      Square (5,000 queries); 100 iterations for APGD and FAB.
    * ``plus``: APGD-CE and APGD-DLR (5 restarts each), FAB (5 restarts), Square, APGD-T,
      FAB-T (9 target classes each).
    * ``rand`` (randomized defenses): APGD-CE and APGD-DLR, 1 restart each, every gradient
      averaged over ``eot_iter = 20`` forwards (Expectation over Transformation, Athalye et al.
      2018 §4.3), and each point scored over ``draws = 20`` forwards: it counts as robust when a
      strict majority of the draws classify it correctly.
    * ``custom``: the components named in ``attacks`` (``apgd-ce``, ``apgd-dlr``, ``apgd-t``,
      ``fab``, ``fab-t``, ``square``) with the official constructor defaults (5 restarts for
      APGD-CE/-DLR and FAB, 1 for the rest).

    Every component attacks only the points still robust, in batches of ``batch_size``; the first
    adversarial example found per point is kept and the others are returned unchanged. Within a
    component, APGD and FAB stop iterating on a point as soon as it is broken (``early_stop``;
    with the same budgets, the same points are broken as by the full runs, so robust accuracy
    and ``broken_by`` are unchanged — docs/autoattack.md, "Cost"). The
    report of the last call is in :attr:`last_report` (robust accuracy after each stage, which
    attack broke each point, timings, sanity-check warnings as in ``checks.py``).

    The targeted DLR loss needs ≥ 4 classes and DLR ≥ 3: a :class:`ConfigError` says so for
    smaller problems (use ``version="custom"`` without them). Target counts are capped at C − 1.

    Args:
        threat: norm (``linf``/``l2``) and ε in [0, 1] pixel units (scalar or per example).
        version: ``"standard"``, ``"plus"`` or ``"custom"``.
        attacks: component names for ``custom`` (an error for the other versions, as upstream).
        seed: seed of every component (each reseeds per batch, as upstream).
        n_target_classes: targets for APGD-T / FAB-T (official 9).
        n_iter: iterations of APGD and FAB (official 100; lower only for quick checks).
        n_queries: Square queries (official 5,000).
        attack_kwargs: per-component keyword overrides, e.g. ``{"apgd-ce": {"restarts": 2}}``.
        batch_size: points per component call (``None``: all at once; upstream 250).
        log: called with one line per stage (``print`` for upstream's verbose output).
        eot_iter: forwards averaged per APGD gradient (default: 20 for ``rand``, else 1).
        draws: forwards per robustness decision (default: 20 for ``rand``, else 1); with more
            than one, a point is robust when a strict majority of draws classify it correctly and
            the report also gives the expected accuracy.
        channels_last: run the cascade with the model's 4-D weights in channels-last memory
            format (:func:`~entrobust.accel.channels_last_weights`; restored after). Only the
            layout changes, not a value or a budget; on a CPU the forwards of convolutional
            models are ≈ 30 % cheaper. ``None`` (default): on CPU inputs only.

    Example:
        >>> aa = AutoAttack(ThreatModel("linf", 8 / 255), version="standard", log=print)  # doctest: +SKIP
        >>> x_adv = aa(model, x, y)                                                      # doctest: +SKIP
        >>> aa.last_report.robust_accuracy                                               # doctest: +SKIP
        {'clean': 0.87, 'apgd-ce': 0.55, 'apgd-t': 0.52, 'fab-t': 0.52, 'square': 0.52}
    """

    name = "autoattack"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        version: str = "standard",
        attacks: Sequence[str] | None = None,
        seed: int | None = 0,
        n_target_classes: int = 9,
        n_iter: int = 100,
        n_queries: int = 5000,
        attack_kwargs: Mapping[str, Mapping[str, object]] | None = None,
        batch_size: int | None = None,
        log: LogFn | None = None,
        model_mode: ModelMode = "eval",
        eot_iter: int | None = None,
        draws: int | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        if version not in (*VERSIONS, "custom"):
            raise ConfigError(f"unknown AutoAttack version {version!r}; valid: {', '.join(VERSIONS)}, custom")
        for label, value in (("eot_iter", eot_iter), ("draws", draws)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")
        self.eot_iter = EOT_ITER[version] if eot_iter is None else eot_iter
        self.draws = DRAWS[version] if draws is None else draws
        if version == "custom":
            if not attacks:
                raise ConfigError("AutoAttack version='custom' needs attacks=[...]")
            names = list(attacks)
        else:
            if attacks:
                raise ConfigError(f"attacks= is only used with version='custom' (got version={version!r})")
            names = list(VERSIONS[version])
        unknown = [a for a in names if a not in COMPONENTS]
        if unknown:
            raise ConfigError(f"unknown AutoAttack component(s) {unknown}; valid: {', '.join(COMPONENTS)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"AutoAttack components must not repeat: {names}")
        extra = sorted(set(attack_kwargs or {}) - set(names))
        if extra:
            raise ConfigError(f"attack_kwargs for components that do not run: {extra}")
        if n_target_classes < 1 or n_iter < 1 or n_queries < 1:
            raise ConfigError("n_target_classes, n_iter and n_queries must be >= 1")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.version = version
        self.attacks = names
        self.n_target_classes = n_target_classes
        self.n_iter = n_iter
        self.n_queries = n_queries
        self.attack_kwargs = {k: dict(v) for k, v in (attack_kwargs or {}).items()}
        self.batch_size = batch_size
        self.log = log
        self.channels_last = channels_last
        self.last_report: AutoAttackReport | None = None
        for name in names:  # validate every component's arguments now, not mid-evaluation
            self.component(name, threat)

    # --------------------------------------------------------------- components
    def component(self, name: str, threat: ThreatModel) -> Attack:
        """The component ``name`` with this version's settings, for ``threat``."""
        restarts = RESTARTS[self.version][name]
        common: dict[str, object] = {"seed": self.seed, "model_mode": self.model_mode}
        # the cascade only asks whether a point breaks: APGD and FAB stop iterating on a point
        # once it does (same broken set and robust accuracy, fewer passes; see their docstrings)
        stop: dict[str, object] = {"early_stop": True}
        kw: dict[str, object]
        if name in ("apgd-ce", "apgd-dlr", "apgd-t"):
            loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-targeted"}[name]
            kw = {"loss": loss, "n_iter": self.n_iter, "restarts": restarts, "rho": 0.75}
            kw["n_target_classes"] = self.n_target_classes
            kw["eot_iter"] = self.eot_iter
            if name == "apgd-t":  # the targets as one batch of rows (same runs, fewer calls)
                kw["batch_targets"] = True
            kw.update(common)
            kw.update(stop)
            kw.update(self.attack_kwargs.get(name, {}))
            return APGD(threat, **kw)  # type: ignore[arg-type]
        if name in ("fab", "fab-t"):
            kw = {"targeted": name == "fab-t", "n_iter": self.n_iter, "restarts": restarts}
            kw["n_target_classes"] = self.n_target_classes
            kw.update(common)
            kw.update(stop)
            kw.update(self.attack_kwargs.get(name, {}))
            return FAB(threat, **kw)  # type: ignore[arg-type]
        kw = {"n_queries": self.n_queries, "p_init": 0.8, "restarts": restarts, "rescale_schedule": False}
        kw.update(common)
        kw.update(self.attack_kwargs.get(name, {}))
        return Square(threat, **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------------- search
    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        if target is not None:
            raise ConfigError("AutoAttack is untargeted (APGD-T / FAB-T pick their own targets)")
        layout = x.device.type == "cpu" if self.channels_last is None else self.channels_last
        if layout and self.channels_last is None:
            layout = _runs_channels_last(model, x[:1])
        with channels_last_weights(model) if layout else contextlib.nullcontext():
            return self._cascade(model, x, y)

    def _cascade(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        n = x.shape[0]
        notes: list[str] = []
        with torch.no_grad():
            logits = torch.cat([model(x[c]) for c in self._chunks(torch.arange(n, device=x.device))])
        self._check_classes(logits.shape[1])
        notes += _sanity_checks(model, x[: self.batch_size or n], logits[: self.batch_size or n], self.draws)
        robust = self._correct(model, x, y) if self.draws > 1 else logits.argmax(1).eq(y)
        broken_by = torch.where(robust, -1, 0).to(torch.long)
        acc = {"clean": float(robust.float().mean())}
        seconds: dict[str, float] = {}
        self._say(f"clean accuracy: {acc['clean']:.2%} ({n} points)")
        x_out = x.clone()
        for k, name in enumerate(self.attacks, start=1):
            start = time.perf_counter()
            idx = robust.nonzero().squeeze(1)
            for chunk in self._chunks(idx):
                attack = self.component(name, self.threat.subset(chunk))
                adv = attack(model, x[chunk], y[chunk])
                fooled = ~self._correct(model, adv, y[chunk])
                hit = chunk[fooled]
                x_out[hit] = adv[fooled]
                robust[hit] = False
                broken_by[hit] = k
            seconds[name] = time.perf_counter() - start
            acc[name] = float(robust.float().mean())
            n_broken = int((broken_by == k).sum())
            self._say(
                f"{name}: broke {n_broken} of {idx.numel()} robust points; robust accuracy "
                f"{acc[name]:.2%} ({seconds[name]:.1f} s)"
            )
        notes += square_check(acc)
        expected = None
        if self.draws > 1:
            expected = float(
                torch.cat(
                    [
                        accuracy_over_draws(model, x_out[c], y[c], self.draws)
                        for c in self._chunks(torch.arange(n, device=x.device))
                    ]
                ).mean()
            )
            self._say(f"expected accuracy over {self.draws} draws: {expected:.2%}")
        for note in notes:
            self._say(f"warning: {note}")
        self.last_report = AutoAttackReport(
            list(self.attacks), acc, broken_by.cpu(), seconds, notes, expected_accuracy=expected
        )
        return x_out

    def _correct(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Per point: classified correctly (by a strict majority of ``draws`` forwards)."""
        if self.draws == 1:
            with torch.no_grad():
                return model(x).argmax(1).eq(y)
        return accuracy_over_draws(model, x, y, self.draws) > 0.5

    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, AutoAttackReport]:
        """``(x_adv, report)`` in one call (for ε = 0 the report holds clean accuracy only)."""
        self.last_report = None
        x_adv = self(model, x, y)
        if self.last_report is None:  # ε = 0 or an empty batch: the base class skipped the search
            with frozen(model, self.model_mode), torch.no_grad():
                correct = model(x).argmax(1).eq(y) if x.shape[0] else y.bool()
            broken = torch.where(correct, -1, 0).to(torch.long).cpu()
            rob = float(correct.float().mean()) if x.shape[0] else math.nan
            self.last_report = AutoAttackReport(
                list(self.attacks), {"clean": rob, **dict.fromkeys(self.attacks, rob)}, broken
            )
        return x_adv, self.last_report

    # ---------------------------------------------------------------- internals
    def _check_classes(self, n_classes: int) -> None:
        if "apgd-t" in self.attacks and n_classes < 4:
            raise ConfigError(
                f"AutoAttack: APGD-T's targeted DLR loss needs at least 4 classes, the model has "
                f"{n_classes}; use version='custom' with attacks without apgd-t (and apgd-dlr below 3)"
            )
        if "apgd-dlr" in self.attacks and n_classes < 3:
            raise ConfigError(
                f"AutoAttack: the DLR loss needs at least 3 classes, the model has {n_classes}; "
                "use version='custom' without apgd-dlr"
            )

    def _chunks(self, idx: Tensor) -> list[Tensor]:
        if idx.numel() == 0:
            return []
        size = self.batch_size or idx.numel()
        return list(idx.split(size))

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)


def _runs_channels_last(model: nn.Module, x: Tensor) -> bool:
    """Whether ``model`` runs with channels-last weights: a model that reshapes a 4-D parameter
    with ``view`` (which needs NCHW strides) raises there, and then keeps its own layout."""
    try:
        with channels_last_weights(model), torch.no_grad():
            model(x)
    except RuntimeError:
        return False
    return True


RANDOMIZED_NOTE = (
    "the model's outputs change between identical calls (randomized defense?): evaluate with "
    "expectation over transformation — AutoAttack version='rand' (suite autoattack-rand) or "
    "eot_iter=20 on the gradient attacks — and score over several draws"
)


def outputs_change(model: nn.Module, x: Tensor, logits: Tensor) -> bool:
    """``checks.py: check_randomized``: one more forward of ``x`` disagrees with ``logits``."""
    with torch.no_grad():
        again = model(x)
    a = logits / (logits.norm(dim=1, keepdim=True) + 1e-10)
    b = again / (again.norm(dim=1, keepdim=True) + 1e-10)
    return bool(logits.argmax(1).ne(again.argmax(1)).any()) or float((a - b).norm(dim=1).max()) > 1e-4


def _sanity_checks(model: nn.Module, x: Tensor, logits: Tensor, draws: int = 1) -> list[str]:
    """``checks.py``: randomized outputs and probability outputs (instead of logits)."""
    notes = []
    if x.shape[0] and draws == 1 and outputs_change(model, x, logits):
        notes.append(RANDOMIZED_NOTE)
    tol = 1e-5
    if (
        float(logits.max()) < 1 + tol
        and float(logits.min()) > -tol
        and bool(((logits.sum(1) - 1).abs() < tol).all())
    ):
        notes.append("the model outputs look like probabilities; attacks need logits")
    return notes


def square_check(acc: Mapping[str, float], alpha: float = 0.002) -> list[str]:
    """``checks.py: check_square_sr``: Square beating the gradient attacks hints at masking."""
    names = list(acc)
    square = next((k for k in names if k.lower() == "square"), None)
    if square is None:
        return []
    before = names[: names.index(square)]  # robust accuracy after the attacks that ran before Square
    others = [acc[k] for k in before if k != "clean"]
    if others and acc[square] < min(others) - alpha:
        drop = min(others) - acc[square]
        return [
            f"Square lowered robust accuracy by {drop:.2%} after the gradient attacks: the "
            "evaluation may be unreliable (gradient masking?); consider more queries / restarts "
            "or an adaptive attack"
        ]
    return []


def _aa_factory(version: str | None) -> Callable[..., AutoAttack]:
    def build(threat: ThreatModel, **kwargs: object) -> AutoAttack:
        if version is not None:
            if "version" in kwargs and kwargs["version"] != version:
                raise ConfigError(f"autoattack-{version} fixes version={version!r}")
            kwargs["version"] = version
        return AutoAttack(threat, **kwargs)  # type: ignore[arg-type]

    return build


ATTACKS.register("autoattack", _aa_factory(None), help="AutoAttack (version=standard|plus|custom)")
ATTACKS.register("autoattack-standard", _aa_factory("standard"), help="AutoAttack standard")
ATTACKS.register("autoattack-plus", _aa_factory("plus"), help="AutoAttack plus")
ATTACKS.register(
    "autoattack-rand", _aa_factory("rand"), help="AutoAttack rand: APGD-CE/-DLR with EOT (randomized models)"
)
