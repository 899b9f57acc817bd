"""The reproduction scale (issue 15): every paper table on mnist5k, with three seeds for every
defense a claim compares, white-box attacks on the 1,000 test digits and AutoAttack on 500.

It is the four study files ``experiments/{ru,atent,minmax,kanai}-mnist5k-cpu.toml`` — the presets'
converged ``cpu`` recipes (docs/training.md) — each run by the ordinary resumable runner into its
own workspace ``OUT/<paper>`` (one per paper, because two papers' tables both have a "TRADES"
column with different recipes), then checked against the papers' claims.
See docs/experiments.md, "Reproduction scale", for what each file fills and what it costs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from entrobust.errors import ConfigError

__all__ = ["PAPERS", "reproduction_experiments", "run_reproduction"]

#: paper → its study file (in the project's ``experiments/`` folder)
PAPERS: dict[str, str] = {
    "ru": "ru-mnist5k-cpu.toml",
    "atent": "atent-mnist5k-cpu.toml",
    "minmax": "minmax-mnist5k-cpu.toml",
    "kanai": "kanai-mnist5k-cpu.toml",
}


def _folder(folder: str | Path | None) -> Path:
    """The folder holding the study files: ``folder`` when given, else ``./experiments``, else the
    project's."""
    candidates = (
        [Path(folder)]
        if folder is not None
        else [Path("experiments"), Path(__file__).resolve().parents[3] / "experiments"]
    )
    for c in candidates:
        if all((c / f).is_file() for f in PAPERS.values()):
            return c
    raise ConfigError(
        f"the reproduction's study files ({', '.join(PAPERS.values())}) are not in "
        f"{', '.join(str(c) for c in candidates)}; run from the project folder or pass --experiments DIR"
    )


def reproduction_experiments(
    papers: Sequence[str] | None = None, *, folder: str | Path | None = None
) -> dict[str, Any]:
    """``{paper: Experiment}`` of the reproduction (all four papers when ``papers`` is None)."""
    from entrobust.experiments.spec import load_experiment

    chosen = list(PAPERS) if papers is None else list(dict.fromkeys(papers))
    unknown = [p for p in chosen if p not in PAPERS]
    if unknown or not chosen:
        raise ConfigError(f"unknown paper(s) {unknown}; valid: {', '.join(PAPERS)}")
    where = _folder(folder)
    return {p: load_experiment(where / PAPERS[p]) for p in chosen}


def run_reproduction(
    out: str | Path = "entrobust-reproduce",
    *,
    papers: Sequence[str] | None = None,
    folder: str | Path | None = None,
    workers: int | None = None,
    wait: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Run (or resume) the reproduction into ``out/<paper>``; returns ``{paper: ExperimentResult}``
    and prints each paper's claims table as it finishes."""
    from entrobust.experiments.runner import Progress, run_experiment
    from entrobust.report.claims import format_claims

    exps = reproduction_experiments(papers, folder=folder)
    log = log if log is not None else Progress()
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    for paper, exp in exps.items():
        ws = Path(out) / paper
        log(f"reproduction: {paper} ({len(exp.plan())} training runs) → {ws.resolve()}")
        results[paper] = run_experiment(exp, ws, log=log, report_dir=ws, wait=wait, workers=workers)
        if log.stream is not None:
            print(f"\nClaims check ({paper}):", file=log.stream)
            print(format_claims(results[paper].claims), file=log.stream)
    log(f"reproduction finished in {time.perf_counter() - t0:.1f}s")
    return results
