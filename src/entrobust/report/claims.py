"""The papers' qualitative claims C1–C11, checked on the user's own stored results (SPEC §6).

Each claim is a function ``ResultSet → ClaimResult`` with a verdict — ``reproduced``,
``refuted`` or ``inconclusive`` — the effect behind it (a difference in robust accuracy in
percentage points with its 95 % interval, p-value and number of paired test points), the paper's
own reading of ε, the numbers, the paper table it comes from, and the ids of the stored rows it
read. Accuracy comparisons use the **strongest attack the study ran** at an ε (the lowest robust
accuracy over every white-box row there, worst-case rows included) and are **paired on the same
test points** (:mod:`entrobust.report.stats`): McNemar's exact test on the per-example
outcomes the store keeps, and a seeded paired bootstrap over examples (and over seeds where there
are several) for the interval; without per-example rows, a normal approximation. "A beats B" holds
when the interval lies above 0 and fails when it lies at or below 0; "A ≥ B" holds when the
interval's lower end is above −3 pp (:data:`NONINFERIORITY_MARGIN`) and fails when its upper end is
below −3 pp; otherwise that part is undecided. Geometry quantities (RU Table 4) and fuzziness must
differ by more than 10 %. A claim with several parts is reproduced only when every required part
has data and holds (alternatives such as "EntM / LS" need one of them); it is refuted as soon as
one part with data fails; otherwise it is inconclusive.

=====  ==========================================================================  =================
id     claim                                                                       source
=====  ==========================================================================  =================
C1     EntM / LS alone are robust only at small ε                                  RU Tables 1, 3, 9
C2     EntM / LS alone mask gradients (white-box PGD10 > transfer; random search)  RU Tables 1, 3, 10
C3     PAT-EntM / PAT-LS beat PAT on clean data and at large ε                      RU Tables 1–3
C4     PAT-EntM ≥ TRADES                                                           RU Tables 1–3
C5     EntM shrinks ‖∇ₓf‖, raises the normalized margin; EntM alone has high Q_f   RU Table 4
C6     PAT-EntM accuracy → 0 as ε grows, random search finds nothing               RU Fig. 1, App. C.1
C7     ℓ∞-ATENT ≈ PGD-AT / TRADES; ℓ2-ATENT best under ℓ2                          ATENT Tables 1–3
C8     Entropy-SGD alone gives no robustness                                       ATENT Tables 1–2
C9     Min-Max (no AT) beats Std under PGD and lowers fuzziness; L1 / −L2 do not   Min-Max Tables 1, 3
C10    AT + EnSGD > AT and AWP + EnSGD ≥ AWP                                       Kanai Table 1
C11    toy: ℓ2 adversarial loss smooth except θ = 0, ℓ∞ not at θᵢ = 0, EnSGD       Kanai §5.1, Fig. 2
       smoothed loss smooth
=====  ==========================================================================  =================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from entrobust.record import EvalRecord
from entrobust.registry import Registry
from entrobust.report import stats
from entrobust.report.results import ALIASES, Cell, ResultSet, RunInfo
from entrobust.report.stats import Comparison

__all__ = [
    "CLAIMS",
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "check_claims",
    "claim_effect_cells",
    "format_claims",
]

REPRODUCED = "reproduced"
REFUTED = "refuted"
INCONCLUSIVE = "inconclusive"
VERDICTS: tuple[str, ...] = (REPRODUCED, REFUTED, INCONCLUSIVE)
NOT_REPRODUCED = REFUTED  # the names of earlier versions
NOT_ENOUGH = INCONCLUSIVE

#: "A ≥ B" and "A ≈ B" tolerate A up to this much (3 pp, ATENT's "≈") below B
NONINFERIORITY_MARGIN = 0.03


@dataclass
class ClaimResult:
    """The verdict on one claim, with its evidence."""

    id: str
    claim: str
    source: str
    verdict: str
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    dataset: str | None = None
    eps_reading: str = ""  # the paper's own reading of ε next to the ε compared here
    effect: dict[str, Any] | None = None  # the deciding comparison (Comparison.to_dict + "what")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "claim": self.claim,
            "source": self.source,
            "verdict": self.verdict,
            "detail": self.detail,
            "numbers": self.numbers,
            "sources": self.sources,
            "dataset": self.dataset,
            "eps_reading": self.eps_reading,
            "effect": self.effect,
        }


ClaimFn = Callable[[ResultSet, str], ClaimResult]


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str
    fn: Callable[[ResultSet, str, Claim], ClaimResult]


CLAIMS: Registry[Claim] = Registry("claim")


def _claim(
    cid: str, text: str, source: str
) -> Callable[[Callable[[ResultSet, str, Claim], ClaimResult]], Any]:
    def add(fn: Callable[[ResultSet, str, Claim], ClaimResult]) -> Any:
        CLAIMS.register(cid, Claim(cid, text, source, fn), help=text)
        return fn

    return add


# ------------------------------------------------------------------------------------ evidence
class _Evidence:
    """Collects the parts of one claim: their pass/fail/missing state, numbers and sources."""

    def __init__(self, claim: Claim, dataset: str) -> None:
        self.claim = claim
        self.dataset = dataset
        self.parts: list[tuple[str, bool | None, str]] = []
        self.optional: set[str] = set()
        self.info: set[str] = set()
        self.numbers: dict[str, Any] = {}
        self.sources: list[str] = []
        self.eps_reading = ""
        self.comparisons: list[tuple[str, Comparison, bool | None]] = []

    def use(self, *cells: Cell) -> None:
        for c in cells:
            for s in c.sources:
                if s not in self.sources:
                    self.sources.append(s)

    def part(
        self, name: str, ok: bool | None, text: str, *, optional: bool = False, info: bool = False
    ) -> None:
        """Add a part; an ``optional`` part without data (``ok`` None) does not block the verdict
        (e.g. "EntM / LS": either defense is enough), a required one does; an ``info`` part is
        shown and never judged."""
        self.parts.append((name, ok, text))
        if optional:
            self.optional.add(name)
        if info:
            self.info.add(name)

    def compared(self, what: str, c: Comparison, ok: bool | None) -> None:
        """Record a comparison behind a part (the claim's effect is chosen among them)."""
        self.comparisons.append((what, c, ok))
        self.numbers.setdefault("comparisons", {})[what] = c.to_dict()

    def effect(self, verdict: str) -> dict[str, Any] | None:
        """The comparison that decides ``verdict``: the first failing one of a refuted claim, the
        first undecided one of an inconclusive claim, else the first."""
        if not self.comparisons:
            return None
        want = {REFUTED: False, INCONCLUSIVE: None}.get(verdict, True)
        what, c, _ = next((x for x in self.comparisons if x[2] is want), self.comparisons[0])
        return {"what": what, **c.to_dict()}

    def result(self) -> ClaimResult:
        judged = [(n, ok) for n, ok, _ in self.parts if ok is not None and n not in self.info]
        missing_required = any(
            ok is None and n not in self.optional and n not in self.info for n, ok, _ in self.parts
        )
        if not judged:
            verdict = INCONCLUSIVE
        elif any(ok is False for _, ok in judged):
            verdict = REFUTED
        elif missing_required:
            verdict = INCONCLUSIVE
        else:
            verdict = REPRODUCED
        detail = "; ".join(f"{name}: {text}" for name, _, text in self.parts) or "no matching runs"
        return ClaimResult(
            self.claim.id,
            self.claim.claim,
            self.claim.source,
            verdict,
            detail,
            self.numbers,
            self.sources,
            self.dataset,
            self.eps_reading,
            self.effect(verdict),
        )


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


def _diff_text(c: Comparison) -> str:
    """``+3.1 pp [+0.4, +5.9], p=0.02, n=200`` (``within noise`` when the interval holds 0)."""
    noise = ", within noise" if c.low <= 0 <= c.high else ""
    return f"{c.text()}, p={_p(c.p)}, n={c.n}{noise}"


def _p(p: float) -> str:
    return "n/a" if p != p else ("<0.001" if p < 0.001 else f"{p:.3g}")


def _outcomes(rs: ResultSet, row: EvalRecord) -> dict[int, bool] | None:
    """Test index → correct under ``row``'s attack, from the stored per-example rows, or None.

    Clean and worst-case rows store every example. An attack row stores the examples it attacked;
    the other examples of its evaluation (wrong on clean data, or — in cascade mode — fooled by an
    earlier attack) count as not robust. The outcomes must reproduce the row's accuracy."""
    ex = rs.examples(row.id)
    if not ex:
        return None
    got = {int(x["idx"]): not bool(x["success"]) for x in ex}
    if row.row == "attack":
        clean = [
            e
            for e in rs.evaluations
            if e.run_id == row.run_id and e.evaluation == row.evaluation and e.row == "clean"
        ]
        full = {int(x["idx"]): False for x in (rs.examples(clean[0].id) if clean else [])}
        full.update(got)
        got = full
    if len(got) != row.n or abs(sum(got.values()) / max(len(got), 1) - row.robust_acc) > 0.5 / max(row.n, 1):
        return None
    return got


def _compare(
    rs: ResultSet,
    runs_a: Sequence[RunInfo],
    runs_b: Sequence[RunInfo],
    pick_a: Callable[[RunInfo], EvalRecord | None],
    pick_b: Callable[[RunInfo], EvalRecord | None] | None = None,
) -> tuple[Comparison, Cell, Cell] | None:
    """A − B in accuracy for the rows ``pick_a`` / ``pick_b`` choose per run, paired on the same
    test points (runs paired by seed, else in order) when every pair has per-example outcomes
    (:func:`stats.paired`), else from the two cells (:func:`stats.unpaired`). None without data."""
    pick_b = pick_b or pick_a
    a, b = rs.cell(runs_a, pick_a), rs.cell(runs_b, pick_b)
    if a.empty or b.empty:
        return None
    rows_a = [(r.seed, row) for r in runs_a if (row := pick_a(r)) is not None]
    rows_b = [(r.seed, row) for r in runs_b if (row := pick_b(r)) is not None]
    by_seed_b = {s: row for s, row in rows_b}
    pairs = [(ra, by_seed_b[s]) for s, ra in rows_a if s in by_seed_b]
    if not pairs:
        pairs = list(zip([r for _, r in rows_a], [r for _, r in rows_b], strict=False))
    groups: list[tuple[np.ndarray, np.ndarray]] = []
    for ra, rb in pairs:
        oa, ob = _outcomes(rs, ra), _outcomes(rs, rb)
        common = sorted(oa.keys() & ob.keys()) if oa is not None and ob is not None else []
        if not common:
            groups = []
            break
        assert oa is not None and ob is not None
        groups.append((np.array([oa[i] for i in common]), np.array([ob[i] for i in common])))
    if groups:
        return stats.paired(groups), a, b
    return stats.unpaired(a.mean, a.se, b.mean, b.se, sum(a.n), len(a.values)), a, b


def _both(*oks: bool | None) -> bool | None:
    """All parts hold: False if one fails, None if one is undecided, else True."""
    if any(ok is False for ok in oks):
        return False
    if any(ok is None for ok in oks):
        return None
    return True


#: geometry quantities (RU Table 4) differ "clearly" when they differ by more than this fraction
GEOMETRY_MARGIN = 0.1


def _clearly_greater(x: float, y: float) -> bool:
    return x > y * (1 + GEOMETRY_MARGIN) if y >= 0 else x > y * (1 - GEOMETRY_MARGIN)


def _runs(rs: ResultSet, column: str, ds: str) -> list[RunInfo]:
    """The runs of a defense named as the tables name it (:data:`ALIASES`)."""
    return rs.runs_of(column, ds)


def _white(rs: ResultSet, runs: list[RunInfo], eps: float, norm: str = "linf") -> Cell:
    return rs.cell(runs, lambda r: rs.strongest_row(r, eps, norm=norm))


def _vs_white(
    rs: ResultSet, a: list[RunInfo], b: list[RunInfo], eps: float, norm: str = "linf"
) -> tuple[Comparison, Cell, Cell]:
    """A − B under the strongest white-box attack at ``eps`` (both have rows there)."""
    got = _compare(rs, a, b, lambda r: rs.strongest_row(r, eps, norm=norm))
    assert got is not None, "called at a common ε"
    return got


def _vs_clean(rs: ResultSet, a: list[RunInfo], b: list[RunInfo]) -> tuple[Comparison, Cell, Cell] | None:
    return _compare(rs, a, b, rs.clean_row)


def _px(eps: float) -> str:
    """``0.188 (48/255)`` — an ε in pixel units, as a fraction of 255 when it is one."""
    k = eps * 255
    frac = f" ({round(k)}/255)" if abs(k - round(k)) < 1e-6 and 0 < eps < 1 else ""
    return f"{eps:.3g}{frac}"


def _reading(paper: str, eps: Sequence[float], norm: str = "linf") -> str:
    """The paper's reading of ε and the ε compared here."""
    here = ", ".join(_px(e) for e in eps)
    return f"{paper}; compared: {'ℓ2' if norm == 'l2' else 'ℓ∞'} ε = {here} px" if eps else paper


RU_EPS = "pixels of [0, 1] (RU: MNIST 32/255, 48/255; CIFAR 8/255)"
ATENT_EPS = "pixels of [0, 1] (ATENT: MNIST ℓ∞ 0.3, ℓ2 2.0)"
KANAI_EPS = "pixels of [0, 1] (Kanai: CIFAR ℓ∞ 8/255)"
#: Min-Max's MNIST ε = 0.3 is advertorch's, on inputs normalized by (x − 0.1307) / 0.3081: in pixels
#: that is 0.3 · 0.3081 ≈ 0.092 (their code; the paper does not say)
MINMAX_NORMALIZED_EPS = 0.3 * 0.3081
MINMAX_EPS = (
    "normalized 0.3 ≈ 0.092 px; pixel 0.3 shown (Min-Max: advertorch ε on inputs (x − 0.1307) / 0.3081;"
    " the normalized reading decides)"
)


def _clean(rs: ResultSet, runs: list[RunInfo]) -> Cell:
    return rs.cell(runs, rs.clean_row)


def _common_eps(rs: ResultSet, groups: Sequence[list[RunInfo]], norm: str = "linf") -> list[float]:
    common: set[float] | None = None
    for g in groups:
        e = set(rs.eps_values(g, norm=norm))
        common = e if common is None else common & e
    return sorted(common or set())


def _audit_check(
    rs: ResultSet, runs: list[RunInfo], name: str
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Statuses and evidence of audit check ``name`` over ``runs`` (+ analysis sources). A random
    search that had no PGD-robust point to search is no evidence and is left out."""
    statuses, evidence, sources = [], [], []
    for r in runs:
        got = rs.analysis(r.id, "audit")
        if got is None:
            continue
        for c in got[1].get("checks", []):
            if name == "random-search" and (c.get("evidence") or {}).get("searched") == 0:
                continue
            if c.get("name") == name:
                statuses.append(str(c.get("status")))
                evidence.append(dict(c.get("evidence") or {}))
                sources.append(f"analysis:{got[0]}")
    return statuses, evidence, sources


CHANCE_MARGIN = 0.05


# ------------------------------------------------------------------------------------ claims
@_claim("C1", "EntM / LS alone are robust only at small ε", "RU §5.2.1, Tables 1, 3, 9")
def c1(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    normal = _runs(rs, "Normal", ds)
    for name in ("EntM", "LS"):
        runs = _runs(rs, name, ds)
        if not runs or not normal:
            ev.part(name, None, "not run" if not runs else "no Normal model to compare with", optional=True)
            continue
        eps = _common_eps(rs, [runs, normal])
        if len(eps) < 2:
            ev.part(name, None, "needs white-box results at two or more ε", optional=True)
            continue
        small, large = eps[0], eps[-1]
        ev.eps_reading = _reading(RU_EPS, [small, large])
        c_s, a_s, n_s = _vs_white(rs, runs, normal, small)
        c_l, a_l, n_l = _vs_white(rs, runs, normal, large)
        ev.use(a_s, a_l, n_s, n_l)
        gain_s, gain_l = c_s.diff, c_l.diff
        ev.numbers[name] = {
            "eps_small": small, "eps_large": large, "acc_small": a_s.mean, "acc_large": a_l.mean,
            "normal_small": n_s.mean, "normal_large": n_l.mean,
        }  # fmt: skip
        # robust only at small ε: at the largest ε it is no better than Normal (or near zero), and
        # whatever it gains over Normal is larger at the small ε than at the large one.
        vanishes = True if a_l.mean <= CHANCE_MARGIN else stats.at_most(c_l, CHANCE_MARGIN)
        better_small = stats.beats(c_s)
        ev.compared(f"{name} − Normal, ε={small:.3g}", c_s, better_small)
        ev.compared(f"{name} − Normal, ε={large:.3g}", c_l, vanishes)
        ok = _both(vanishes, better_small, gain_s >= gain_l)
        ev.part(
            name,
            ok,
            f"ε={small:.3g}: {_pct(a_s.mean)} vs Normal {_pct(n_s.mean)} ({_diff_text(c_s)}); "
            f"ε={large:.3g}: {_pct(a_l.mean)} vs Normal {_pct(n_l.mean)} ({_diff_text(c_l)})",
            optional=True,
        )
    return ev.result()


@_claim(
    "C2",
    "EntM / LS alone mask gradients (white-box PGD10 > transfer; random search finds misses)",
    "RU §5.2.1, Tables 1, 3, 10",
)
def c2(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    for name in ("EntM", "LS"):
        runs = _runs(rs, name, ds)
        if not runs:
            ev.part(name, None, "not run", optional=True)
            continue
        found: list[str] = []
        masked = False
        have = False
        labels = sorted(
            {
                e.attack
                for r in runs
                for e in rs.rows(r.id, transfer=True)
                if e.row == "attack" and e.attack.startswith("PGD10")
            }
        )
        for lab in labels:
            got = _compare(
                rs,
                runs,
                runs,
                functools.partial(rs.labelled_row, label=lab),
                functools.partial(rs.labelled_row, label=lab, transfer=True),
            )
            if got is None:
                continue
            c, w, b = got
            have = True
            ev.use(w, b)
            ev.numbers[f"{name} {lab}"] = {"white": w.mean, "black": b.mean}
            if stats.beats(c):
                masked = True
            ev.compared(f"{name} {lab} white-box − black-box", c, stats.beats(c))
            found.append(f"{lab} white {_pct(w.mean)} vs black {_pct(b.mean)} ({_diff_text(c)})")
            ev.eps_reading = _reading(RU_EPS, sorted({*w.eps, *b.eps}))
        for check in ("transfer-gap", "random-search"):
            st, evid, src = _audit_check(rs, runs, check)
            if st:
                have = True
                ev.sources.extend(s for s in src if s not in ev.sources)
                ev.numbers[f"{name} audit {check}"] = {"status": st, "evidence": evid}
                if any(s in ("warn", "fail") for s in st):
                    masked = True
                extra = ""
                if check == "random-search" and evid:
                    e0 = evid[0]
                    extra = (
                        " " + ", ".join(f"{k}={v}" for k, v in e0.items() if isinstance(v, int | float))[:80]
                    )
                found.append(f"audit {check} {'/'.join(st)}{extra}")
        if not have:
            ev.part(name, None, "needs white-box and transfer PGD10 rows or an audit", optional=True)
            continue
        ev.part(name, masked, "; ".join(found), optional=True)
    return ev.result()


@_claim("C3", "PAT-EntM / PAT-LS beat PAT on clean data and at large ε", "RU §5.2.2, Tables 1-3")
def c3(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    pat = _runs(rs, "PAT", ds)
    for name in ("PAT-EntM", "PAT-LS"):
        runs = _runs(rs, name, ds)
        if not runs or not pat:
            ev.part(name, None, "not run" if not runs else "PAT not run", optional=True)
            continue
        clean = _vs_clean(rs, runs, pat)
        eps = _common_eps(rs, [runs, pat])
        if clean is None or not eps:
            ev.part(name, None, "needs clean and white-box results of both", optional=True)
            continue
        large = eps[-1]
        ev.eps_reading = _reading(RU_EPS, [large])
        k_c, c_x, c_p = clean
        k_r, r_x, r_p = _vs_white(rs, runs, pat, large)
        ev.use(c_x, c_p, r_x, r_p)
        ev.numbers[name] = {
            "clean": c_x.mean,
            "pat_clean": c_p.mean,
            "eps": large,
            "robust": r_x.mean,
            "pat_robust": r_p.mean,
        }
        ev.compared(f"{name} − PAT, ε={large:.3g}", k_r, stats.beats(k_r))
        ev.compared(f"{name} − PAT, clean", k_c, stats.beats(k_c))
        ok = _both(stats.beats(k_c), stats.beats(k_r))
        ev.part(
            name,
            ok,
            f"clean {_pct(c_x.mean)} vs PAT {_pct(c_p.mean)} ({_diff_text(k_c)}); "
            f"ε={large:.3g} {_pct(r_x.mean)} vs {_pct(r_p.mean)} ({_diff_text(k_r)})",
            optional=True,
        )
    return ev.result()


@_claim("C4", "PAT-EntM ≥ TRADES", "RU §5.2.2, Tables 1-3")
def c4(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    x = _runs(rs, "PAT-EntM", ds)
    t = _runs(rs, "TRADES", ds)
    eps = _common_eps(rs, [x, t]) if x and t else []
    if not eps:
        ev.part("robust accuracy", None, "needs white-box results of PAT-EntM and TRADES at a common ε")
        return ev.result()
    texts, oks = [], []
    ev.eps_reading = _reading(RU_EPS, eps)
    for e in reversed(eps):  # the largest ε first: the effect shown
        c, a, b = _vs_white(rs, x, t, e)
        ev.use(a, b)
        ev.numbers[f"eps={e:.4g}"] = {"pat_entm": a.mean, "trades": b.mean}
        ok = stats.at_least(c, NONINFERIORITY_MARGIN)
        ev.compared(f"PAT-EntM − TRADES, ε={e:.3g}", c, ok)
        oks.append(ok)
        texts.append(f"ε={e:.3g}: {_pct(a.mean)} vs {_pct(b.mean)} ({_diff_text(c)})")
    ev.part(
        "strongest white-box attack",
        _both(*oks),
        "; ".join(texts) + " (must hold at every ε; ≥ allows 3 pp below)",
    )
    return ev.result()


@_claim(
    "C5", "EntM shrinks ‖∇ₓf‖ and raises the normalized margin; EntM alone has high Q_f", "RU §6, Table 4"
)
def c5(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    ev.eps_reading = "no ε: clean-input geometry (RU Table 4; adversarial accuracy at the analysis' adv_eps)"

    def geo(column: str, key: str) -> Cell:
        c = rs.analysis_cell(_runs(rs, column, ds), "geometry", lambda a: a[key])
        ev.use(c)
        return c

    pairs = (
        ("EntM", "Normal", "EntM vs Normal"),
        ("PAT-EntM", "PAT", "PAT-EntM vs PAT"),
    )
    for x, base, name in pairs:
        jx, jb = geo(x, "jacobian_norm"), geo(base, "jacobian_norm")
        nx, nb = geo(x, "normalized_margin"), geo(base, "normalized_margin")
        if jx.empty or jb.empty or nx.empty or nb.empty:
            ev.part(name, None, "needs the geometry analysis of both", optional=name.startswith("PAT"))
            continue
        ev.numbers[name] = {"jacobian": [jx.mean, jb.mean], "normalized_margin": [nx.mean, nb.mean]}
        ev.part(
            name,
            _clearly_greater(jb.mean, jx.mean) and _clearly_greater(nx.mean, nb.mean),
            f"‖∇f‖ {jx.mean:.3g} vs {jb.mean:.3g}, M/‖∇f‖ {nx.mean:.3g} vs {nb.mean:.3g}",
            optional=name.startswith("PAT"),
        )
    qe, qn = geo("EntM", "nonlinearity"), geo("Normal", "nonlinearity")
    if qe.empty or qn.empty:
        ev.part("Q_f", None, "needs the geometry analysis of EntM and Normal")
    else:
        qp = geo("PAT-EntM", "nonlinearity")
        ok = _clearly_greater(qe.mean, qn.mean) and (qp.empty or _clearly_greater(qe.mean, qp.mean))
        ev.numbers["Q_f"] = {"entm": qe.mean, "normal": qn.mean, "pat_entm": None if qp.empty else qp.mean}
        ev.part(
            "Q_f",
            ok,
            f"EntM {qe.mean:.3g} vs Normal {qn.mean:.3g}" + ("" if qp.empty else f", PAT-EntM {qp.mean:.3g}"),
        )
    return ev.result()


@_claim(
    "C6",
    "PAT-EntM accuracy falls to 0 as ε grows and random search finds nothing",
    "RU §5.2.2, Fig. 1, App. C.1",
)
def c6(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    ev.eps_reading = RU_EPS + "; the audit's ε curve spans multiples of its ε"
    runs = _runs(rs, "PAT-EntM", ds)
    if not runs:
        ev.part("PAT-EntM", None, "not run")
        return ev.result()
    for check, what in (("eps-curve", "accuracy vs ε"), ("random-search", "random search")):
        st, evid, src = _audit_check(rs, runs, check)
        if not st:
            ev.part(what, None, "needs the audit")
            continue
        ev.sources.extend(s for s in src if s not in ev.sources)
        ev.numbers[check] = {"status": st, "evidence": evid}
        nums = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in evid[0].items()
            if isinstance(v, int | float)
        )
        ev.part(what, all(s == "pass" for s in st), f"audit {'/'.join(st)} ({nums})")
    return ev.result()


@_claim("C7", "ℓ∞-ATENT ≈ PGD-AT / TRADES; ℓ2-ATENT is the best under ℓ2 attacks", "ATENT Tables 1-3")
def c7(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    at = _runs(rs, "ℓ∞ ATENT", ds)
    others = [("PGD-AT", rs.runs_for((*ALIASES["ℓ∞ PGD-AT"], *ALIASES["PAT"]), ds))]  # PAT: RU's PGD-AT
    others.append(("TRADES", _runs(rs, "TRADES", ds)))
    others = [(n, r) for n, r in others if r]
    eps = _common_eps(rs, [at, *[r for _, r in others]]) if at and others else []
    if not eps:
        ev.part(
            "ℓ∞", None, "needs white-box results of ℓ∞-ATENT and PGD-AT / TRADES at a common ε", optional=True
        )
    else:
        e = eps[-1]
        ev.eps_reading = _reading(ATENT_EPS, [e])
        best_name, best_runs = max(others, key=lambda p: _white(rs, p[1], e).mean)
        c, a, best = _vs_white(rs, at, best_runs, e)
        ev.use(a, best)
        ev.numbers["linf"] = {"eps": e, "atent": a.mean, best_name: best.mean}
        ok = stats.at_least(c, NONINFERIORITY_MARGIN)
        ev.compared(f"ℓ∞-ATENT − {best_name}, ε={e:.3g}", c, ok)
        ev.part(
            "ℓ∞",
            ok,
            f"ε={e:.3g}: ℓ∞-ATENT {_pct(a.mean)} vs {best_name} {_pct(best.mean)} "
            f"({_diff_text(c)}; ≈ means at most 3 pp below)",
            optional=True,
        )
    l2 = _runs(rs, "ℓ2 ATENT", ds)
    if not l2:
        ev.part("ℓ2", None, "ℓ2-ATENT not run", optional=True)
    else:
        rivals = [lab for lab in rs.labels(ds) if lab not in {r.label for r in l2}]
        groups = [rs.runs_for(lab, ds) for lab in rivals]
        groups = [g for g in groups if rs.eps_values(g, norm="l2")]
        eps2 = _common_eps(rs, [l2, *groups], norm="l2") if groups else []
        if not eps2:
            ev.part("ℓ2", None, "needs ℓ2 white-box results of ℓ2-ATENT and other defenses", optional=True)
        else:
            e = eps2[-1]
            if not ev.eps_reading:
                ev.eps_reading = _reading(ATENT_EPS, [e], "l2")
            scores = {g[0].label: _white(rs, g, e, "l2") for g in groups}
            for sc in scores.values():
                ev.use(sc)
            top_name = max(scores, key=lambda k: scores[k].mean)
            top_runs = next(g for g in groups if g[0].label == top_name)
            c2, mine, top = _vs_white(rs, l2, top_runs, e, "l2")
            ev.use(mine)
            ev.numbers["l2"] = {"eps": e, "atent": mine.mean, **{k: v.mean for k, v in scores.items()}}
            ok = stats.at_least(c2, NONINFERIORITY_MARGIN)
            ev.compared(f"ℓ2-ATENT − {top_name}, ℓ2 ε={e:.3g}", c2, ok)
            ev.part(
                "ℓ2",
                ok,
                f"ε={e:.3g}: ℓ2-ATENT {_pct(mine.mean)}, best other {top_name} {_pct(top.mean)} "
                f"({_diff_text(c2)})",
                optional=True,
            )
    return ev.result()


@_claim("C8", "Entropy-SGD alone gives no robustness", "ATENT §3, Tables 1-2 (row 2)")
def c8(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    es = _runs(rs, "Entropy SGD", ds)
    sgd = _runs(rs, "SGD", ds)
    eps = _common_eps(rs, [es, sgd]) if es and sgd else []
    if not eps:
        ev.part(
            "robust accuracy", None, "needs white-box results of Entropy-SGD and SGD/Normal at a common ε"
        )
        return ev.result()
    e = eps[-1]
    ev.eps_reading = _reading(ATENT_EPS, [e])
    c, a, b = _vs_white(rs, es, sgd, e)
    ev.use(a, b)
    ev.numbers.update({"eps": e, "entropy_sgd": a.mean, "sgd": b.mean})
    ok = True if a.mean <= 0.1 else stats.at_most(c, CHANCE_MARGIN)
    ev.compared(f"Entropy-SGD − SGD, ε={e:.3g}", c, ok)
    ev.part(
        "robust accuracy",
        ok,
        f"ε={e:.3g}: Entropy-SGD {_pct(a.mean)} vs SGD {_pct(b.mean)} ({_diff_text(c)}; "
        "no robustness: at most 5 pp above, or at most 10 %)",
    )
    return ev.result()


def _pgd(rs: ResultSet, eps: float) -> Callable[[RunInfo], EvalRecord | None]:
    """Picks a run's PGD row at ``eps``: the 'minmax' suite's PGD row, else the lowest PGD-family row."""

    def pick(r: RunInfo) -> EvalRecord | None:
        exact = [
            e
            for e in rs.rows(r.id)
            if e.attack == "PGD" and "minmax" in e.suite_name and abs(e.eps - eps) < 1e-6
        ]
        if exact:
            return max(exact, key=lambda e: (e.n, e.id))
        rows = [
            e
            for e in rs.rows(r.id)
            if e.row == "attack"
            and abs(e.eps - eps) < 1e-6
            and (e.attack_name == "pgd" or e.attack_name.startswith("PGD"))
        ]
        return min(rows, key=lambda e: (e.robust_acc, e.id)) if rows else None

    return pick


@_claim(
    "C9",
    "Min-Max (no AT) beats Std under PGD and lowers fuzziness; L1 / −L2 alone do not",
    "Min-Max §5.2-5.3, Tables 1, 3",
)
def c9(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    mm = _runs(rs, "Min-Max", ds)
    std = _runs(rs, "Std.", ds)
    if not mm or not std:
        ev.part("Min-Max vs Std", None, "Min-Max and Std (or Normal) must both be run")
        return ev.result()
    eps_all = _common_eps(rs, [mm, std])
    # the paper's own reading (normalized-space ε = 0.3 ≈ 0.092 px) decides; pixel ε = 0.3 is shown
    normalized = next((e for e in eps_all if abs(e - MINMAX_NORMALIZED_EPS) < 1e-3), None)
    pixel = next((e for e in eps_all if abs(e - 0.3) < 1e-6), None)
    decide = next((e for e in (normalized, pixel) if e is not None), max(eps_all, default=None))
    shown = [e for e in (normalized, pixel) if e is not None] or ([] if decide is None else [decide])
    ev.eps_reading = _reading(MINMAX_EPS, shown)
    if decide is None:
        ev.part("PGD", None, "needs white-box results at a common ε")
    else:
        got = _compare(rs, mm, std, _pgd(rs, decide))
        if got is None:
            ev.part("PGD", None, f"needs PGD rows at ε={decide:.3g}")
        else:
            c, a, b = got
            ev.use(a, b)
            ev.numbers["pgd"] = {"eps": decide, "min_max": a.mean, "std": b.mean}
            ev.compared(f"Min-Max − Std, PGD ε={decide:.3g}", c, stats.beats(c))
            ev.part(
                f"PGD (ε={decide:.3g})",
                stats.beats(c),
                f"Min-Max {_pct(a.mean)} vs Std {_pct(b.mean)} ({_diff_text(c)})",
            )
            if decide != pixel and pixel is not None and (g2 := _compare(rs, mm, std, _pgd(rs, pixel))):
                c2, a2, b2 = g2
                ev.use(a2, b2)
                ev.numbers["pgd_pixel_eps"] = {"eps": pixel, "min_max": a2.mean, "std": b2.mean}
                ev.part(
                    "PGD at pixel ε=0.3 (shown, not judged)",
                    None,
                    f"Min-Max {_pct(a2.mean)} vs Std {_pct(b2.mean)} ({_diff_text(c2)})",
                    info=True,
                )
        for name, column in (("Std+L1", "Std.+L1"), ("Std+L2", "Std.+L2")):
            abl = _runs(rs, column, ds)
            g = _compare(rs, mm, abl, _pgd(rs, decide)) if abl and got is not None else None
            if g is None:
                ev.part(f"{name} below Min-Max", None, "not run", optional=True)
                continue
            k, a3, c3 = g
            ev.use(c3)
            ev.numbers[name] = c3.mean
            ev.compared(f"Min-Max − {name}, PGD ε={decide:.3g}", k, stats.beats(k))
            ev.part(
                f"{name} below Min-Max",
                stats.beats(k),
                f"{name} {_pct(c3.mean)} vs Min-Max {_pct(a3.mean)} ({_diff_text(k)})",
                optional=True,
            )
    fa = rs.analysis_cell(mm, "fuzziness", lambda r: r["first"])
    fb = rs.analysis_cell(std, "fuzziness", lambda r: r["first"])
    if fa.empty or fb.empty:
        ev.part("fuzziness", None, "needs the fuzziness analysis of Min-Max and Std")
    else:
        ev.use(fa, fb)
        ev.numbers["fuzziness"] = {"min_max": fa.mean, "std": fb.mean}
        ev.part(
            "fuzziness",
            _clearly_greater(fb.mean, fa.mean),
            f"first conv layer {fa.mean:.4f} vs {fb.mean:.4f}",
        )
    return ev.result()


@_claim("C10", "AT + EnSGD > AT and AWP + EnSGD ≥ AWP", "Kanai §5.3, Table 1")
def c10(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    for name, x_names, b_names, strict in (
        ("AT+EnSGD vs AT", "AT+EnSGD", "AT", True),
        ("AWP+EnSGD vs AWP", "AWP+EnSGD", "AWP", False),
    ):
        x, b = _runs(rs, x_names, ds), _runs(rs, b_names, ds)
        eps = _common_eps(rs, [x, b]) if x and b else []
        if not eps:
            ev.part(
                name,
                None,
                "not run" if not (x and b) else "needs white-box results at a common ε",
                optional=True,
            )
            continue
        e = eps[-1]
        ev.eps_reading = _reading(KANAI_EPS, [e])
        k, a, c = _vs_white(rs, x, b, e)
        ev.use(a, c)
        ev.numbers[name] = {"eps": e, "with_ensgd": a.mean, "without": c.mean}
        ok = stats.beats(k) if strict else stats.at_least(k, NONINFERIORITY_MARGIN)
        ev.compared(f"{name}, ε={e:.3g}", k, ok)
        ev.part(name, ok, f"ε={e:.3g}: {_pct(a.mean)} vs {_pct(c.mean)} ({_diff_text(k)})", optional=True)
    return ev.result()


#: a gradient jump counts as a kink when it exceeds this multiple of the largest jump elsewhere
KINK_RATIO = 3.0


@_claim(
    "C11",
    "Toy: ℓ2 adversarial loss smooth except at θ = 0, ℓ∞ not at θᵢ = 0, EnSGD-smoothed loss smooth",
    "Kanai §5.1, Fig. 2, App. C",
)
def c11(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    ev.eps_reading = "input-space ε of the 2-D toy (Kanai §5.1: ℓ2 and ℓ∞ balls)"
    got = rs.study_analysis("toy")
    sm = (got[1].get("smoothness") if got else None) or {}
    if not sm:
        ev.part("toy", None, "the 'toy' analysis was not run")
        return ev.result()
    assert got is not None
    ev.sources.append(f"analysis:{got[0]}")

    def kink(name: str, where: str) -> tuple[bool | None, float]:
        s = sm.get(name)
        if not s:
            return None, math.nan
        base = max(s["max_jump_elsewhere"], 1e-12)
        ratio = s[where] / base
        return ratio > KINK_RATIO, ratio

    l2_origin, r1 = kink("linear-l2", "max_jump_origin")
    l2_axes, r2 = kink("linear-l2", "max_jump_axes_off_origin")
    li_axes, r3 = kink("linear-linf", "max_jump_axes_off_origin")
    ev.numbers = {"smoothness": sm, "kink_ratio": KINK_RATIO}
    ev.part(
        "ℓ2",
        None if l2_origin is None else (l2_origin and not l2_axes),
        f"gradient jump at θ=0 {r1:.1f}× elsewhere, on the axes {r2:.1f}×",
    )
    ev.part("ℓ∞", li_axes, f"gradient jump on the axes θᵢ=0 {r3:.1f}× elsewhere")
    smooth = []
    for name in ("ensgd-l2", "ensgd-linf"):
        k_o, ro = kink(name, "max_jump_origin")
        k_a, ra = kink(name, "max_jump_axes")
        if k_o is None:
            continue
        smooth.append((name, not (k_o or k_a), max(ro, ra)))
    if not smooth:
        ev.part("EnSGD", None, "no EnSGD-smoothed surfaces")
    else:
        ev.part(
            "EnSGD",
            all(ok for _, ok, _ in smooth),
            ", ".join(f"{n} largest jump {r:.1f}× elsewhere" for n, _, r in smooth),
        )
    return ev.result()


# ------------------------------------------------------------------------------------ driver
#: a model whose clean accuracy is below chance + this margin is not trained enough to judge a claim
TRAINED_MARGIN = 0.3


def _clean_accuracy(rs: ResultSet, run: RunInfo) -> float | None:
    row = rs.clean_row(run)
    if row is not None:
        return float(row.robust_acc)
    for kind in ("audit", "geometry"):
        got = rs.analysis(run.id, kind)
        if got is not None and isinstance(got[1].get("clean_accuracy"), int | float):
            return float(got[1]["clean_accuracy"])
    return None


def _chance(dataset: str | None) -> float:
    try:
        from entrobust.data.info import DATASET_INFO

        return 1.0 / DATASET_INFO[str(dataset)].num_classes
    except (KeyError, ImportError, ZeroDivisionError):
        return 0.1


def untrained_runs(rs: ResultSet) -> dict[str, float]:
    """Run id → clean accuracy of runs no better than chance + :data:`TRAINED_MARGIN` (e.g. the
    one-epoch ``tiny`` demo): comparing their robust accuracies would judge noise."""
    out = {}
    for r in rs.runs:
        acc = _clean_accuracy(rs, r)
        if acc is not None and acc < _chance(r.dataset) + TRAINED_MARGIN:
            out[r.id] = acc
    return out


def check_claims(rs: ResultSet, ids: Sequence[str] = ()) -> list[ClaimResult]:
    """Every claim (or ``ids``) on every dataset of ``rs``; C11 (dataset-free) once.

    Runs that are not trained enough (:func:`untrained_runs`) are left out of the verdict, so claims
    about them come out *inconclusive*, with the excluded runs named — and with the effect those
    runs show (computed on all runs) so that the numbers are still there to read."""
    bad = untrained_runs(rs)
    usable = rs
    if bad:
        usable = ResultSet(
            runs=[r for r in rs.runs if r.id not in bad],
            evaluations=[e for e in rs.evaluations if e.run_id not in bad],
            analyses={k: v for k, v in rs.analyses.items() if k[0] not in bad},
            epochs={k: v for k, v in rs.epochs.items() if k not in bad},
            study=list(rs.study),
            experiment=rs.experiment,
            example_source=rs.examples,
        )
    datasets = rs.datasets() or ["mnist5k"]
    out: list[ClaimResult] = []
    for cid in ids or CLAIMS.names():
        cl = CLAIMS.get(cid)
        for ds in datasets[:1] if cid == "C11" else datasets:
            res = cl.fn(usable, ds, cl)
            if cid == "C11":
                res.dataset = None
            elif bad and res.verdict == INCONCLUSIVE:
                names = ", ".join(
                    f"{r.label} {100 * bad[r.id]:.0f}%" for r in rs.runs if r.id in bad and r.dataset == ds
                )
                res.detail += f" [left out as not trained enough (clean accuracy): {names}]"
                res.numbers["untrained"] = {r.label: bad[r.id] for r in rs.runs if r.id in bad}
                full = cl.fn(rs, ds, cl)
                if res.effect is None and full.effect is not None:
                    res.effect = {**full.effect, "untrained": True}
                    res.eps_reading = res.eps_reading or full.eps_reading
            out.append(res)
    return out


def claim_effect_cells(r: ClaimResult) -> tuple[str, str, str]:
    """(effect [95 % CI], p, n) of a result, "-" where it has none."""
    e = r.effect
    if not e:
        return "-", "-", "-"
    mark = " (untrained)" if e.get("untrained") else ""
    eff = f"{100 * e['diff']:+.1f} pp [{100 * e['low']:+.1f}, {100 * e['high']:+.1f}]{mark}"
    return eff, _p(float(e["p"])), str(e["n"])


def format_claims(results: Sequence[ClaimResult], *, width: int = 116) -> str:
    """A plain-text table — claim, the paper's ε reading, effect [95 % CI] (A − B in percentage
    points, the comparison named below), p, n (paired test points), verdict — with the
    comparison and the numbers on the next lines."""
    import textwrap

    lines = [
        f"{'claim':<5} {'paper ε reading':<42} {'effect [95% CI]':<36} {'p':<7} {'n':<6} verdict",
        "-" * width,
    ]
    for r in results:
        ds = f" [{r.dataset}]" if r.dataset and len({x.dataset for x in results if x.dataset}) > 1 else ""
        eff, p, n = claim_effect_cells(r)
        reading = r.eps_reading.split(" (")[0] if r.eps_reading else "-"
        lines.append(f"{r.id:<5} {textwrap.shorten(reading, 42):<42} {eff:<36} {p:<7} {n:<6} {r.verdict}")
        lines.append(f"{'':<6}{r.claim}{ds} ({r.source})")
        if r.effect:
            lines.append(f"{'':<6}effect: {r.effect['what']} ({r.effect['method']})")
        if r.eps_reading:
            for chunk in textwrap.wrap("ε: " + r.eps_reading, width - 6):
                lines.append(f"{'':<6}{chunk}")
        for chunk in textwrap.wrap(r.detail, width - 8):
            lines.append(f"{'':<8}{chunk}")
    counts = {v: sum(1 for r in results if r.verdict == v) for v in VERDICTS}
    lines.append("-" * width)
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)
