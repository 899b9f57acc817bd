"""Evaluation: robust accuracy as the per-example worst case over a suite of attacks and ε.

>>> from entrobust.evaluation import evaluate, SUITES
>>> result = evaluate(model, test_data, "quick", eps=[0.1, 0.3])      # doctest: +SKIP
>>> print(result.table())                                            # doctest: +SKIP

Suites (``entrobust list suites``): ``quick``, ``ru`` (``ru-cifar`` / ``ru-mnist``), ``minmax``,
``strong``, ``autoattack-standard``, ``autoattack-plus``, or custom strings such as
``"pgd:steps=40,fgsm"``. See ``docs/evaluation.md``.
"""

from __future__ import annotations

from entrobust.evaluation.evaluate import build_plan, chunk_seed, evaluate, model_fingerprint, parse_eps
from entrobust.evaluation.result import EvalResult, Step, format_eps
from entrobust.evaluation.suites import (
    SUITES,
    Suite,
    SuiteEntry,
    concat,
    dataset_family,
    get_suite,
    parse_value,
    register_suite,
)
from entrobust.record import EvalRecord

__all__ = [
    "SUITES",
    "EvalRecord",
    "EvalResult",
    "Step",
    "Suite",
    "SuiteEntry",
    "build_plan",
    "chunk_seed",
    "concat",
    "dataset_family",
    "evaluate",
    "format_eps",
    "get_suite",
    "model_fingerprint",
    "parse_eps",
    "parse_value",
    "register_suite",
]
