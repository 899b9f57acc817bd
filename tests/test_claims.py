"""Claims C1–C11 on hand-made result sets: each claim returns each of its verdicts, with numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from entrobust.experiments.analyses import toy_smoothness
from entrobust.experiments.claims import (
    CLAIMS,
    NOT_ENOUGH,
    NOT_REPRODUCED,
    REPRODUCED,
    check_claims,
    format_claims,
    untrained_runs,
)
from entrobust.report.results import EvalRow, ResultSet, RunInfo

DS = "mnist5k"


class Study:
    """Builds a :class:`ResultSet` by hand: runs with white-box / transfer rows and analyses."""

    def __init__(self) -> None:
        self.rs = ResultSet(experiment="hand")
        self._id = 0

    def _next(self) -> int:
        self._id += 1
        return self._id

    def run(
        self,
        label: str,
        *,
        clean: float = 0.98,
        white: dict[float, float] | None = None,
        rows: dict[tuple[str, float], float] | None = None,
        black: dict[tuple[str, float], float] | None = None,
        norm: str = "linf",
        seed: int = 0,
        n: int = 1000,
        adversarial: bool = False,
        suite: str = "custom",
    ) -> RunInfo:
        rid = f"{label}-{seed}"
        r = RunInfo(rid, label, None, DS, "cnn4", seed, adversarial, group=label)
        self.rs.runs.append(r)

        def add(attack: str, eps: float, acc: float, spec: dict[str, Any], nrm: str = "linf") -> None:
            self.rs.evaluations.append(
                EvalRow(self._next(), rid, "ev", attack, nrm, eps, n, clean, acc, spec)
            )

        add("clean", 0.0, clean, {"row": "clean"})
        for eps, acc in (white or {}).items():
            add("worst-case", eps, acc, {"row": "worst-case", "suite": {"name": suite}}, norm)
        for (lab, eps), acc in (rows or {}).items():
            add(lab, eps, acc, {"row": "attack", "entry": {"attack": lab}, "suite": {"name": suite}}, norm)
        for (lab, eps), acc in (black or {}).items():
            add(lab, eps, acc, {"row": "attack", "entry": {"attack": lab}, "transfer_from": "x"})
        return r

    def analysis(self, run: RunInfo, kind: str, result: dict[str, Any]) -> None:
        self.rs.analyses[(run.id, kind)] = (self._next(), result)

    def audit(self, run: RunInfo, **statuses: str) -> None:
        evidence = {"searched": 10, "random_successes": 0, "final_accuracy": 0.0}
        checks = [
            {"name": k.replace("_", "-"), "status": v, "evidence": evidence} for k, v in statuses.items()
        ]
        self.analysis(run, "audit", {"checks": checks, "clean_accuracy": 0.98})

    def geometry(self, run: RunInfo, jac: float, nmargin: float, q: float) -> None:
        self.analysis(
            run, "geometry", {"jacobian_norm": jac, "normalized_margin": nmargin, "nonlinearity": q}
        )

    def verdict(self, cid: str) -> str:
        (res,) = check_claims(self.rs, [cid])
        assert res.detail  # every verdict explains itself
        return res.verdict


def _check(cases: Sequence[tuple[str, Study]], cid: str) -> None:
    got = {expected: s.verdict(cid) for expected, s in cases}
    assert got == {e: e for e, _ in cases}, f"{cid}: {got}"


# ------------------------------------------------------------------------------------ C1
def test_c1_verdicts() -> None:
    good = Study()
    good.run("Normal", white={0.1: 0.05, 0.3: 0.0})
    good.run("EntM", white={0.1: 0.40, 0.3: 0.01})
    bad = Study()  # EntM robust at large ε too: the claim does not hold
    bad.run("Normal", white={0.1: 0.05, 0.3: 0.0})
    bad.run("EntM", white={0.1: 0.60, 0.3: 0.45})
    none = Study()
    none.run("EntM", white={0.1: 0.4, 0.3: 0.0})  # no Normal to compare with
    _check([(REPRODUCED, good), (NOT_REPRODUCED, bad), (NOT_ENOUGH, none)], "C1")


def test_c1_numbers_and_sources_trace_to_rows() -> None:
    s = Study()
    s.run("Normal", white={0.1: 0.05, 0.3: 0.0})
    s.run("LS", white={0.1: 0.30, 0.3: 0.02})
    (res,) = check_claims(s.rs, ["C1"])
    assert res.verdict == REPRODUCED
    assert res.numbers["LS"]["acc_small"] == pytest.approx(0.30)
    ids = {int(x.split(":")[1]) for x in res.sources}
    by_id = {e.id: e for e in s.rs.evaluations}
    assert {round(by_id[i].robust_acc, 3) for i in ids} == {0.05, 0.0, 0.30, 0.02}
    assert "EntM: not run" in res.detail  # the missing alternative is named


# ------------------------------------------------------------------------------------ C2
def test_c2_verdicts() -> None:
    masked = Study()  # white-box PGD10 accuracy above transfer accuracy (RU Table 1 italics)
    masked.run("EntM", rows={("PGD10-32", 0.125): 0.55}, black={("PGD10-32", 0.125): 0.30})
    honest = Study()
    r = honest.run("EntM", rows={("PGD10-32", 0.125): 0.10}, black={("PGD10-32", 0.125): 0.40})
    honest.audit(r, transfer_gap="pass", random_search="pass")
    via_audit = Study()  # no transfer rows, but the audit's random search found misses
    via_audit.audit(via_audit.run("LS"), random_search="fail")
    none = Study()
    none.run("EntM", rows={("PGD10-32", 0.125): 0.1})
    _check(
        [(REPRODUCED, masked), (NOT_REPRODUCED, honest), (REPRODUCED, via_audit), (NOT_ENOUGH, none)], "C2"
    )


# ------------------------------------------------------------------------------------ C3, C4
def test_c3_verdicts() -> None:
    good = Study()
    good.run("PAT", clean=0.95, white={0.2: 0.60}, adversarial=True)
    good.run("PAT-EntM", clean=0.98, white={0.2: 0.66}, adversarial=True)
    bad = Study()
    bad.run("PAT", clean=0.97, white={0.2: 0.60}, adversarial=True)
    bad.run("PAT-LS", clean=0.93, white={0.2: 0.70}, adversarial=True)  # loses on clean data
    noise = Study()  # +1 pp on 1000 examples: within two standard errors, no verdict
    noise.run("PAT", clean=0.970, white={0.2: 0.60}, adversarial=True)
    noise.run("PAT-EntM", clean=0.980, white={0.2: 0.70}, adversarial=True)
    none = Study()
    none.run("PAT-EntM", white={0.2: 0.66})
    _check([(REPRODUCED, good), (NOT_REPRODUCED, bad), (NOT_ENOUGH, none)], "C3")
    (res,) = check_claims(noise.rs, ["C3"])
    assert res.verdict == NOT_ENOUGH and "within noise" in res.detail


def test_c4_verdicts_and_noise() -> None:
    good = Study()
    good.run("PAT-EntM", white={0.1: 0.8, 0.3: 0.50})
    good.run("TRADES", white={0.1: 0.8, 0.3: 0.40})
    tie = Study()  # 0.5 pp lower on 1000 examples is within noise: ≥ holds
    tie.run("PAT-EntM", white={0.3: 0.495})
    tie.run("TRADES", white={0.3: 0.500})
    bad = Study()
    bad.run("PAT-EntM", white={0.3: 0.30})
    bad.run("TRADES", white={0.3: 0.50})
    none = Study()
    none.run("PAT-EntM", white={0.3: 0.30})
    none.run("TRADES", white={0.1: 0.50})  # no common ε
    _check([(REPRODUCED, good), (REPRODUCED, tie), (NOT_REPRODUCED, bad), (NOT_ENOUGH, none)], "C4")


# ------------------------------------------------------------------------------------ C5, C6
def test_c5_verdicts() -> None:
    def study(entm: tuple[float, float, float]) -> Study:
        s = Study()
        s.geometry(s.run("Normal"), 72.0, 0.19, 4.4)  # RU Table 4 magnitudes
        s.geometry(s.run("EntM"), *entm)
        return s

    none = Study()
    none.geometry(none.run("EntM"), 3.4, 2.8, 52.5)
    _check(
        [
            (REPRODUCED, study((3.44, 2.81, 52.5))),
            (NOT_REPRODUCED, study((80.0, 0.1, 52.5))),
            (NOT_ENOUGH, none),
        ],
        "C5",
    )


def test_c6_verdicts() -> None:
    good, bad, none = Study(), Study(), Study()
    good.audit(good.run("PAT-EntM"), eps_curve="pass", random_search="pass")
    bad.audit(bad.run("PAT-EntM"), eps_curve="fail", random_search="pass")
    none.run("PAT-EntM")
    _check([(REPRODUCED, good), (NOT_REPRODUCED, bad), (NOT_ENOUGH, none)], "C6")


def test_random_search_without_points_is_no_evidence() -> None:
    s = Study()
    r = s.run("PAT-EntM")
    checks = [
        {"name": "random-search", "status": "pass", "evidence": {"searched": 0}},
        {"name": "eps-curve", "status": "pass", "evidence": {}},
    ]
    s.analysis(r, "audit", {"checks": checks})
    assert s.verdict("C6") == NOT_ENOUGH


# ------------------------------------------------------------------------------------ C7, C8
def test_c7_verdicts() -> None:
    good = Study()
    good.run("ℓ∞-ATENT", white={0.3: 0.95})
    good.run("PGD-AT", white={0.3: 0.96})
    good.run("ℓ2-ATENT", white={2.0: 0.77}, norm="l2")
    good.run("TRADES", white={2.0: 0.70, 0.3: 0.96}, norm="l2")
    bad = Study()
    bad.run("ℓ∞-ATENT", white={0.3: 0.50})
    bad.run("TRADES", white={0.3: 0.96})
    none = Study()
    none.run("ℓ∞-ATENT", white={0.3: 0.95})
    _check([(REPRODUCED, good), (NOT_REPRODUCED, bad), (NOT_ENOUGH, none)], "C7")


def test_c8_verdicts() -> None:
    good, bad, none = Study(), Study(), Study()
    good.run("SGD", white={0.3: 0.01})
    good.run("Entropy-SGD", white={0.3: 0.012})
    bad.run("SGD", white={0.3: 0.01})
    bad.run("Entropy-SGD", white={0.3: 0.60})
    none.run("Entropy-SGD", white={0.3: 0.01})
    _check([(REPRODUCED, good), (NOT_REPRODUCED, bad), (NOT_ENOUGH, none)], "C8")


# ------------------------------------------------------------------------------------ C9, C10
def _mm(min_max_pgd: float, fz: float, with_l1: float | None = None) -> Study:
    s = Study()
    std = s.run("Std", rows={("PGD", 0.3): 0.59}, suite="minmax")
    mm = s.run("Min-Max", rows={("PGD", 0.3): min_max_pgd}, suite="minmax")
    s.analysis(std, "fuzziness", {"first": 0.44})
    s.analysis(mm, "fuzziness", {"first": fz})
    if with_l1 is not None:
        s.run("Std+L1", rows={("PGD", 0.3): with_l1}, suite="minmax")
    return s


def test_c9_verdicts() -> None:
    none = Study()
    none.run("Min-Max", rows={("PGD", 0.3): 0.8}, suite="minmax")
    _check(
        [
            (REPRODUCED, _mm(0.84, 0.005, with_l1=0.62)),
            (NOT_REPRODUCED, _mm(0.84, 0.60)),  # fuzziness went up
            (NOT_REPRODUCED, _mm(0.84, 0.005, with_l1=0.90)),  # L1 alone beats Min-Max
            (NOT_ENOUGH, none),
        ],
        "C9",
    )


def test_c10_verdicts() -> None:
    good, bad, none = Study(), Study(), Study()
    good.run("AT", white={0.3: 0.48})
    good.run("AT+EnSGD", white={0.3: 0.52})
    good.run("AWP", white={0.3: 0.50})
    good.run("AWP+EnSGD", white={0.3: 0.499})  # ≥ within noise
    bad.run("AT", white={0.3: 0.48})
    bad.run("AT+EnSGD", white={0.3: 0.40})
    none.run("AT+EnSGD", white={0.3: 0.40})
    _check([(REPRODUCED, good), (NOT_REPRODUCED, bad), (NOT_ENOUGH, none)], "C10")


# ------------------------------------------------------------------------------------ C11
def _toy(surfaces: dict[str, np.ndarray], t: np.ndarray) -> Study:
    s = Study()
    s.rs.study.append("study")
    s.rs.analyses[("study", "toy")] = (99, {"smoothness": toy_smoothness(t, t, surfaces)})
    return s


def test_c11_verdicts_on_analytic_surfaces() -> None:
    t = np.linspace(-2, 2, 41)
    g1, g2 = np.meshgrid(t, t)
    smooth = 0.1 * (g1**2 + g2**2)
    l2 = np.sqrt(g1**2 + g2**2) + 0.1 * g1  # kink only at θ = 0
    linf = np.abs(g1) + np.abs(g2)  # kinks along both axes
    good = _toy({"linear-l2": l2, "linear-linf": linf, "ensgd-l2": smooth, "ensgd-linf": smooth}, t)
    bad = _toy({"linear-l2": l2, "linear-linf": linf, "ensgd-l2": linf, "ensgd-linf": smooth}, t)
    none = Study()
    _check([(REPRODUCED, good), (NOT_REPRODUCED, bad), (NOT_ENOUGH, none)], "C11")


# ------------------------------------------------------------------------------------ driver
def test_every_claim_is_registered_and_runs_on_an_empty_study() -> None:
    assert CLAIMS.names() == [f"C{i}" for i in range(1, 12)]
    results = check_claims(Study().rs)
    assert [r.id for r in results] == CLAIMS.names()
    assert {r.verdict for r in results} == {NOT_ENOUGH}
    text = format_claims(results)
    assert "C11" in text and "11 not enough data" in text


def test_untrained_models_are_left_out_and_named() -> None:
    s = Study()
    s.run("Normal", clean=0.11, white={0.1: 0.0, 0.3: 0.0})
    s.run("EntM", clean=0.12, white={0.1: 0.0, 0.3: 0.0})
    assert set(untrained_runs(s.rs)) == {"Normal-0", "EntM-0"}
    (res,) = check_claims(s.rs, ["C1"])
    assert res.verdict == NOT_ENOUGH
    assert "not trained enough" in res.detail and "EntM 12%" in res.detail


def test_seeds_are_averaged() -> None:
    s = Study()
    for seed, (n, e) in enumerate([(0.05, 0.30), (0.07, 0.40)]):
        s.run("Normal", seed=seed, white={0.1: n, 0.3: 0.0})
        s.run("EntM", seed=seed, white={0.1: e, 0.3: 0.0})
    (res,) = check_claims(s.rs, ["C1"])
    assert res.numbers["EntM"]["acc_small"] == pytest.approx(0.35)
    assert res.numbers["EntM"]["normal_small"] == pytest.approx(0.06)
