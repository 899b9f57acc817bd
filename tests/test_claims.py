"""Claims C1–C11 on hand-made result sets: each claim returns each of its verdicts, with numbers;
comparisons paired on the same test points (McNemar's exact test, paired bootstrap) when the
per-example outcomes are stored, and the effect, p and n in the claims table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest

from entrobust.diagnostics.analysis import toy_smoothness
from entrobust.record import EvalRecord
from entrobust.report import stats
from entrobust.report.claims import (
    CLAIMS,
    INCONCLUSIVE,
    NOT_ENOUGH,
    NOT_REPRODUCED,
    REFUTED,
    REPRODUCED,
    check_claims,
    format_claims,
    untrained_runs,
)
from entrobust.report.results import ResultSet, RunInfo

DS = "mnist5k"


class Study:
    """Builds a :class:`ResultSet` by hand: runs with white-box / transfer rows and analyses."""

    def __init__(self) -> None:
        self.examples: dict[int, list[dict[str, Any]]] = {}
        self.rs = ResultSet(experiment="hand", example_source=lambda i: self.examples.get(i, []))
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
        outcomes: dict[tuple[str, float], Sequence[bool]] | None = None,
    ) -> RunInfo:
        """``outcomes``: (attack label, ε) → per-example correctness of an attack row (stored as
        per-example rows with indices 0, 1, ...)."""
        rid = f"{label}-{seed}"
        r = RunInfo(rid, label, None, DS, "cnn4", seed, adversarial, group=label)
        self.rs.runs.append(r)

        def add(attack: str, eps: float, acc: float, nrm: str = "linf", **kw: Any) -> None:
            self.rs.evaluations.append(
                EvalRecord(rid, "ev", attack, nrm, eps, n, clean, acc, id=self._next(), **kw)
            )

        add("clean", 0.0, clean, row="clean")
        for eps, acc in (white or {}).items():
            add("worst-case", eps, acc, norm, row="worst-case", spec={"suite": {"name": suite}})
        for (lab, eps), acc in (rows or {}).items():
            add(lab, eps, acc, norm, spec={"suite": {"name": suite}})
        for (lab, eps), acc in (black or {}).items():
            add(lab, eps, acc, surrogate="x")
        for (lab, eps), ok in (outcomes or {}).items():
            i = self._next()
            spec = {"suite": {"name": suite}}
            acc = float(np.mean(ok))
            self.rs.evaluations.append(
                EvalRecord(rid, "ev", lab, norm, eps, len(ok), clean, acc, spec=spec, id=i)
            )
            self.examples[i] = [{"idx": j, "success": not bool(v)} for j, v in enumerate(ok)]
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


def test_claims_and_tables_read_a_defense_from_one_alias_table() -> None:
    """A baseline labelled as the tables accept it ("Standard" fills the Normal column) is the
    claims' Normal model too, and the claims module spells no label list of its own."""
    import ast
    import inspect

    from entrobust.report import claims
    from entrobust.report.results import ALIASES

    s = Study()
    s.run("Standard", white={0.1: 0.05, 0.3: 0.0})
    s.run("EntM", white={0.1: 0.40, 0.3: 0.01})
    assert [r.label for r in s.rs.runs_of("Normal", DS)] == ["Standard"]
    assert s.verdict("C1") == REPRODUCED
    presets = [
        n.value
        for n in ast.walk(ast.parse(inspect.getsource(claims)))
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.count("/") == 1
        and n.value.split("/")[0] in ("ru", "atent", "minmax", "kanai")
    ]  # fmt: skip
    assert not presets, presets
    assert {"Normal", "SGD", "Std.", "ℓ2 ATENT"} <= set(ALIASES)


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
    good.run("PAT-EntM", white={0.1: 0.8, 0.3: 0.50}, n=10000)
    good.run("TRADES", white={0.1: 0.8, 0.3: 0.40}, n=10000)
    tie = Study()  # 0.5 pp lower on 10,000 examples: the interval stays above −3 pp, ≥ holds
    tie.run("PAT-EntM", white={0.3: 0.495}, n=10000)
    tie.run("TRADES", white={0.3: 0.500}, n=10000)
    bad = Study()
    bad.run("PAT-EntM", white={0.3: 0.30})
    bad.run("TRADES", white={0.3: 0.50})
    unsure = Study()  # the same tie on 1,000 unpaired examples: the interval reaches below −3 pp
    unsure.run("PAT-EntM", white={0.3: 0.495})
    unsure.run("TRADES", white={0.3: 0.500})
    _check([(REPRODUCED, good), (REPRODUCED, tie), (REFUTED, bad), (INCONCLUSIVE, unsure)], "C4")
    none = Study()
    none.run("PAT-EntM", white={0.3: 0.30})
    none.run("TRADES", white={0.1: 0.50})  # no common ε
    assert none.verdict("C4") == NOT_ENOUGH


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
    good.run("AT", white={0.3: 0.48}, n=10000)
    good.run("AT+EnSGD", white={0.3: 0.52}, n=10000)
    good.run("AWP", white={0.3: 0.50}, n=10000)
    good.run("AWP+EnSGD", white={0.3: 0.499}, n=10000)  # ≥ within noise
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
    assert {r.verdict for r in results} == {INCONCLUSIVE}
    text = format_claims(results)
    assert "C11" in text and "11 inconclusive" in text


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


# ------------------------------------------------------------------------------------ paired statistics
def _paired_mm(mm: Sequence[bool], std: Sequence[bool], *, eps: float = 0.3) -> Study:
    """Min-Max and Std with per-example PGD outcomes on the same points (fuzziness holds)."""
    s = Study()
    a = s.run("Std", outcomes={("PGD", eps): std}, suite="minmax")
    b = s.run("Min-Max", outcomes={("PGD", eps): mm}, suite="minmax")
    s.analysis(a, "fuzziness", {"first": 0.44})
    s.analysis(b, "fuzziness", {"first": 0.005})
    return s


def _outcomes(n11: int, n10: int, n01: int, n00: int) -> tuple[list[bool], list[bool]]:
    """Paired outcomes with the given counts (first model right/wrong × second right/wrong)."""
    a = [True] * n11 + [True] * n10 + [False] * n01 + [False] * n00
    b = [True] * n11 + [False] * n10 + [True] * n01 + [False] * n00
    return a, b


def test_mcnemar_matches_scipy_and_a_hand_computation() -> None:
    a, b = _outcomes(50, 10, 2, 38)
    p, n10, n01 = stats.mcnemar_exact(a, b)
    assert (n10, n01) == (10, 2)
    # two-sided exact: 2 · P(Binomial(12, 1/2) ≤ 2) = 2 · (1 + 12 + 66) / 4096
    assert p == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)
    assert p == pytest.approx(binomtest(10, 12, 0.5).pvalue, rel=1e-12)
    assert stats.mcnemar_exact([True, False], [True, False])[0] == 1.0  # no discordant pair
    for n10, n01 in [(0, 1), (3, 3), (7, 2), (0, 40), (55, 61), (130, 90), (1, 400)]:
        p = stats.mcnemar_exact([True] * n10 + [False] * n01, [False] * n10 + [True] * n01)[0]
        assert p == pytest.approx(binomtest(n10, n10 + n01, 0.5).pvalue, rel=1e-9, abs=1e-300)
    with pytest.raises(ValueError, match="equal lengths"):
        stats.mcnemar_exact([True], [True, False])


def test_paired_bootstrap_interval_is_seeded_and_matches_the_normal_approximation() -> None:
    a, b = _outcomes(300, 60, 20, 620)  # d = +4 pp on 1000 points
    x, y = np.array(a), np.array(b)
    lo, hi = stats.paired_bootstrap([(x, y)], resamples=20000, seed=1)
    assert (lo, hi) == stats.paired_bootstrap([(x, y)], resamples=20000, seed=1)  # deterministic
    # hand: Var(d̄) = (p₊ + p₋ − d²) / n with p₊ = 0.06, p₋ = 0.02
    se = np.sqrt((0.06 + 0.02 - 0.04**2) / 1000)
    assert lo == pytest.approx(0.04 - 1.96 * se, abs=0.002)
    assert hi == pytest.approx(0.04 + 1.96 * se, abs=0.002)
    # the multinomial shortcut is the ordinary bootstrap: resampling the examples themselves
    rng = np.random.default_rng(0)
    d = x.astype(int) - y.astype(int)
    brute = np.quantile(d[rng.integers(0, d.size, (4000, d.size))].mean(1), [0.025, 0.975])
    assert lo == pytest.approx(brute[0], abs=0.003) and hi == pytest.approx(brute[1], abs=0.003)
    # two seeds: the interval also carries the spread between seeds
    c = stats.paired([(x, y), (y, x)])
    assert c.diff == pytest.approx(0.0) and c.seeds == 2 and c.n == 2000
    assert c.low < -0.04 and c.high > 0.04


def test_paired_claim_is_reproduced_refuted_or_inconclusive() -> None:
    a, b = _outcomes(80, 40, 4, 76)  # Min-Max right on 40 points where Std is wrong, 4 the other way
    good = _paired_mm(a, b)
    (res,) = check_claims(good.rs, ["C9"])
    assert res.verdict == REPRODUCED
    e = res.effect
    assert e is not None and e["method"] == "paired" and e["n"] == 200
    assert e["diff"] == pytest.approx(36 / 200)
    assert e["p"] == pytest.approx(binomtest(40, 44, 0.5).pvalue)
    assert (e["low"], e["high"]) == pytest.approx(
        stats.paired_bootstrap([(np.array(a), np.array(b))], seed=stats.BOOTSTRAP_SEED)
    )
    assert e["low"] > 0
    assert _paired_mm(b, a).verdict("C9") == REFUTED  # the other way round
    unsure_a, unsure_b = _outcomes(80, 6, 5, 109)  # 6 vs 5 discordant: no decision
    (res,) = check_claims(_paired_mm(unsure_a, unsure_b).rs, ["C9"])
    assert res.verdict == INCONCLUSIVE and res.effect is not None
    assert res.effect["low"] < 0 < res.effect["high"] and res.effect["p"] == pytest.approx(1.0)


def test_pairing_decides_where_two_independent_accuracies_would_not() -> None:
    a, b = _outcomes(88, 12, 0, 100)  # 50 % vs 44 %: every disagreement favours Min-Max
    assert _paired_mm(a, b).verdict("C9") == REPRODUCED  # McNemar p = 2 / 2^12
    unpaired = _mm(0.50, 0.005)  # the same accuracies without per-example rows
    unpaired.rs.evaluations[:] = [
        e if e.attack != "PGD" else EvalRecord(
            e.run_id, "ev", "PGD", "linf", 0.3, 200, 0.98, 0.50 if e.run_id.startswith("Min") else 0.44,
            spec=e.spec, id=e.id)
        for e in unpaired.rs.evaluations
    ]  # fmt: skip
    (res,) = check_claims(unpaired.rs, ["C9"])
    assert res.verdict == INCONCLUSIVE and res.effect is not None and res.effect["method"] == "unpaired"


def test_minmax_claim_reads_eps_as_the_paper_did() -> None:
    a, b = _outcomes(80, 40, 4, 76)
    s = Study()
    eps_n = 0.3 * 0.3081
    std = s.run("Std", outcomes={("PGD", eps_n): b, ("PGD", 0.3): [False] * 200}, suite="minmax")
    mm = s.run("Min-Max", outcomes={("PGD", eps_n): a, ("PGD", 0.3): [False] * 200}, suite="minmax")
    s.analysis(std, "fuzziness", {"first": 0.44})
    s.analysis(mm, "fuzziness", {"first": 0.005})
    (res,) = check_claims(s.rs, ["C9"])
    # decided at the normalized-space reading (≈ 0.092 px); pixel ε = 0.3 (both at 0 %) only shown
    assert res.verdict == REPRODUCED
    assert "0.092" in res.eps_reading and "0.3" in res.eps_reading and "normalized" in res.eps_reading
    assert "pixel ε=0.3 (shown, not judged)" in res.detail
    assert res.effect is not None and "0.0924" in res.effect["what"]


def test_claims_table_shows_reading_effect_p_n_and_verdict() -> None:
    a, b = _outcomes(80, 40, 4, 76)
    text = format_claims(check_claims(_paired_mm(a, b).rs))
    header = text.splitlines()[0]
    for col in ("claim", "paper ε reading", "effect [95% CI]", "p", "n", "verdict"):
        assert col in header
    c9 = next(line for line in text.splitlines() if line.startswith("C9 "))
    assert "+18.0 pp [" in c9 and "<0.001" in c9 and " 200 " in c9 and c9.endswith("reproduced")
    assert "not enough data" not in text


def test_untrained_models_keep_their_effect_but_stay_inconclusive() -> None:
    a, b = _outcomes(5, 10, 2, 183)
    s = _paired_mm(a, b)
    for e in s.rs.evaluations:
        if e.attack == "clean":
            object.__setattr__(e, "robust_acc", 0.1)  # at chance: not trained enough
    (res,) = check_claims(s.rs, ["C9"])
    assert res.verdict == INCONCLUSIVE and "not trained enough" in res.detail
    assert res.effect is not None and res.effect["untrained"] and res.effect["n"] == 200
    assert "(untrained)" in format_claims([res])
