"""Experiments (SPEC §6): study files, the resumable runner and the results store.

The claims check lives beside the tables in :mod:`entrobust.report.claims` (``check_claims`` is
re-exported here); this package imports :mod:`entrobust.report`, never the reverse.

>>> from entrobust.experiments import load_experiment, run_experiment
>>> exp = load_experiment("experiments/ru-mnist5k-cpu.toml")     # doctest: +SKIP
>>> result = run_experiment(exp, "workspace")                   # doctest: +SKIP
>>> result.report["html"]                                       # doctest: +SKIP
"""

from __future__ import annotations

from entrobust.experiments.spec import (
    AnalysisSpec,
    DefenseSpec,
    EvaluationSpec,
    Experiment,
    PlannedRun,
    ReportSpec,
    experiment_from_dict,
    load_experiment,
    plan_runs,
)
from entrobust.experiments.store import Store

__all__ = [
    "AnalysisSpec",
    "DefenseSpec",
    "EvaluationSpec",
    "Experiment",
    "PlannedRun",
    "ReportSpec",
    "Store",
    "check_claims",
    "experiment_from_dict",
    "load_experiment",
    "plan_runs",
    "run_experiment",
]


def __getattr__(name: str) -> object:  # heavy parts load on first use
    if name == "run_experiment":
        from entrobust.experiments.runner import run_experiment

        return run_experiment
    if name == "check_claims":
        from entrobust.report.claims import check_claims

        return check_claims
    raise AttributeError(f"module 'entrobust.experiments' has no attribute {name!r}")
