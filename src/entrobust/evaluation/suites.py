"""Attack suites: named, ordered lists of attacks that :func:`~entrobust.evaluation.evaluate` runs
as a per-example worst-case cascade (SPEC §3 conventions, §8 "Evaluation records").

A :class:`Suite` is data: each :class:`SuiteEntry` names an attack of
:data:`entrobust.attacks.ATTACKS` (or a parametric RU name such as ``PGD20-8``), its keyword
arguments, an optional norm (``None`` = the evaluation's norm) and an optional fixed ε (RU names
carry their own ε = k/255; other entries run at every ε of the evaluation).

Suites also parse from strings (:func:`get_suite`)::

    "quick"                        a registered suite
    "quick,minmax"                 several suites, concatenated (duplicates dropped)
    "pgd:steps=40,fgsm"            a custom suite: attack[:key=value[:key=value]]
    "pgd(steps=40, restarts=5)"    the same with parentheses
    "FGSM_4,PGD10-8,CW40-8"        RU names (each fixes its ε)

Three keys are not attack arguments: ``label=`` (the row name), ``norm=`` (``linf``/``l2``) and
``eps=`` (a fixed ε; ``8/255`` is accepted). Values parse as int, float, ``a/b`` fraction,
``true``/``false``, ``null`` or else a string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from entrobust.attacks.base import Attack
from entrobust.attacks.threat import NORMS
from entrobust.errors import ConfigError, UnknownNameError
from entrobust.registry import Registry

__all__ = [
    "SUITES",
    "Suite",
    "SuiteEntry",
    "build_entry",
    "check_suite",
    "dataset_family",
    "get_suite",
    "parse_value",
    "register_suite",
]

AttackFactory = Callable[..., Attack]

#: key of :attr:`Suite.eps` used when no dataset family matches
ANY = "*"


def _freeze(kwargs: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(kwargs or {}))


@dataclass(frozen=True)
class SuiteEntry:
    """One row of a suite: attack ``attack`` with ``kwargs``, shown as ``label``.

    Args:
        label: row name in tables and records (unique within a suite).
        attack: a name known to :func:`entrobust.attacks.build_attack`, or a factory
            ``factory(threat, **kwargs) -> Attack`` for attacks that are not registered.
        kwargs: keyword arguments of the attack factory (read-only).
        norm: ``"linf"`` / ``"l2"``, or ``None`` to use the evaluation's norm.
        eps: a fixed ε (pixel units); ``None`` runs the entry at every ε of the evaluation.
    """

    label: str
    attack: str | AttackFactory
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    norm: str | None = None
    eps: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", _freeze(self.kwargs))
        if not self.label:
            raise ConfigError("a suite entry needs a non-empty label")
        if self.norm is not None and self.norm not in NORMS:
            raise ConfigError(
                f"suite entry {self.label!r}: unknown norm {self.norm!r}; valid: {', '.join(NORMS)}"
            )
        if self.eps is not None and (not math.isfinite(self.eps) or self.eps < 0):
            raise ConfigError(f"suite entry {self.label!r}: eps must be finite and >= 0, got {self.eps}")

    @property
    def attack_name(self) -> str:
        """The attack's registry name, or the factory's qualified name."""
        if isinstance(self.attack, str):
            return self.attack
        module = getattr(self.attack, "__module__", "?")
        return f"{module}.{getattr(self.attack, '__qualname__', repr(self.attack))}"

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (stored with every result and in resume fingerprints)."""
        return {
            "label": self.label,
            "attack": self.attack_name,
            "kwargs": {k: _jsonable(v) for k, v in sorted(self.kwargs.items())},
            "norm": self.norm,
            "eps": self.eps,
        }

    def same_attack(self, other: SuiteEntry) -> bool:
        """True when both entries run the same attack with the same settings (labels aside)."""
        a, b = self.describe(), other.describe()
        a.pop("label")
        b.pop("label")
        return a == b


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


@dataclass(frozen=True)
class Suite:
    """A named, ordered list of :class:`SuiteEntry` rows.

    Args:
        name: the suite's name.
        entries: rows in the order the cascade runs them at each ε (cheap and strong first).
        description: one line for ``entrobust list suites``.
        eps: default ε values per dataset family (``"mnist"``, ``"cifar"``, or ``"*"`` for any),
            used when :func:`evaluate` is called without ``eps``.
        variants: dataset family → name of a registered suite to use instead (``ru`` picks
            ``ru-mnist`` on MNIST-like data).
        source: where the rows come from (paper table or repository file).
    """

    name: str
    entries: tuple[SuiteEntry, ...]
    description: str = ""
    eps: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    variants: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        object.__setattr__(self, "eps", MappingProxyType({k: tuple(v) for k, v in self.eps.items()}))
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        if not self.entries:
            raise ConfigError(f"suite {self.name!r} has no attacks")
        seen: set[str] = set()
        for e in self.entries:
            if e.label in seen:
                raise ConfigError(f"suite {self.name!r} has two rows labelled {e.label!r}")
            seen.add(e.label)

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    @property
    def needs_eps(self) -> bool:
        """True when some entry has no fixed ε (it runs at the evaluation's ε values)."""
        return any(e.eps is None for e in self.entries)

    def for_dataset(self, dataset: str | None) -> Suite:
        """The variant of this suite for ``dataset`` (itself when it has none)."""
        fam = dataset_family(dataset)
        if fam is not None and fam in self.variants:
            return SUITES.get(self.variants[fam]).for_dataset(dataset)
        return self

    def default_eps(self, dataset: str | None) -> tuple[float, ...] | None:
        """The suite's usual ε values for ``dataset`` (``None`` when it has none)."""
        fam = dataset_family(dataset)
        if fam is not None and fam in self.eps:
            return self.eps[fam]
        return self.eps.get(ANY)

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the suite (name + every row)."""
        return {"name": self.name, "entries": [e.describe() for e in self.entries]}

    def __add__(self, other: Suite) -> Suite:
        return concat([self, other])


def concat(suites: Sequence[Suite], name: str | None = None) -> Suite:
    """Concatenate suites; rows repeating an earlier row's attack are dropped, clashing labels get
    a ``#2`` suffix. Default ε values and variants of a single suite are kept."""
    entries: list[SuiteEntry] = []
    for suite in suites:
        for e in suite.entries:
            if any(e.same_attack(f) for f in entries):
                continue
            label, copy = e.label, 2
            while any(f.label == label for f in entries):
                label, copy = f"{e.label}#{copy}", copy + 1
            entries.append(SuiteEntry(label, e.attack, e.kwargs, e.norm, e.eps) if label != e.label else e)
    if len(suites) == 1 and name is None:
        return suites[0]
    eps: dict[str, tuple[float, ...]] = {}
    for suite in suites:  # the first suite that has a default for a family wins
        for family, values in suite.eps.items():
            eps.setdefault(family, values)
    return Suite(name or ",".join(s.name for s in suites), tuple(entries), "custom", eps)


# ------------------------------------------------------------------------------ building rows
def build_entry(entry: SuiteEntry, eps: float, norm: str, *, allow_large_eps: bool = False) -> Attack:
    """The attack of row ``entry`` at ``eps`` in ``norm`` (``entry.norm`` wins when set); built,
    not run.

    Raises:
        ConfigError: the row's options are unknown or invalid for its attack (the message names
            the row and lists the attack's valid options), or it is a targeted attack without its
            own target selection. UnknownNameError: the attack name is unknown.
    """
    from entrobust.attacks.threat import ThreatModel
    from entrobust.errors import EntrobustError

    threat = ThreatModel(entry.norm or norm, eps, allow_large_eps=allow_large_eps)
    try:
        if isinstance(entry.attack, str):
            from entrobust.attacks.registry import build_attack

            attack = build_attack(entry.attack, threat, **dict(entry.kwargs))
        else:
            attack = entry.attack(threat, **dict(entry.kwargs))
    except EntrobustError as exc:
        cls = UnknownNameError if isinstance(exc, UnknownNameError) else ConfigError
        raise cls(f"suite row {entry.label!r}: {exc}") from None
    if not isinstance(attack, Attack):
        raise ConfigError(f"suite row {entry.label!r} did not build an Attack (got {type(attack).__name__})")
    if attack.targeted:
        raise ConfigError(
            f"suite row {entry.label!r}: {type(attack).__name__} is targeted and needs target classes; "
            "use an attack that picks its own targets (apgd-t, fab-t)"
        )
    return attack


def check_suite(suite: Suite, eps: Sequence[float], norm: str = "linf") -> None:
    """Build (never run) the attack of every (ε, row) step an evaluation of ``suite`` at ``eps``
    would run, so bad attack options fail before any work starts — also when no example would
    ever reach an attack (every point misclassified clean). Raises as :func:`build_entry`, or
    :class:`ConfigError` when rows without a fixed ε get no ε values."""
    from entrobust.evaluation.evaluate import build_plan

    _, steps = build_plan(suite, eps, norm)
    for step in steps:
        build_entry(suite.entries[step.entry_index], step.eps, step.norm)


# ------------------------------------------------------------------------------ dataset family
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("mnist", "mnist"),
    ("fashion", "mnist"),
    ("digits", "mnist"),
    ("cifar", "cifar"),
    ("svhn", "cifar"),
)


def dataset_family(name: str | None) -> str | None:
    """``"mnist"`` for MNIST-like data (mnist5k, mnist, fashion-mnist, digits), ``"cifar"`` for
    CIFAR-10/100 and SVHN, ``None`` for anything else."""
    if not name:
        return None
    base = str(name).lower().split("/")[0]
    for prefix, fam in _FAMILIES:
        if base.startswith(prefix):
            return fam
    return None


# ------------------------------------------------------------------------------ the registry
SUITES: Registry[Suite] = Registry("suite")


def register_suite(suite: Suite) -> Suite:
    """Add ``suite`` to :data:`SUITES` (a duplicate name raises)."""
    return SUITES.register(suite.name, suite, help=suite.description)


def _ru(k: int) -> float:
    return k / 255


def _ru_rows(specs: Iterable[str]) -> tuple[SuiteEntry, ...]:
    """Rows named exactly as in RU: ``FGSM_k``, ``PGDp-k``, ``CWp-k`` with ε = k/255 (linf)."""
    rows = []
    for s in specs:
        m = re.fullmatch(r"(?:FGSM_|PGD\d+-|CW\d+-)(\d+)", s)
        assert m, s
        rows.append(SuiteEntry(s, s, norm="linf", eps=_ru(int(m.group(1)))))
    return tuple(rows)


register_suite(
    Suite(
        "quick",
        (SuiteEntry("FGSM", "fgsm"), SuiteEntry("PGD-20", "pgd", {"steps": 20})),
        "FGSM + PGD-20 (CE, uniform start): a fast first look, not a robustness claim",
        eps={"mnist": (0.1, 0.2, 0.3), "cifar": (2 / 255, 4 / 255, 8 / 255)},
    )
)

# RU Table 1 / Table 6 (CIFAR-10, same rows in Tables 2, 3, 7, 8): white-box rows.
RU_CIFAR_ROWS: tuple[str, ...] = (
    "FGSM_4",
    "PGD10-4",
    "PGD10-8",
    "PGD10-16",
    "PGD20-4",
    "PGD20-8",
    "PGD20-16",
    "PGD40-4",
    "PGD40-8",
    "PGD40-16",
    "CW40-4",
    "CW40-8",
    "CW40-16",
)
# RU Table 9 (MNIST): FGSM32, PGD{10,20,40}-{32,48}; the paper reports no CW rows on MNIST.
RU_MNIST_ROWS: tuple[str, ...] = (
    "FGSM_32",
    "PGD10-32",
    "PGD10-48",
    "PGD20-32",
    "PGD20-48",
    "PGD40-32",
    "PGD40-48",
)

register_suite(
    Suite(
        "ru-cifar",
        _ru_rows(RU_CIFAR_ROWS),
        "RU Tables 1/6 white-box rows: FGSM_4, PGD{10,20,40}-{4,8,16}, CW40-{4,8,16} (eps k/255)",
        source="Ju et al. 2020 (RU), Table 1 and Table 6",
    )
)
register_suite(
    Suite(
        "ru-mnist",
        _ru_rows(RU_MNIST_ROWS),
        "RU Table 9 white-box rows: FGSM_32, PGD{10,20,40}-{32,48} (eps k/255)",
        source="Ju et al. 2020 (RU), Table 9",
    )
)
register_suite(
    Suite(
        "ru",
        _ru_rows(RU_CIFAR_ROWS),
        "RU white-box rows for the data: ru-mnist on MNIST-like data, else ru-cifar",
        variants={"mnist": "ru-mnist", "cifar": "ru-cifar"},
        source="Ju et al. 2020 (RU), Tables 1, 6, 9",
    )
)

# Min-Max Table 1 (MNIST, eps 0.3) / Table 2 (CIFAR-10, eps 0.03), run with Advertorch where only
# `epsilon` was set, so every other argument is Advertorch's default (BorealisAI/advertorch,
# advertorch/attacks/iterative_projected_gradient.py): LinfPGDAttack nb_iter 40, eps_iter 0.01,
# uniform rand_init; MomentumIterativeAttack nb_iter 40, eps_iter 0.01, decay 1.0;
# L2/LinfBasicIterativeAttack nb_iter 10, eps_iter 0.05, no random init (the L2 one gets the same
# numeric epsilon, in ℓ2). Advertorch's CarliniWagnerL2Attack has no epsilon at all; we read "CW"
# as the ε-bounded CW-margin loss optimised by the same PGD (RU's reading of "CW"), which is what
# the MNIST numbers support (CW slightly below PGD). For the unbounded reading add ``cw-l2``
# (e.g. ``--suite minmax,cw-l2:norm=l2:eps=100``).
register_suite(
    Suite(
        "minmax",
        (
            SuiteEntry("FGSM", "fgsm"),
            SuiteEntry("PGD", "pgd", {"steps": 40, "step_size": 0.01, "init": "uniform"}),
            SuiteEntry("CW", "cw-pgd", {"steps": 40, "step_size": 0.01, "init": "uniform"}),
            SuiteEntry("MIA", "mim", {"steps": 40, "step_size": 0.01, "momentum": 1.0}),
            SuiteEntry("L2BIA", "bim", {"steps": 10, "step_size": 0.05}, norm="l2"),
            SuiteEntry("LinfBIA", "bim", {"steps": 10, "step_size": 0.05}, norm="linf"),
        ),
        "Min-Max Tables 1-2: FGSM, PGD, CW, MIA, L2BIA, LinfBIA (Advertorch defaults; eps 0.3 / 0.03)",
        eps={"mnist": (0.3,), "cifar": (0.03,)},
        source="Shen, Chen, Wang, Min-Max paper §5.1-5.2, Tables 1-2; Advertorch defaults",
    )
)

# AutoAttack (fra31/auto-attack, autoattack/autoattack.py, set_version): each component runs only
# on the points still robust, which is exactly this module's cascade. Components and restarts come
# from entrobust.attacks.autoattack (VERSIONS, RESTARTS), so the suite and the `autoattack` attack
# cannot drift apart; every other setting is the component's official default (100 iterations,
# 9 target classes, Square 5,000 queries with p_init 0.8).
_AA_LABELS = {
    "apgd-ce": "APGD-CE",
    "apgd-dlr": "APGD-DLR",
    "apgd-t": "APGD-T",
    "fab": "FAB",
    "fab-t": "FAB-T",
    "square": "Square",
}


def _autoattack_rows(version: str) -> tuple[SuiteEntry, ...]:
    from entrobust.attacks.autoattack import RESTARTS, VERSIONS

    return tuple(
        SuiteEntry(_AA_LABELS[name], name, {"restarts": RESTARTS[version][name]})
        for name in VERSIONS[version]
    )


register_suite(
    Suite(
        "autoattack-standard",
        _autoattack_rows("standard"),
        "AutoAttack standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries)",
        eps={"mnist": (0.3,), "cifar": (8 / 255,)},
        source="Croce & Hein 2020; fra31/auto-attack autoattack/autoattack.py (version 'standard')",
    )
)
register_suite(
    Suite(
        "autoattack-plus",
        _autoattack_rows("plus"),
        "AutoAttack plus: APGD-CE, APGD-DLR, FAB (5 restarts each), Square, APGD-T, FAB-T",
        eps={"mnist": (0.3,), "cifar": (8 / 255,)},
        source="Croce & Hein 2020; fra31/auto-attack autoattack/autoattack.py (version 'plus')",
    )
)
register_suite(
    Suite(
        "autoattack-rand",
        (SuiteEntry("AutoAttack-rand", "autoattack-rand", {}),),
        "AutoAttack rand (randomized defenses): APGD-CE, APGD-DLR with EOT over 20 forwards, "
        "each point scored over 20 draws",
        eps={"mnist": (0.3,), "cifar": (8 / 255,)},
        source="Croce & Hein 2020; fra31/auto-attack autoattack/autoattack.py (version 'rand'); "
        "Athalye et al. 2018 §4.3 (EOT)",
    )
)
register_suite(
    Suite(
        "strong",
        (
            SuiteEntry("APGD-CE", "apgd-ce", {"restarts": 1}),
            SuiteEntry("APGD-T", "apgd-t", {"restarts": 1, "n_target_classes": 3}),
            SuiteEntry("PGD-CW", "cw-pgd", {"steps": 50}),
            SuiteEntry("FAB-T", "fab-t", {"restarts": 1, "n_target_classes": 3}),
            SuiteEntry("Square", "square", {"n_queries": 1000, "p_init": 0.8}),
        ),
        "strong and fast: APGD-CE, APGD-T (3 targets), PGD-CW 50, FAB-T (3 targets), Square 1000",
        eps={"mnist": (0.1, 0.2, 0.3), "cifar": (2 / 255, 4 / 255, 8 / 255)},
        source="AutoAttack components (fra31/auto-attack) with smaller budgets, plus CW-loss PGD",
    )
)


# ------------------------------------------------------------------------------ parsing
_FRACTION = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def parse_value(text: str) -> Any:
    """``"40"`` → 40, ``"0.5"`` → 0.5, ``"8/255"`` → 0.0313…, ``"true"`` → True, ``"null"`` →
    None; anything else (``none``, ``ce``, ...) stays a string."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":  # not "none": attacks take init=none as a string
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        pass
    m = _FRACTION.match(t)
    if m:
        den = float(m.group(2))
        if den == 0:
            raise ConfigError(f"division by zero in {text!r}")
        return float(m.group(1)) / den
    return t


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced ')' in suite {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ConfigError(f"unbalanced '(' in suite {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _fixed_threat(name: str) -> tuple[str, float] | None:
    """(norm, ε) fixed by a parametric attack name such as ``PGD20-8``, else ``None``."""
    import entrobust.attacks.library  # noqa: F401  (registers patterns)
    from entrobust.attacks.registry import PATTERNS

    for pattern in PATTERNS:
        m = pattern.regex.match(name)
        if m:
            threat, _, _ = pattern.build(m)
            eps = threat.eps
            return threat.norm, float(eps) if not hasattr(eps, "item") else float(eps.item())  # type: ignore[union-attr]
    return None


def _check_attack_name(name: str, item: str) -> None:
    import entrobust.attacks.library  # noqa: F401
    from entrobust.attacks.registry import ATTACKS

    if name in ATTACKS or _fixed_threat(name) is not None:
        return
    suites = ", ".join(SUITES.names())
    attacks = ", ".join(sorted(ATTACKS.names()))
    raise UnknownNameError(
        f"unknown suite or attack {name!r} in {item!r}; suites: {suites}; attacks: {attacks}; "
        "families: FGSM_k, PGDp-k, CWp-k"
    )


def _parse_entry(item: str) -> SuiteEntry:
    m = re.fullmatch(r"\s*([^():]+?)\s*\((.*)\)\s*", item)
    if m:
        name, args = m.group(1), [a for a in _split_top(m.group(2)) if a]
    else:
        name, *args = [p.strip() for p in item.split(":")]
    kwargs: dict[str, Any] = {}
    for a in args:
        if "=" not in a:
            raise ConfigError(f"attack argument {a!r} in {item!r} must look like key=value")
        k, v = (s.strip() for s in a.split("=", 1))
        if not k.isidentifier():
            raise ConfigError(f"bad argument name {k!r} in {item!r}")
        if k in kwargs:
            raise ConfigError(f"argument {k!r} given twice in {item!r}")
        kwargs[k] = parse_value(v)
    _check_attack_name(name, item)
    label = kwargs.pop("label", None)
    norm = kwargs.pop("norm", None)
    eps = kwargs.pop("eps", None)
    fixed = _fixed_threat(name)
    if fixed is not None:
        norm = norm if norm is not None else fixed[0]
        eps = eps if eps is not None else fixed[1]
    if eps is not None and not isinstance(eps, (int, float)):
        raise ConfigError(f"eps in {item!r} must be a number, got {eps!r}")
    if label is None:
        shown = [f"{k}={v}" for k, v in kwargs.items()]
        if norm is not None and fixed is None:
            shown.append(f"norm={norm}")
        if eps is not None and fixed is None:
            shown.append(f"eps={eps:g}")
        label = name if not shown else f"{name}({', '.join(shown)})"
    return SuiteEntry(str(label), name, kwargs, norm, None if eps is None else float(eps))


def get_suite(spec: str | Suite | Sequence[SuiteEntry], dataset: str | None = None) -> Suite:
    """Resolve ``spec`` to a :class:`Suite` (the dataset variant of a registered one, if any).

    ``spec`` is a :class:`Suite`, a sequence of :class:`SuiteEntry`, or a string of
    comma-separated registered suite names and attack items (see the module docstring). Raises
    :class:`UnknownNameError` for an unknown name, :class:`ConfigError` for a malformed item.
    """
    if isinstance(spec, Suite):
        return spec.for_dataset(dataset)
    if not isinstance(spec, str):
        entries = tuple(spec)
        if not all(isinstance(e, SuiteEntry) for e in entries):
            raise ConfigError("a suite must be a name, a Suite or a sequence of SuiteEntry")
        return Suite("custom", entries, "custom")
    items = [s for s in _split_top(spec) if s]
    if not items:
        raise ConfigError("empty suite: name a registered suite or list attacks")
    parts: list[Suite] = []
    registered = True
    for item in items:
        if item in SUITES:
            parts.append(SUITES.get(item).for_dataset(dataset))
        else:
            registered = False
            parts.append(Suite(item, (_parse_entry(item),), "custom"))
    if len(parts) == 1 and registered:
        return parts[0]
    return concat(parts, name=spec)
