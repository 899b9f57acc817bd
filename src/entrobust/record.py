"""One stored evaluation row as a typed value, shared by the runner, the store and the report.

The experiment runner turns an :class:`~entrobust.evaluation.EvalResult` into records
(:func:`entrobust.experiments.runner.evaluation_records`), the results store writes and reads them
(:meth:`entrobust.experiments.store.Store.replace_evaluations`,
:meth:`~entrobust.experiments.store.Store.evaluations`), and the report's tables, plots and claims
select rows by their fields (:class:`entrobust.report.results.ResultSet`). It lives at the top of
the package, below ``evaluation``, ``experiments`` and ``report``, so none of them has to import
another to agree on a row, and it needs nothing but the standard library (the store and the report
read records without loading torch). :mod:`entrobust.evaluation` re-exports it.

A black-box row names the run of its surrogate model in :attr:`EvalRecord.surrogate` and its
registered attack in :attr:`EvalRecord.attack_name`; nothing is encoded in a label and split back
apart. What describes the row beyond these fields (the suite, the entry with its keyword
arguments, the evaluation's metadata, timings) stays in :attr:`EvalRecord.spec` as JSON data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from entrobust.errors import ConfigError

__all__ = ["ACCURACY_KINDS", "ROW_KINDS", "EvalRecord", "RowKind"]

RowKind = Literal["clean", "attack", "worst-case"]
#: what a row measures: clean accuracy, one attack (row of a suite), or the per-example worst case
ROW_KINDS: tuple[str, ...] = ("clean", "attack", "worst-case")
#: an attack row's accuracy: the attack's own, or the cascade's worst case after it
ACCURACY_KINDS: tuple[str, ...] = ("standalone", "cumulative")


@dataclass(frozen=True)
class EvalRecord:
    """Robust accuracy of one attack (or ``clean`` / ``worst-case``) of one run at one (norm, ε).

    Args:
        run_id: the evaluated run.
        evaluation: the name of the evaluation in its study (``white-box``, ``black-box`` ...).
        attack: the row's label in tables (``PGD10-32``, ``clean``, ``worst-case``).
        norm: ``linf`` or ``l2``.
        eps: ε in pixel units (0 for the clean row).
        n: number of test examples.
        clean_acc: clean accuracy over the same ``n`` examples, a fraction in [0, 1].
        robust_acc: accuracy under the attack (or the worst case), a fraction in [0, 1].
        row: ``clean``, ``attack`` or ``worst-case``.
        attack_name: the registered attack behind an attack row (``pgd``, ``apgd-ce``); for
            clean and worst-case rows their label.
        surrogate: run id of the model the attack was crafted on (black-box transfer), or None
            for white-box rows.
        accuracy: ``standalone`` (the attack's own accuracy) or ``cumulative`` (the worst case
            of the cascade so far); only attack rows can be cumulative.
        spec: the rest of the row's description as JSON data (``suite``, ``entry`` with
            ``kwargs``, ``meta``, timings).
        id: the store's row id (None before the row is written).
        created: when the store wrote the row (Unix seconds; None before).
        examples: per-example outcomes to write with the row (dicts with ``idx``, ``success`` and
            optional ``first_success``, ``margin``, ``loss``, ``entropy``, ``distance``); rows read
            back leave it None — :meth:`Store.examples` reads them by :attr:`id`.

    Raises:
        ConfigError: an unknown ``row`` or ``accuracy`` kind.
    """

    run_id: str
    evaluation: str
    attack: str
    norm: str
    eps: float
    n: int
    clean_acc: float
    robust_acc: float
    row: RowKind = "attack"
    attack_name: str = ""
    surrogate: str | None = None
    accuracy: str = "standalone"
    spec: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None
    created: float | None = None
    examples: tuple[Mapping[str, Any], ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.row not in ROW_KINDS:
            raise ConfigError(f"unknown evaluation row kind {self.row!r}; valid: {', '.join(ROW_KINDS)}")
        if self.accuracy not in ACCURACY_KINDS:
            raise ConfigError(f"unknown accuracy kind {self.accuracy!r}; valid: {', '.join(ACCURACY_KINDS)}")
        if not self.attack_name:
            object.__setattr__(self, "attack_name", self.attack)
        if self.examples is not None:
            object.__setattr__(self, "examples", tuple(self.examples))

    @property
    def transfer(self) -> bool:
        """Whether the row was crafted on a surrogate model and transferred (black-box)."""
        return self.surrogate is not None

    @property
    def setting(self) -> str:
        """``black-box`` for transferred rows, else ``white-box``."""
        return "black-box" if self.transfer else "white-box"

    @property
    def cumulative(self) -> bool:
        return self.accuracy == "cumulative"

    @property
    def kwargs(self) -> dict[str, Any]:
        """The attack's keyword arguments as the suite entry gave them."""
        return dict((self.spec.get("entry") or {}).get("kwargs") or {})

    @property
    def suite_name(self) -> str:
        """The name of the suite the row came from (``quick``, ``autoattack-standard`` ...)."""
        return str((self.spec.get("suite") or {}).get("name", ""))
