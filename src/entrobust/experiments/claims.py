"""The papers' qualitative claims C1–C11, checked on the user's own stored results (SPEC §6).

Each claim is a function ``ResultSet → ClaimResult`` with a verdict — ``reproduced``,
``not reproduced`` or ``not enough data`` — the numbers behind it, the paper table it comes
from, and the ids of the stored rows it read. Accuracy comparisons use the **strongest attack the
study ran** at an ε (the lowest robust accuracy over every white-box row there, worst-case rows
included), and call a difference *within noise* when it is smaller than two binomial standard
errors: a "beats" part within noise gets no verdict (more examples or seeds are needed), a "≥"
part within noise holds. Geometry quantities (RU Table 4) and fuzziness must differ by more than
10 %. A claim with several parts is reproduced only when every required part has data and holds
(alternatives such as "EntM / LS" need one of them); it is not reproduced as soon as one part with
data fails; otherwise there is not enough data.

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from entrobust.registry import Registry
from entrobust.report.results import Cell, ResultSet, RunInfo

__all__ = ["CLAIMS", "VERDICTS", "Claim", "ClaimResult", "check_claims", "format_claims"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_ENOUGH = "not enough data"
VERDICTS: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED, NOT_ENOUGH)


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
        self.numbers: dict[str, Any] = {}
        self.sources: list[str] = []

    def use(self, *cells: Cell) -> None:
        for c in cells:
            for s in c.sources:
                if s not in self.sources:
                    self.sources.append(s)

    def part(self, name: str, ok: bool | None, text: str, *, optional: bool = False) -> None:
        """Add a part; an ``optional`` part without data (``ok`` None) does not block the verdict
        (e.g. "EntM / LS": either defense is enough), a required one does."""
        self.parts.append((name, ok, text))
        if optional:
            self.optional.add(name)

    def result(self) -> ClaimResult:
        judged = [(n, ok) for n, ok, _ in self.parts if ok is not None]
        missing_required = any(ok is None and n not in self.optional for n, ok, _ in self.parts)
        if not judged:
            verdict = NOT_ENOUGH
        elif any(ok is False for _, ok in judged):
            verdict = NOT_REPRODUCED
        elif missing_required:
            verdict = NOT_ENOUGH
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
        )


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


def _diff_text(a: Cell, b: Cell) -> str:
    d = a.mean - b.mean
    se = math.sqrt(a.se**2 + b.se**2) if a.se == a.se and b.se == b.se else math.nan
    noise = " (within noise)" if se == se and abs(d) < 2 * se else ""
    return f"{100 * d:+.1f} pp{noise}"


def _within_noise(a: Cell, b: Cell) -> bool:
    se = math.sqrt(a.se**2 + b.se**2)
    return abs(a.mean - b.mean) < 2 * se


def _greater(a: Cell, b: Cell) -> bool | None:
    """``a`` beats ``b``: True / False when the difference exceeds two standard errors, None (no
    verdict: more examples or seeds needed) when it is within noise."""
    if _within_noise(a, b):
        return None
    return a.mean > b.mean


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


def _runs(rs: ResultSet, names: Sequence[str], ds: str) -> list[RunInfo]:
    return rs.runs_for(names, ds)


def _white(rs: ResultSet, runs: list[RunInfo], eps: float, norm: str = "linf") -> Cell:
    return rs.cell(runs, lambda r: rs.strongest_row(r, eps, norm=norm))


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


NORMAL = ("Normal", "ru/normal", "Std", "SGD", "atent/sgd", "minmax/std")
CHANCE_MARGIN = 0.05


# ------------------------------------------------------------------------------------ claims
@_claim("C1", "EntM / LS alone are robust only at small ε", "RU §5.2.1, Tables 1, 3, 9")
def c1(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    normal = _runs(rs, NORMAL, ds)
    for name in ("EntM", "LS"):
        runs = _runs(rs, (name, f"ru/{name.lower()}"), ds)
        if not runs or not normal:
            ev.part(name, None, "not run" if not runs else "no Normal model to compare with", optional=True)
            continue
        eps = _common_eps(rs, [runs, normal])
        if len(eps) < 2:
            ev.part(name, None, "needs white-box results at two or more ε", optional=True)
            continue
        small, large = eps[0], eps[-1]
        a_s, a_l = _white(rs, runs, small), _white(rs, runs, large)
        n_s, n_l = _white(rs, normal, small), _white(rs, normal, large)
        ev.use(a_s, a_l, n_s, n_l)
        gain_s, gain_l = a_s.mean - n_s.mean, a_l.mean - n_l.mean
        ev.numbers[name] = {
            "eps_small": small, "eps_large": large, "acc_small": a_s.mean, "acc_large": a_l.mean,
            "normal_small": n_s.mean, "normal_large": n_l.mean,
        }  # fmt: skip
        # robust only at small ε: at the largest ε it is no better than Normal (or near zero), and
        # whatever it gains over Normal is larger at the small ε than at the large one.
        vanishes = a_l.mean <= max(n_l.mean + CHANCE_MARGIN, CHANCE_MARGIN)
        ok = _both(vanishes, _greater(a_s, n_s), gain_s >= gain_l)
        ev.part(
            name,
            ok,
            f"ε={small:.3g}: {_pct(a_s.mean)} vs Normal {_pct(n_s.mean)} ({_diff_text(a_s, n_s)}); "
            f"ε={large:.3g}: {_pct(a_l.mean)} vs Normal {_pct(n_l.mean)} ({_diff_text(a_l, n_l)})",
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
        runs = _runs(rs, (name, f"ru/{name.lower()}"), ds)
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
                if e.row_kind == "attack" and e.attack.startswith("PGD10")
            }
        )
        for lab in labels:
            w = rs.cell(runs, lambda r, lab=lab: rs.labelled_row(r, lab))
            b = rs.cell(runs, lambda r, lab=lab: rs.labelled_row(r, lab, transfer=True))
            if w.empty or b.empty:
                continue
            have = True
            ev.use(w, b)
            gap = w.mean - b.mean
            ev.numbers[f"{name} {lab}"] = {"white": w.mean, "black": b.mean}
            if gap > 0 and not _within_noise(w, b):
                masked = True
            found.append(f"{lab} white {_pct(w.mean)} vs black {_pct(b.mean)}")
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
    pat = _runs(rs, ("PAT", "ru/pat"), ds)
    for name in ("PAT-EntM", "PAT-LS"):
        runs = _runs(rs, (name, f"ru/{name.lower()}"), ds)
        if not runs or not pat:
            ev.part(name, None, "not run" if not runs else "PAT not run", optional=True)
            continue
        c_x, c_p = _clean(rs, runs), _clean(rs, pat)
        eps = _common_eps(rs, [runs, pat])
        if c_x.empty or c_p.empty or not eps:
            ev.part(name, None, "needs clean and white-box results of both", optional=True)
            continue
        large = eps[-1]
        r_x, r_p = _white(rs, runs, large), _white(rs, pat, large)
        ev.use(c_x, c_p, r_x, r_p)
        ev.numbers[name] = {
            "clean": c_x.mean,
            "pat_clean": c_p.mean,
            "eps": large,
            "robust": r_x.mean,
            "pat_robust": r_p.mean,
        }
        ok = _both(_greater(c_x, c_p), _greater(r_x, r_p))
        ev.part(
            name,
            ok,
            f"clean {_pct(c_x.mean)} vs PAT {_pct(c_p.mean)} ({_diff_text(c_x, c_p)}); "
            f"ε={large:.3g} {_pct(r_x.mean)} vs {_pct(r_p.mean)} ({_diff_text(r_x, r_p)})",
            optional=True,
        )
    return ev.result()


@_claim("C4", "PAT-EntM ≥ TRADES", "RU §5.2.2, Tables 1-3")
def c4(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    x = _runs(rs, ("PAT-EntM", "ru/pat-entm"), ds)
    t = _runs(rs, ("TRADES", "ru/trades", "atent/trades", "kanai/trades"), ds)
    eps = _common_eps(rs, [x, t]) if x and t else []
    if not eps:
        ev.part("robust accuracy", None, "needs white-box results of PAT-EntM and TRADES at a common ε")
        return ev.result()
    texts, oks = [], []
    for e in eps:
        a, b = _white(rs, x, e), _white(rs, t, e)
        ev.use(a, b)
        ev.numbers[f"eps={e:.4g}"] = {"pat_entm": a.mean, "trades": b.mean}
        oks.append(a.mean >= b.mean or _within_noise(a, b))
        texts.append(f"ε={e:.3g}: {_pct(a.mean)} vs {_pct(b.mean)} ({_diff_text(a, b)})")
    ev.part("strongest white-box attack", all(oks), "; ".join(texts) + " (must hold at every ε)")
    return ev.result()


@_claim(
    "C5", "EntM shrinks ‖∇ₓf‖ and raises the normalized margin; EntM alone has high Q_f", "RU §6, Table 4"
)
def c5(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)

    def geo(names: Sequence[str], key: str) -> Cell:
        c = rs.analysis_cell(_runs(rs, names, ds), "geometry", lambda a: a[key])
        ev.use(c)
        return c

    pairs = (
        (("EntM", "ru/entm"), NORMAL, "EntM vs Normal"),
        (("PAT-EntM", "ru/pat-entm"), ("PAT", "ru/pat"), "PAT-EntM vs PAT"),
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
    qe, qn = geo(("EntM", "ru/entm"), "nonlinearity"), geo(NORMAL, "nonlinearity")
    if qe.empty or qn.empty:
        ev.part("Q_f", None, "needs the geometry analysis of EntM and Normal")
    else:
        qp = geo(("PAT-EntM", "ru/pat-entm"), "nonlinearity")
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
    runs = _runs(rs, ("PAT-EntM", "ru/pat-entm"), ds)
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
    at = _runs(rs, ("ℓ∞-ATENT", "linf-ATENT", "atent/linf-atent"), ds)
    others = [
        (
            "PGD-AT",
            _runs(
                rs,
                ("PGD-AT", "atent/pgd-at", "PGD-AT(E)", "atent/pgd-at-e", "AT", "kanai/at", "PAT", "ru/pat"),
                ds,
            ),
        )
    ]
    others.append(("TRADES", _runs(rs, ("TRADES", "ru/trades", "atent/trades", "kanai/trades"), ds)))
    others = [(n, r) for n, r in others if r]
    eps = _common_eps(rs, [at, *[r for _, r in others]]) if at and others else []
    if not eps:
        ev.part(
            "ℓ∞", None, "needs white-box results of ℓ∞-ATENT and PGD-AT / TRADES at a common ε", optional=True
        )
    else:
        e = eps[-1]
        a = _white(rs, at, e)
        ev.use(a)
        best_name, best = max(((n, _white(rs, r, e)) for n, r in others), key=lambda p: p[1].mean)
        ev.use(best)
        ev.numbers["linf"] = {"eps": e, "atent": a.mean, best_name: best.mean}
        ok = a.mean >= best.mean - 0.03 or _within_noise(a, best)
        ev.part(
            "ℓ∞",
            ok,
            f"ε={e:.3g}: ℓ∞-ATENT {_pct(a.mean)} vs {best_name} {_pct(best.mean)} "
            f"({_diff_text(a, best)}; ≈ means at most 3 pp below)",
            optional=True,
        )
    l2 = _runs(rs, ("ℓ2-ATENT", "l2-ATENT", "atent/l2-atent"), ds)
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
            mine = _white(rs, l2, e, "l2")
            ev.use(mine)
            scores = {g[0].label: _white(rs, g, e, "l2") for g in groups}
            for c in scores.values():
                ev.use(c)
            top_name, top = max(scores.items(), key=lambda p: p[1].mean)
            ev.numbers["l2"] = {"eps": e, "atent": mine.mean, **{k: v.mean for k, v in scores.items()}}
            ok = mine.mean >= top.mean or _within_noise(mine, top)
            ev.part(
                "ℓ2",
                ok,
                f"ε={e:.3g}: ℓ2-ATENT {_pct(mine.mean)}, best other {top_name} {_pct(top.mean)}",
                optional=True,
            )
    return ev.result()


@_claim("C8", "Entropy-SGD alone gives no robustness", "ATENT §3, Tables 1-2 (row 2)")
def c8(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    es = _runs(rs, ("Entropy-SGD", "atent/entropy-sgd"), ds)
    sgd = _runs(rs, NORMAL, ds)
    eps = _common_eps(rs, [es, sgd]) if es and sgd else []
    if not eps:
        ev.part(
            "robust accuracy", None, "needs white-box results of Entropy-SGD and SGD/Normal at a common ε"
        )
        return ev.result()
    e = eps[-1]
    a, b = _white(rs, es, e), _white(rs, sgd, e)
    ev.use(a, b)
    ev.numbers = {"eps": e, "entropy_sgd": a.mean, "sgd": b.mean}
    ok = a.mean <= b.mean + CHANCE_MARGIN or a.mean <= 0.1
    ev.part(
        "robust accuracy",
        ok,
        f"ε={e:.3g}: Entropy-SGD {_pct(a.mean)} vs SGD {_pct(b.mean)} ({_diff_text(a, b)})",
    )
    return ev.result()


def _pgd(rs: ResultSet, runs: list[RunInfo], eps: float) -> Cell:
    """PGD accuracy at ``eps``: the 'minmax' suite's PGD row, else the lowest PGD-family row."""

    def pick(r: RunInfo) -> Any:
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
            if e.row_kind == "attack"
            and abs(e.eps - eps) < 1e-6
            and (e.attack_name == "pgd" or e.attack_name.startswith("PGD"))
        ]
        return min(rows, key=lambda e: (e.robust_acc, e.id)) if rows else None

    return rs.cell(runs, pick)


@_claim(
    "C9",
    "Min-Max (no AT) beats Std under PGD and lowers fuzziness; L1 / −L2 alone do not",
    "Min-Max §5.2-5.3, Tables 1, 3",
)
def c9(rs: ResultSet, ds: str, cl: Claim) -> ClaimResult:
    ev = _Evidence(cl, ds)
    mm = _runs(rs, ("Min-Max", "minmax/min-max"), ds)
    std = _runs(rs, ("Std", "minmax/std", *NORMAL), ds)
    if not mm or not std:
        ev.part("Min-Max vs Std", None, "Min-Max and Std (or Normal) must both be run")
        return ev.result()
    eps_all = _common_eps(rs, [mm, std])
    eps = 0.3 if any(abs(e - 0.3) < 1e-6 for e in eps_all) else (eps_all[-1] if eps_all else None)
    if eps is None:
        ev.part("PGD", None, "needs white-box results at a common ε")
    else:
        a, b = _pgd(rs, mm, eps), _pgd(rs, std, eps)
        if a.empty or b.empty:
            ev.part("PGD", None, f"needs PGD rows at ε={eps:.3g}")
        else:
            ev.use(a, b)
            ev.numbers["pgd"] = {"eps": eps, "min_max": a.mean, "std": b.mean}
            ev.part(
                "PGD",
                _greater(a, b),
                f"ε={eps:.3g}: Min-Max {_pct(a.mean)} vs Std {_pct(b.mean)} ({_diff_text(a, b)})",
            )
        for name, names in (("Std+L1", ("Std+L1", "minmax/std-l1")), ("Std+L2", ("Std+L2", "minmax/std-l2"))):
            abl = _runs(rs, names, ds)
            c = _pgd(rs, abl, eps) if abl else Cell()
            if c.empty or a.empty:
                ev.part(f"{name} below Min-Max", None, "not run", optional=True)
                continue
            ev.use(c)
            ev.numbers[name] = c.mean
            ev.part(
                f"{name} below Min-Max",
                _greater(a, c),
                f"{name} {_pct(c.mean)} vs Min-Max {_pct(a.mean)}",
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
        ("AT+EnSGD vs AT", ("AT+EnSGD", "kanai/at-ensgd"), ("AT", "kanai/at"), True),
        ("AWP+EnSGD vs AWP", ("AWP+EnSGD", "kanai/awp-ensgd"), ("AWP", "kanai/awp"), False),
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
        a, c = _white(rs, x, e), _white(rs, b, e)
        ev.use(a, c)
        ev.numbers[name] = {"eps": e, "with_ensgd": a.mean, "without": c.mean}
        ok = _greater(a, c) if strict else (a.mean >= c.mean or _within_noise(a, c))
        ev.part(name, ok, f"ε={e:.3g}: {_pct(a.mean)} vs {_pct(c.mean)} ({_diff_text(a, c)})", optional=True)
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

    Runs that are not trained enough (:func:`untrained_runs`) are left out, so claims about them
    come out *not enough data*, with the excluded runs named."""
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
        )
    datasets = rs.datasets() or ["mnist5k"]
    out: list[ClaimResult] = []
    for cid in ids or CLAIMS.names():
        cl = CLAIMS.get(cid)
        for ds in datasets[:1] if cid == "C11" else datasets:
            res = cl.fn(usable, ds, cl)
            if cid == "C11":
                res.dataset = None
            elif bad and res.verdict == NOT_ENOUGH:
                names = ", ".join(
                    f"{r.label} {100 * bad[r.id]:.0f}%" for r in rs.runs if r.id in bad and r.dataset == ds
                )
                res.detail += f" [left out as not trained enough (clean accuracy): {names}]"
                res.numbers["untrained"] = {r.label: bad[r.id] for r in rs.runs if r.id in bad}
            out.append(res)
    return out


def format_claims(results: Sequence[ClaimResult], *, width: int = 110) -> str:
    """A plain-text table: id, verdict, claim, and the numbers on the next line(s)."""
    import textwrap

    lines = [f"{'id':<4} {'verdict':<16} claim (source)", "-" * width]
    for r in results:
        ds = f" [{r.dataset}]" if r.dataset and len({x.dataset for x in results if x.dataset}) > 1 else ""
        lines.append(f"{r.id:<4} {r.verdict:<16} {r.claim}{ds} ({r.source})")
        for chunk in textwrap.wrap(r.detail, width - 8):
            lines.append(f"{'':<8}{chunk}")
    counts = {v: sum(1 for r in results if r.verdict == v) for v in VERDICTS}
    lines.append("-" * width)
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)
