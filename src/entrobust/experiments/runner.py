"""Run an experiment: train what is missing, evaluate, analyse, check claims, report — resumably.

Stages, in order, each over every planned run (:func:`~entrobust.experiments.spec.plan_runs`):

1. **train** — a run whose store row says ``done`` (and whose checkpoint exists) is skipped; a run
   with a trainer state in its folder resumes from it (:func:`entrobust.training.train` with
   ``resume=True``, bit-identical on CPU); otherwise it starts. Per-epoch metrics go to the store
   as they come and are re-synced from the trainer's history at the end (an epoch whose row was
   lost to a kill between checkpoint and store write is recovered).
2. **evaluate** — each evaluation of each run is one *stage* marked in the store together with its
   rows in a single transaction (:meth:`Store.replace_evaluations`); a finished stage with the same
   specification hash is never repeated. An interrupted evaluation resumes from its state folder
   (:func:`entrobust.evaluation.evaluate` ``state_path``), so no finished chunk is redone.
3. **analyse** — the same for every analysis (``run`` scope once per trained model, ``study``
   scope once per experiment).
4. **report** — Markdown + self-contained HTML with the paper tables, plots, audits and claims.

With ``workers`` > 1 (``entrobust run --workers N``) the units of stages 1–3 — each training,
each (evaluation, run) pair, each analysis — run in spawned worker processes as soon as the units
they need are done; see :func:`run_experiment`.

Workspace layout: ``results.sqlite``, ``runs/<run id>/`` (checkpoints, trainer state, evaluation
state), ``reports/<experiment>/`` (report.md, report.html), ``entrobust.lock`` (held while a
runner works there: one runner per workspace, see :mod:`entrobust.experiments.lock`). Kill it at
any point (even ``kill -9``) and run it again: it ends with the same stored results as a run never
interrupted.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from entrobust import distributed
from entrobust.errors import ConfigError
from entrobust.experiments.spec import EvaluationSpec, Experiment, PlannedRun
from entrobust.experiments.store import Store, config_hash
from entrobust.record import EvalRecord

__all__ = [
    "ExperimentResult",
    "Progress",
    "audit_flag",
    "available_cores",
    "evaluation_records",
    "run_experiment",
    "store_path",
    "stored_broken",
    "strongest_stored",
    "unit_threads",
]

STUDY_LABEL = "study"


def store_path(workspace: str | Path) -> Path:
    """The results database of a workspace."""
    return Path(workspace) / "results.sqlite"


class Progress:
    """Prints stage lines with the elapsed wall time: ``[  12.3s] train 2/9 PAT ...``.

    ``stream=None`` silences it. ``counts`` collects how many units each stage ran or skipped.
    """

    def __init__(self, stream: Any = "stdout") -> None:
        self._stream = stream
        self.t0 = time.perf_counter()
        self.counts: dict[str, dict[str, int]] = {}

    @property
    def stream(self) -> Any:
        """Where lines go: ``sys.stdout`` as it is at call time (by default), a file, or None."""
        return sys.stdout if self._stream == "stdout" else self._stream

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, msg: str) -> None:
        if self.stream is not None:
            print(f"[{self.elapsed():7.1f}s] {msg}", file=self.stream, flush=True)

    def count(self, stage: str, what: str) -> None:
        c = self.counts.setdefault(stage, {"ran": 0, "skipped": 0})
        c[what] = c.get(what, 0) + 1


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did: run ids per label, timings, report paths, claims."""

    experiment: Experiment
    workspace: Path
    run_ids: dict[tuple[str, str, str, int], str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    claims: list[Any] = field(default_factory=list)

    @property
    def store(self) -> Store:
        return Store(store_path(self.workspace))


# ------------------------------------------------------------------------------------ helpers


def _fmt_pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if f != f else f"{100 * f:.1f}%"


def _describe(pr: PlannedRun) -> str:
    return f"{pr.label} ({pr.dataset}, {pr.model}, seed {pr.seed})"


def _checkpoint_path(run_dir: Path, which: str) -> Path:
    best = run_dir / "best.safetensors"
    if which == "best" and best.exists():
        return best
    return run_dir / "last.safetensors"


def _load_model(path: Path, device: str) -> Any:
    from entrobust.checkpoint import load_checkpoint
    from entrobust.runtime import select_device

    model, _ = load_checkpoint(path, map_location=select_device(device))
    model.eval()
    return model


class _TransferFactory:
    """Suite-row factory for black-box rows: ``attack`` crafted on ``surrogate`` (RU §5.1).

    Carries a stable ``__qualname__`` naming the surrogate run, so the evaluation's resume
    fingerprint is the same in every process. The stored rows name the surrogate and the attack
    in their own fields (:class:`~entrobust.record.EvalRecord`), never through it.
    """

    def __init__(self, surrogate: Any, attack: str, surrogate_id: str) -> None:
        self.surrogate = surrogate
        self.attack = attack
        self.__qualname__ = f"transfer[{surrogate_id}]:{attack}"

    def __call__(self, threat: Any, **kwargs: Any) -> Any:
        from entrobust.attacks.sampling import Transfer

        return Transfer(threat, surrogate=self.surrogate, attack=self.attack, **kwargs)


def _transfer_suite(suite_spec: str, dataset: str, surrogate: Any, surrogate_id: str) -> Any:
    from entrobust.evaluation import Suite, SuiteEntry, get_suite

    base = get_suite(suite_spec, dataset)
    entries = []
    for e in base.entries:
        if not isinstance(e.attack, str):
            raise ConfigError(f"suite row {e.label!r} cannot be transferred (not a named attack)")
        entries.append(
            SuiteEntry(e.label, _TransferFactory(surrogate, e.attack, surrogate_id), e.kwargs, e.norm, e.eps)
        )
    return Suite(
        f"{base.name} (transfer)", tuple(entries), "black-box transfer", base.eps, source=base.source
    )


def evaluation_records(
    result: Any,
    spec: EvaluationSpec,
    run_id: str,
    *,
    surrogate: str | None = None,
    attack_names: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[EvalRecord]:
    """The store's records of one :class:`~entrobust.evaluation.EvalResult` of run ``run_id``: a
    ``clean`` row (ε = 0, with per-example clean margin / loss / entropy), one row per (attack, ε)
    step and one ``worst-case`` row per ε. A step row's accuracy is the attack's own accuracy in
    independent mode and the cumulative worst case after it in cascade mode (``accuracy``).

    ``surrogate`` is the run a black-box suite was crafted on; ``attack_names`` the registered
    attack of each suite entry when the entries are factories (the transfer rows), by entry index.
    """
    extra = dict(extra or {})
    n = result.n
    idx = [int(i) for i in result.indices.tolist()]
    clean_acc = result.clean_accuracy
    base_spec = {
        "evaluation": spec.key(),
        "suite": result.suite,
        "mode": result.mode,
        "meta": {k: v for k, v in result.meta.items() if k != "model_sha256"},
        "model_sha256": result.meta.get("model_sha256"),
        **extra,
    }
    common = {
        "run_id": run_id,
        "evaluation": spec.name,
        "n": n,
        "clean_acc": clean_acc,
        "surrogate": surrogate,
    }
    cc = result.clean["clean_correct"]
    clean_examples = None
    if spec.per_example:
        clean_examples = tuple(
            {
                "idx": idx[i],
                "success": not bool(cc[i]),
                "margin": float(result.clean["clean_margin"][i]),
                "loss": float(result.clean["clean_loss"][i]),
                "entropy": float(result.clean["clean_entropy"][i]),
            }
            for i in range(n)
        )
    records = [
        EvalRecord(
            attack="clean", row="clean", norm=result.norm, eps=0.0, robust_acc=clean_acc, spec=base_spec,
            examples=clean_examples, **common,
        )
    ]  # fmt: skip
    cumulative = result.mode != "independent"
    entries = result.suite.get("entries", [])
    for st in result.attack_stats():
        i_step = st["index"]
        examples = None
        if spec.per_example:
            rec = result.records
            ran = rec["ran"][i_step]
            examples = tuple(
                {
                    "idx": idx[i],
                    "success": bool(rec["success"][i_step, i]),
                    "first_success": int(rec["first_success"][i_step, i]),
                    "margin": _num(rec["margin"][i_step, i]),
                    "loss": _num(rec["loss"][i_step, i]),
                    "entropy": _num(rec["entropy"][i_step, i]),
                    "distance": _num(rec["distance"][i_step, i]),
                }
                for i in ran.nonzero().flatten().tolist()
            )
        k = st["entry_index"]
        entry = entries[k] if k < len(entries) else {}
        name = attack_names[k] if attack_names is not None else entry.get("attack", st["label"])
        records.append(
            EvalRecord(
                attack=st["label"],
                row="attack",
                attack_name=str(name),
                accuracy="cumulative" if cumulative else "standalone",
                norm=st["norm"],
                eps=st["eps"],
                robust_acc=st["cumulative_accuracy" if cumulative else "standalone_accuracy"],
                spec={
                    **base_spec,
                    "entry": entry,
                    "step": i_step,
                    "n_attacked": st["n_attacked"],
                    "n_fooled": st["n_fooled"],
                    "seconds": st["seconds"],
                },
                examples=examples,
                **common,
            )
        )
    for e in result.attacked_eps:  # a column where no attack ran has no worst case to store
        mask = result.robust_mask(e)
        worst = (
            tuple({"idx": idx[i], "success": not bool(mask[i])} for i in range(n))
            if spec.per_example
            else None
        )
        records.append(
            EvalRecord(
                attack="worst-case", row="worst-case", norm=result.norm, eps=float(e),
                robust_acc=result.robust_accuracy(e), spec=base_spec, examples=worst, **common,
            )
        )  # fmt: skip
    return records


def _escalated_rows(
    result: Any,
    spec: EvaluationSpec,
    run_id: str,
    base: EvalRecord | None,
    base_examples: list[dict[str, Any]],
    robust: Any,
    info: dict[str, Any],
) -> list[EvalRecord]:
    """Store records of an escalation (see :meth:`_Runner.escalate_one`). With a base evaluation
    the added rows ran only on its ``robust`` points: accuracies are counted over the base's ``n``
    points (a point the base broke stays broken), examples carry test-set indices, and the
    worst-case row marks every base point. Without one they are the result's own records."""
    extra = {"adaptive": info}
    if base is None:
        assert result is not None
        return evaluation_records(result, spec, run_id, extra=extra)
    n = int(base.n)
    fooled: set[int] = set()
    records: list[EvalRecord] = []
    base_spec = {"evaluation": spec.key(), **extra}
    if result is not None:
        for rec in evaluation_records(result, spec, run_id, extra=extra):
            local = tuple(dict(e, idx=int(robust[int(e["idx"])])) for e in rec.examples or ())
            if rec.row == "worst-case":
                fooled = {int(e["idx"]) for e in local if e["success"]}
                continue
            if rec.row == "clean":
                continue
            # a step row: its accuracy over the m robust points, counted over the base's n
            records.append(
                replace(
                    rec,
                    n=n,
                    clean_acc=base.clean_acc,
                    robust_acc=float(rec.robust_acc) * rec.n / n,
                    examples=local,
                )
            )
    worst = tuple(
        {"idx": int(e["idx"]), "success": bool(e["success"]) or int(e["idx"]) in fooled}
        for e in base_examples
    )
    acc = sum(not w["success"] for w in worst) / max(n, 1)
    common: dict[str, Any] = {"run_id": run_id, "evaluation": spec.name, "norm": base.norm, "n": n}
    common["clean_acc"] = base.clean_acc
    records.insert(
        0,
        EvalRecord(attack="clean", row="clean", eps=0.0, robust_acc=base.clean_acc, spec=base_spec, **common),
    )
    records.append(
        EvalRecord(
            attack="worst-case",
            row="worst-case",
            eps=float(base.eps),
            robust_acc=acc,
            spec=base_spec,
            examples=worst,
            **common,
        )
    )
    return records


def _evaluation_name(e: EvalRecord) -> str:
    """How the flag summary names a stored worst-case row's evaluation."""
    if e.spec.get("adaptive"):
        return "adaptive"
    return e.evaluation.split(" ")[0] or "?"


def _num(v: Any) -> float | None:
    f = float(v)
    return None if f != f else f


def _white_box(store: Any, run_id: str, norm: str) -> list[EvalRecord]:
    """``run_id``'s stored rows under ``norm`` that the audit and the escalation may build on:
    white-box (not transferred) and not an escalation (which follows the audit, never feeds it)."""
    return [e for e in store.evaluations(run_id, norm=norm) if not e.transfer and not e.spec.get("adaptive")]


def strongest_stored(store: Any, run_id: str, eps: float, norm: str) -> dict[str, Any] | None:
    """The strongest stored white-box evaluation row of ``run_id`` at (``eps``, ``norm``) — the
    lowest robust accuracy of any attack or worst-case row there — as ``{"accuracy", "attack",
    "n", "evaluation"}``, or None. The audit compares it with its own attacks (``strong-attack``)."""
    rows = [e for e in _white_box(store, run_id, norm) if abs(float(e.eps) - eps) < 1e-6 and e.row != "clean"]
    if not rows:
        return None
    best = min(rows, key=lambda e: (e.robust_acc, -e.n, e.id))
    suite = best.suite_name or best.evaluation
    what = best.attack if best.attack != "worst-case" else f"worst case of {suite}"
    return {"accuracy": float(best.robust_acc), "attack": what, "n": int(best.n), "evaluation": best.id}


def stored_broken(store: Any, run_id: str, eps: float, norm: str) -> list[int]:
    """Test-set indices that any stored white-box worst-case row of ``run_id`` at (``eps``,
    ``norm``) or a smaller ε broke (escalations excluded) — the points the audit reuses instead of
    attacking them again (``audit(..., known_broken=...)``)."""
    out: set[int] = set()
    for e in _white_box(store, run_id, norm):
        if e.row == "worst-case" and float(e.eps) <= eps + 1e-6:
            out.update(int(r["idx"]) for r in store.examples(e.id) if r.get("success"))
    return sorted(out)


def audit_flag(label: str, audit: dict[str, Any] | None) -> str | None:
    """A warning line when a stored audit (``AuditReport.to_dict()``) failed or warned, naming the
    checks; None when there is none or it passed."""
    if not audit or audit.get("status") not in ("warn", "fail"):
        return None
    bad = [
        f"{c.get('name')} ({c.get('status')})"
        for c in audit.get("checks", [])
        if c.get("status") in ("warn", "fail")
    ]
    th = audit.get("threat") or {}
    return (
        f"{label}: the gradient-obfuscation audit is {str(audit['status']).upper()} at "
        f"{th.get('norm', '?')} ε = {float(th.get('eps', float('nan'))):.4g} — {', '.join(bad)}; "
        + (
            "its robust accuracies are not trustworthy until these are resolved"
            if audit["status"] == "fail"
            else "its robust accuracies may be overstated"
        )
    )


# ------------------------------------------------------------------------------------ runner


class _RankZeroWrites:
    """The results store as every rank of a ``torchrun`` job sees it: rank 0 alone performs a
    write (``add_*``, ``set_*``, ``mark_*``, ``replace_*``) and broadcasts its return value, so
    all ranks take the same decisions from later reads. Reads go to the database directly.
    ``raw`` is the store itself, for writes only rank 0 makes (trainer callbacks)."""

    _WRITES = ("add_", "set_", "mark_", "replace_")

    def __init__(self, store: Store) -> None:
        self.raw = store

    def __getattr__(self, name: str) -> Any:
        from entrobust import distributed

        attr = getattr(self.raw, name)
        if not name.startswith(self._WRITES) or distributed.world_size() == 1:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs) if distributed.is_main() else None
            return distributed.broadcast_object(out)

        return write


@dataclass(frozen=True)
class _Unit:
    """One independent piece of work of the runner: ``kind`` ∈ train / evaluate / analyse /
    analyse-study, its arguments (plan and spec indices), and the keys of the units it waits for."""

    key: str
    kind: str
    args: tuple[Any, ...]
    deps: tuple[str, ...]


class _Runner:
    def __init__(self, exp: Experiment, workspace: Path, log: Progress, progress: bool) -> None:
        self.exp = exp
        self.ws = workspace
        self.log = log
        self.progress = progress
        self.store: Any = _RankZeroWrites(Store(store_path(workspace)))
        self.plan = exp.plan()
        self.ids: dict[int, str] = {}
        self._models: dict[tuple[str, str], Any] = {}
        self._data: dict[tuple[str, str, str | None], Any] = {}

    # ----------------------------------------------------------------- bookkeeping
    def run_dir(self, rid: str) -> Path:
        return self.ws / "runs" / rid

    def register(self) -> None:
        """Insert the planned runs (idempotent) and make them the experiment's exact member list."""
        members: list[tuple[str, str, dict[str, Any]]] = []
        for k, pr in enumerate(self.plan):
            rid = self.store.add_run(
                pr.config.to_dict(),
                name=pr.label,
                experiment=self.exp.name,
                preset=pr.preset,
                dataset=pr.dataset,
                model=pr.model,
                seed=pr.seed,
            )
            self.ids[k] = rid
            role = {"adversarial": pr.adversarial, "preset": pr.preset, "scale": self.exp.scale}
            members.append((rid, pr.label, role))
        study = [m for m in self.store.members(self.exp.name) if m["role"].get("study")]
        members += [(m["run_id"], m["label"], m["role"]) for m in study]
        self.store.set_members(self.exp.name, members)

    def dataset(self, name: str, split: Literal["train", "test"], root: str | None = None) -> Any:
        key = (name, split, root)
        if key not in self._data:
            from entrobust.data import load_dataset

            self._data[key] = load_dataset(name, split, root=root)
        return self._data[key]

    def model(self, k: int, which: str = "last") -> Any:
        rid = self.ids[k]
        key = (rid, which)
        if key not in self._models:
            path = _checkpoint_path(self.run_dir(rid), which)
            if not path.exists():
                raise ConfigError(f"run {rid} ({_describe(self.plan[k])}) has no checkpoint at {path}")
            model = _load_model(path, self.exp.device)
            if self.plan[k].config.accel.channels_last:  # evaluated in the layout it trained in
                import torch

                model.to(memory_format=torch.channels_last)
            self._models[key] = model
        return self._models[key]

    def find(self, label: str, like: PlannedRun, *, exclude: int | None = None) -> int | None:
        """Index of the run labelled ``label`` on the same dataset (same seed and model preferred)."""
        best: tuple[int, int] | None = None
        for k, pr in enumerate(self.plan):
            if pr.label != label or pr.dataset != like.dataset or k == exclude:
                continue
            score = (pr.seed == like.seed) * 2 + (pr.model == like.model)
            if best is None or score > best[0]:
                best = (score, k)
        return None if best is None else best[1]

    def surrogate_for(self, k: int, label: str | None) -> int | None:
        """The run crafting black-box examples for run ``k`` (never ``k`` itself)."""
        pr = self.plan[k]
        name = pr.defense.surrogate or label
        if name is None:
            return None
        return self.find(name, pr, exclude=k)

    def normal_for(self, k: int) -> int | None:
        """A normally trained run (no adversary, no regularizer) of the same data, not ``k`` itself."""
        pr = self.plan[k]
        if pr.defense.surrogate is not None:
            s = self.find(pr.defense.surrogate, pr, exclude=k)
            if s is not None:
                return s
        for j, other in enumerate(self.plan):
            if j == k or other.dataset != pr.dataset or other.adversarial:
                continue
            m = other.config.method
            if str(m.objective.kind) == "ce" and str(m.regularizer.kind) == "none":
                return self.find(other.label, pr, exclude=k)
        return None

    # ----------------------------------------------------------------- stage 1: train
    def train_all(self) -> None:
        for k in range(len(self.plan)):
            self.train_unit(k)

    def train_unit(self, k: int) -> None:
        """Train run ``k`` unless it is done with its checkpoint present."""
        pr, rid, pos = self.plan[k], self.ids[k], f"{k + 1}/{len(self.plan)}"
        run = self.store.run(rid)
        ck = self.run_dir(rid) / "last.safetensors"
        if run.status == "done" and ck.exists():
            self.log.count("train", "skipped")
            self.log(f"train {pos} {_describe(pr)}: done before, skipped")
            return
        self.train_one(k, pos)
        self.log.count("train", "ran")

    def train_one(self, k: int, pos: str) -> None:
        from entrobust.training import train
        from entrobust.training.outdir import STATE_MARKERS

        pr, rid = self.plan[k], self.ids[k]
        out = self.run_dir(rid)
        resume = any((out / name).exists() for name in STATE_MARKERS)
        cfg = pr.config
        # killed before its first epoch ended: only the config was written, so it starts afresh
        restart = not resume and (out / "config.json").exists()
        self.log(
            f"train {pos} {_describe(pr)}: preset {pr.preset}, {cfg.epochs} epoch(s)"
            + (" — resuming" if resume else "")
            + (" — restarting (the last attempt stopped before its first epoch ended)" if restart else "")
        )
        self.store.set_status(rid, "running")
        t0 = time.perf_counter()

        def on_epoch(metrics: dict[str, Any]) -> None:  # called on rank 0 only
            self.store.raw.add_epoch(rid, int(metrics["epoch"]), metrics)
            self.log(
                f"  epoch {metrics['epoch']}/{cfg.epochs} loss {metrics.get('train_loss', float('nan')):.3f}"
                f" train clean {_fmt_pct(metrics.get('train_clean_acc'))}"
                f" val robust {_fmt_pct(metrics.get('val_robust_acc'))}"
                f" ({metrics.get('train_time_s', 0.0):.1f}s)"
            )

        try:
            result = train(cfg, out, resume=resume, callbacks=[on_epoch], progress=self.progress)
        except BaseException:
            try:
                self.store.set_status(rid, "failed")
            except Exception:  # e.g. the disk is full: the store cannot take it either; the
                pass  # training error is the one to report (the rerun resumes the run anyway)
            raise
        for m in result.history:  # idempotent; recovers a row lost between checkpoint and store
            self.store.add_epoch(rid, int(m["epoch"]), m)
        summary = {
            "epochs": len(result.history),
            "last": result.last,
            "best": result.best,
            "stopped_early": result.stopped_early,
            "seconds": time.perf_counter() - t0,
        }
        self.store.set_status(rid, "done", checkpoint=str(result.last_path), summary=summary)
        if result.last_path is not None:
            self.store.add_artifact(rid, "checkpoint", result.last_path)
        last = result.last or {}
        self.log(
            f"  trained in {time.perf_counter() - t0:.1f}s: "
            f"train clean {_fmt_pct(last.get('train_clean_acc'))},"
            f" train robust {_fmt_pct(last.get('train_robust_acc'))}"
        )

    # ----------------------------------------------------------------- stage 2: evaluate
    def evaluate_all(self) -> None:
        for ev in self.exp.evaluations:
            targets = [k for k, pr in enumerate(self.plan) if ev.only is None or pr.label in ev.only]
            for pos, k in enumerate(targets):
                self.evaluate_one(ev, k, f"{pos + 1}/{len(targets)}")

    def evaluate_one(self, ev: EvaluationSpec, k: int, pos: str) -> None:
        from entrobust.evaluation import evaluate

        pr, rid = self.plan[k], self.ids[k]
        surrogate_k: int | None = None
        if ev.transfer:
            surrogate_k = self.surrogate_for(k, ev.surrogate)
            if surrogate_k is None:
                self.log(f"eval {ev.name} {pos} {_describe(pr)}: no independent surrogate model, skipped")
                self.log.count(f"eval:{ev.name}", "skipped")
                return
        sur_id = self.ids[surrogate_k] if surrogate_k is not None else None
        spec_hash = config_hash({"evaluation": ev.key(), "surrogate": sur_id})
        stage = f"eval:{ev.name}"
        if self.store.stage_done(rid, stage, spec_hash):
            self.log.count(stage, "skipped")
            self.log(f"eval {ev.name} {pos} {_describe(pr)}: done before, skipped")
            return
        self.log(
            f"eval {ev.name} {pos} {_describe(pr)}: suite {ev.suite}"
            + (f" transferred from {self.plan[surrogate_k].label}" if surrogate_k is not None else "")
            + (f", {ev.max_examples} examples" if ev.max_examples else "")
        )
        t0 = time.perf_counter()
        model = self.model(k, ev.checkpoint)
        suite: Any = ev.suite
        extra: dict[str, Any] = {"checkpoint": ev.checkpoint}
        attack_names = None
        if surrogate_k is not None:
            suite = _transfer_suite(ev.suite, pr.dataset, self.model(surrogate_k, ev.checkpoint), str(sur_id))
            attack_names = [e.attack.attack for e in suite.entries]
            extra.update(surrogate_label=self.plan[surrogate_k].label)
        state = self.run_dir(rid) / "eval" / f"{ev.name}-{spec_hash}"
        result = evaluate(
            model,
            self.dataset(pr.dataset, "test", pr.config.data_root),
            suite,
            eps=list(ev.eps) or None,
            norm=ev.norm,
            batch_size=ev.batch_size,
            max_examples=ev.max_examples,
            state_path=state,
            progress=self.progress,
            seed=ev.seed,
            keep_examples=False,
            mode=ev.mode,  # type: ignore[arg-type]
            dataset=pr.dataset,
        )
        records = evaluation_records(
            result, ev, rid, surrogate=sur_id, attack_names=attack_names, extra=extra
        )
        self.store.replace_evaluations(rid, ev.name, records, stage=(stage, spec_hash))
        if distributed.is_main():
            shutil.rmtree(state, ignore_errors=True)
        self.log.count(stage, "ran")
        worst = ", ".join(f"ε={e:.3g}: {_fmt_pct(a)}" for e, a in result.accuracy_by_eps().items())
        self.log(
            f"  clean {_fmt_pct(result.clean_accuracy)}; worst case {worst} ({time.perf_counter() - t0:.1f}s)"
        )
        # the evaluation's alarms and a stored audit's verdict go beside the number they qualify
        for note in result.meta.get("warnings", []):
            self.log(f"  WARNING: {note}")
        flag = self.audit_flag(k)
        if flag:
            self.log(f"  WARNING: {flag}")

    # ----------------------------------------------------------------- stage 3: analyse
    def study_run(self) -> str:
        """The pseudo-run holding this experiment's study-level analyses (e.g. the toy)."""
        config = {"kind": "study-analyses", "experiment": self.exp.name}
        rid = self.store.add_run(config, name=STUDY_LABEL, experiment=self.exp.name)
        if self.store.run(rid).status != "done":
            self.store.set_status(rid, "done")
        self.store.add_member(self.exp.name, rid, STUDY_LABEL, {"study": True})
        return rid

    def analyse_all(self) -> None:
        for a in self.exp.analyses:
            if self.analysis_scope(a) == "study":
                self.analyse_study(a)
                continue
            targets = self.analysis_targets(a)
            for pos, k in enumerate(targets):
                self.analyse_run(a, k, f"{pos + 1}/{len(targets)}")

    def analysis_scope(self, a: Any) -> str:
        from entrobust.diagnostics.analysis import ANALYSES

        return str(ANALYSES.get(a.kind).scope)

    def analysis_targets(self, a: Any) -> list[int]:
        return [k for k, pr in enumerate(self.plan) if a.only is None or pr.label in a.only]

    def _analysis_hash(self, a: Any) -> tuple[Any, dict[str, Any], str]:
        from entrobust.diagnostics.analysis import ANALYSES

        kind = ANALYSES.get(a.kind)
        params = kind.validate(a.params)
        return kind, params, config_hash({"kind": a.kind, "params": params})

    def analyse_study(self, a: Any) -> None:
        """A study-scope analysis (e.g. the toy), stored on the experiment's pseudo-run."""
        from entrobust.diagnostics.analysis import AnalysisContext

        kind, params, spec_hash = self._analysis_hash(a)
        stage = f"analysis:{a.kind}"
        rid = self.study_run()
        if self.store.stage_done(rid, stage, spec_hash):
            self.log.count(stage, "skipped")
            self.log(f"analysis {a.kind} (study): done before, skipped")
            return
        self.log(f"analysis {a.kind} (study)")
        t0 = time.perf_counter()
        res = kind.fn(AnalysisContext(seed=0, log=lambda m: self.log("  " + m)), params)
        self._store_analysis(rid, a.kind, res, stage, spec_hash)
        self.log(f"  done in {time.perf_counter() - t0:.1f}s")

    def analyse_run(self, a: Any, k: int, pos: str) -> None:
        """A run-scope analysis of run ``k`` (the audit also reads its normally trained surrogate)."""
        from entrobust.diagnostics.analysis import AnalysisContext

        kind, params, spec_hash = self._analysis_hash(a)
        stage = f"analysis:{a.kind}"
        pr, rid = self.plan[k], self.ids[k]
        sur, ref, h = self._run_analysis_inputs(a, k, params, spec_hash)
        if self.store.stage_done(rid, stage, h):
            self.log.count(stage, "skipped")
            self.log(f"analysis {a.kind} {pos} {_describe(pr)}: done before, skipped")
            return
        broken = None
        if a.kind == "audit":
            from entrobust.diagnostics.analysis import audit_threat

            norm, eps = audit_threat(pr.dataset, params)
            broken = stored_broken(self.store, rid, eps, norm)
        self.log(f"analysis {a.kind} {pos} {_describe(pr)}")
        t0 = time.perf_counter()
        ctx = AnalysisContext(
            dataset=pr.dataset,
            model=self.model(k),
            test=self.dataset(pr.dataset, "test", pr.config.data_root),
            train=self.dataset(pr.dataset, "train", pr.config.data_root),
            surrogate=self.model(sur) if sur is not None else None,
            reference=ref,
            known_broken=broken,
            out_dir=self.run_dir(rid) if distributed.is_main() else self._scratch(),
            seed=pr.seed,
            log=lambda m: self.log("  " + m),
        )
        res = kind.fn(ctx, params)
        if sur is not None:
            res["surrogate_run"] = self.ids[sur]
        self._store_analysis(rid, a.kind, res, stage, h)
        status = f" → {str(res['status']).upper()}" if "status" in res else ""
        self.log(f"  done in {time.perf_counter() - t0:.1f}s{status}")
        if a.kind == "audit" and res.get("status") in ("warn", "fail"):
            flag = self.audit_flag(k)
            if flag:
                self.log(f"  WARNING: {flag}")

    def _run_analysis_inputs(
        self, a: Any, k: int, params: dict[str, Any], spec_hash: str
    ) -> tuple[int | None, dict[str, Any] | None, str]:
        """The surrogate run, the stored reference and the stage hash of run analysis ``a`` of
        run ``k``: the audit reads its normal surrogate and the strongest stored evaluation at its
        ε, and runs again when either changes."""
        sur = self.normal_for(k) if a.kind == "audit" else None
        ref = None
        if a.kind == "audit":
            from entrobust.diagnostics.analysis import audit_threat

            norm, eps = audit_threat(self.plan[k].dataset, params)
            ref = self.strongest_stored(k, eps, norm)
        key: dict[str, Any] = {"spec": spec_hash, "surrogate": self.ids[sur] if sur is not None else None}
        if ref is not None:
            key["reference"] = round(float(ref["accuracy"]), 9)
            # the reused broken points come from the same stored evaluations as the reference
            key["broken"] = config_hash({"idx": stored_broken(self.store, self.ids[k], eps, norm)})
        return sur, ref, config_hash(key)

    # ----------------------------------------------------------------- escalation (--adaptive)
    def escalate_all(self) -> None:
        for k in self.audited():
            self.escalate_one(k)

    def audited(self) -> list[int]:
        """The runs the experiment audits (each gets an escalation unit under ``--adaptive``)."""
        out: list[int] = []
        for a in self.exp.analyses:
            if a.kind == "audit":
                out += [k for k in self.analysis_targets(a) if k not in out]
        return out

    def _escalation_inputs(self, k: int) -> tuple[dict[str, Any] | None, Any, int | None, Any, str]:
        """Run ``k``'s stored audit when it warned or failed (else None), the stored worst-case row
        the escalation continues (the lowest at the audit's ε, with per-example outcomes), the
        surrogate run, the escalation (:func:`entrobust.evaluation.adaptive.escalation`: the rows
        the evidence calls for) and the stage hash. The hash covers the rows chosen, not only the
        evidence, so a stored escalation made under other rules is rerun rather than reused."""
        audit = self.store.analysis(self.ids[k], "audit")
        if not audit or audit.get("status") not in ("warn", "fail"):
            return None, None, None, None, ""
        from entrobust.diagnostics._util import as_xy
        from entrobust.evaluation.adaptive import escalation, nondifferentiable_modules

        th = audit.get("threat") or {}
        norm, eps = str(th.get("norm", "linf")), float(th.get("eps", 0.0))
        rows = [
            e
            for e in _white_box(self.store, self.ids[k], norm)
            if e.row == "worst-case" and abs(float(e.eps) - eps) < 1e-6
        ]
        base = min(rows, key=lambda e: (e.robust_acc, -e.n, e.id)) if rows else None
        sur = self.normal_for(k)
        pr = self.plan[k]
        x_all, _ = as_xy(self.dataset(pr.dataset, "test", pr.config.data_root))
        esc = escalation(
            audit,
            stochastic=bool((audit.get("settings") or {}).get("stochastic", False)),
            surrogate=sur is not None,
            nondifferentiable=nondifferentiable_modules(self.model(k), x_all[:8].float()),
        )
        key = {
            "audit": config_hash({"checks": audit.get("checks"), "threat": th}),
            "base": None if base is None else [base.id, round(float(base.robust_acc), 9), base.n],
            "surrogate": self.ids[sur] if sur is not None else None,
            "rows": list(esc.rows),
            "transfer": bool(esc.transfer and sur is not None),
        }
        return audit, base, sur, esc, config_hash(key)

    def escalate_one(self, k: int) -> None:
        """``--adaptive``: after run ``k``'s audit warned or failed, evaluate the rows its evidence
        calls for (:func:`entrobust.evaluation.adaptive.escalation`) at the audit's threat, on the
        points the strongest stored evaluation there left robust, and store the result as the
        evaluation ``adaptive`` — its worst-case row is the per-example worst case over that
        evaluation and the added rows, on the same points. Resumable like any evaluation."""
        import torch

        from entrobust.evaluation import evaluate, get_suite
        from entrobust.evaluation.suites import concat

        pr, rid = self.plan[k], self.ids[k]
        stage = "eval:adaptive"
        audit, base, sur, esc, h = self._escalation_inputs(k)
        if audit is None:
            self.log(f"adaptive {_describe(pr)}: the audit passed (or is missing), nothing to escalate")
            return
        if self.store.stage_done(rid, stage, h):
            self.log.count(stage, "skipped")
            self.log(f"adaptive {_describe(pr)}: done before, skipped")
            return
        th = audit.get("threat") or {}
        norm, eps = str(th.get("norm", "linf")), float(th.get("eps", 0.0))
        model = self.model(k)
        test = self.dataset(pr.dataset, "test", pr.config.data_root)
        from entrobust.diagnostics._util import as_xy

        x_all, y_all = as_xy(test)
        suite: Any = get_suite(",".join(esc.rows), pr.dataset)
        if esc.transfer and sur is not None:
            black_box = _transfer_suite("pgd:steps=20", pr.dataset, self.model(sur), self.ids[sur])
            suite = concat([suite, black_box])
        status = str(audit["status"]).upper()
        self.log(
            f"adaptive {_describe(pr)}: audit {status} → adding {', '.join(esc.rows)}"
            + (" + transfer PGD" if esc.transfer else "")
        )
        for reason in esc.reasons:
            self.log(f"  {reason}")
        for advice in esc.advice:
            self.log(f"  ADVICE: {advice}")
        t0 = time.perf_counter()
        base_examples = self.store.examples(base.id) if base is not None else []
        spec = EvaluationSpec(name="adaptive", suite=",".join(esc.rows), eps=(eps,), norm=norm)
        state = self.run_dir(rid) / "eval" / f"adaptive-{h}"
        if base_examples:
            left = [int(r["idx"]) for r in base_examples if not r["success"]]
            robust = torch.tensor(left, dtype=torch.long)
            data: Any = (x_all[robust], y_all[robust])
        else:
            robust, data = None, test
        result = None
        if robust is None or robust.numel():
            result = evaluate(
                model,
                data,
                suite,
                eps=[eps],
                norm=norm,
                state_path=state,
                progress=self.progress,
                seed=0,
                keep_examples=False,
                dataset=pr.dataset,
                max_examples=None if robust is not None else int(audit.get("n") or 200),
            )
        info = {
            "escalates": None if base is None else base.id,
            "base_accuracy": None if base is None else float(base.robust_acc),
            "audit_status": audit.get("status"),
            "evidence": esc.evidence,
            "added": list(esc.rows) + (["transfer-pgd"] if esc.transfer else []),
            "reasons": list(esc.reasons),
            "advice": list(esc.advice),
        }
        records = _escalated_rows(result, spec, rid, base, base_examples, robust, info)
        self.store.replace_evaluations(rid, "adaptive", records, stage=(stage, h))
        if distributed.is_main():
            shutil.rmtree(state, ignore_errors=True)
        self.log.count(stage, "ran")
        worst = next(r.robust_acc for r in records if r.row == "worst-case")
        was = f" (plain {_fmt_pct(base.robust_acc)})" if base is not None else ""
        self.log(
            f"  adaptive worst case at {norm} ε={eps:.3g}: {_fmt_pct(worst)}{was} "
            f"({time.perf_counter() - t0:.1f}s)"
        )

    def strongest_stored(self, k: int, eps: float, norm: str) -> dict[str, Any] | None:
        """:func:`strongest_stored` for run ``k``."""
        return strongest_stored(self.store, self.ids[k], eps, norm)

    def audit_flag(self, k: int) -> str | None:
        """:func:`audit_flag` for run ``k``'s stored audit."""
        return audit_flag(self.plan[k].label, self.store.analysis(self.ids[k], "audit"))

    def flag_summary(self) -> list[str]:
        """One line per run whose stored audit failed or warned, with its stored worst cases."""
        lines = []
        for k in range(len(self.plan)):
            flag = self.audit_flag(k)
            if not flag:
                continue
            worst = [
                f"{_evaluation_name(e)} ε={float(e.eps):.3g}: {_fmt_pct(e.robust_acc)}"
                for e in self.store.evaluations(self.ids[k])
                if e.row == "worst-case" and not e.transfer
            ]
            lines.append(f"⚑ {flag}" + (f" (stored worst cases: {'; '.join(worst)})" if worst else ""))
        return lines

    # ----------------------------------------------------------------- units (parallel runner)
    def units(self, stages: Sequence[str], adaptive: bool = False) -> list[_Unit]:
        """Every unit of work of ``stages`` in the in-process order, each with the units it waits
        for: an evaluation waits for its run's training (and a transfer evaluation for its
        surrogate's), a run analysis for its run's training (the audit also for its normal
        surrogate's, and for the run's evaluations, whose strongest result at its ε it compares
        with its own attacks); a study analysis for everything before it."""
        out: list[_Unit] = []
        train = {k: f"train:{k}" for k in range(len(self.plan))}
        if "train" in stages:
            out += [_Unit(train[k], "train", (k,), ()) for k in range(len(self.plan))]
        have = {u.key for u in out}

        def deps(*keys: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys(x for x in keys if x in have))

        if "evaluate" in stages:
            for i, ev in enumerate(self.exp.evaluations):
                targets = [k for k, pr in enumerate(self.plan) if ev.only is None or pr.label in ev.only]
                for pos, k in enumerate(targets):
                    sur = self.surrogate_for(k, ev.surrogate) if ev.transfer else None
                    key = f"eval:{ev.name}:{k}"
                    need = deps(train[k], *([train[sur]] if sur is not None else []))
                    out.append(_Unit(key, "evaluate", (i, k, f"{pos + 1}/{len(targets)}"), need))
            have = {u.key for u in out}
        if "analyse" in stages:
            before = tuple(u.key for u in out)
            for i, a in enumerate(self.exp.analyses):
                if self.analysis_scope(a) == "study":
                    out.append(_Unit(f"analysis:{a.kind}:study", "analyse-study", (i,), before))
                    continue
                targets = self.analysis_targets(a)
                for pos, k in enumerate(targets):
                    sur = self.normal_for(k) if a.kind == "audit" else None
                    evals = [u.key for u in out if u.kind == "evaluate" and u.args[1] == k]
                    need = deps(
                        train[k],
                        *([train[sur]] if sur is not None else []),
                        *(evals if a.kind == "audit" else []),
                    )
                    out.append(
                        _Unit(f"analysis:{a.kind}:{k}", "analyse", (i, k, f"{pos + 1}/{len(targets)}"), need)
                    )
            if adaptive:  # --adaptive: each audited run's escalation waits for its audit
                for k in self.audited():
                    out.append(_Unit(f"adaptive:{k}", "escalate", (k,), (f"analysis:audit:{k}",)))
        return out

    def dispatch_order(self, unit: _Unit) -> tuple[int, float]:
        """Sort key of the worker pool among ready units: trainings first (everything waits for
        them; adversarially trained models first, since the longest evaluations wait for those),
        then the rest longest first by a rough guess of the work (AutoAttack / Square
        suites over plain attacks, audits over other analyses, adversarially trained models —
        which stay robust, so every attack runs to its end — over the others), so that no long unit
        is left for last while a worker idles. Only the order changes; every unit computes the
        same numbers wherever and whenever it runs."""
        if unit.kind == "train":  # adversarially trained first: the longest evaluations wait for them
            return (0, -1.0 if self.plan[unit.args[0]].adversarial else 0.0)
        if unit.kind == "analyse-study":
            return (2, 0.0)
        i, k = unit.args[0], unit.args[1]
        robust = 3.0 if self.plan[k].adversarial else 1.0
        if unit.kind == "evaluate":
            ev = self.exp.evaluations[i]
            heavy = 20.0 if any(w in ev.suite for w in ("autoattack", "square")) else 1.0
            return (1, -heavy * robust * float(ev.max_examples or 1000) * max(len(ev.eps), 1))
        kind = self.exp.analyses[i].kind
        return (1, -{"audit": 1000.0, "fuzziness": 1.0}.get(kind, 100.0) * robust)

    def unit_is_done(self, unit: _Unit) -> bool:
        """True when ``unit`` would only log "done before, skipped" (the parent then runs it itself
        instead of starting a worker for it)."""
        if unit.kind == "train":
            k = unit.args[0]
            return bool(
                self.store.run(self.ids[k]).status == "done"
                and (self.run_dir(self.ids[k]) / "last.safetensors").exists()
            )
        if unit.kind == "evaluate":
            i, k, _ = unit.args
            ev = self.exp.evaluations[i]
            sur = self.surrogate_for(k, ev.surrogate) if ev.transfer else None
            if ev.transfer and sur is None:
                return True
            h = config_hash({"evaluation": ev.key(), "surrogate": self.ids[sur] if sur is not None else None})
            return bool(self.store.stage_done(self.ids[k], f"eval:{ev.name}", h))
        if unit.kind == "escalate":
            audit, _, _, _, h = self._escalation_inputs(unit.args[0])
            return audit is None or bool(self.store.stage_done(self.ids[unit.args[0]], "eval:adaptive", h))
        a = self.exp.analyses[unit.args[0]]
        _, _, spec_hash = self._analysis_hash(a)
        if unit.kind == "analyse-study":
            return bool(self.store.stage_done(self.study_run(), f"analysis:{a.kind}", spec_hash))
        k = unit.args[1]
        _, params, _ = self._analysis_hash(a)
        _, _, h = self._run_analysis_inputs(a, k, params, spec_hash)
        return bool(self.store.stage_done(self.ids[k], f"analysis:{a.kind}", h))

    def unit_tag(self, unit: _Unit) -> str:
        """A short name of ``unit`` for its progress lines: ``PAT s0``, ``PAT s0 white-box``,
        ``PAT s0 audit``, ``PAT s0 adaptive``, or the study analysis' kind."""
        if unit.kind == "analyse-study":
            return self.exp.analyses[unit.args[0]].kind
        if unit.kind in ("train", "escalate"):
            pr, what = self.plan[unit.args[0]], "" if unit.kind == "train" else "adaptive"
        elif unit.kind == "evaluate":
            pr, what = self.plan[unit.args[1]], self.exp.evaluations[unit.args[0]].name
        else:
            pr, what = self.plan[unit.args[1]], self.exp.analyses[unit.args[0]].kind
        return f"{pr.label} s{pr.seed}" + (f" {what}" if what else "")

    def run_unit(self, unit: _Unit) -> None:
        """Do one unit (in this process)."""
        if unit.kind == "train":
            self.train_unit(unit.args[0])
        elif unit.kind == "evaluate":
            i, k, pos = unit.args
            self.evaluate_one(self.exp.evaluations[i], k, pos)
        elif unit.kind == "analyse":
            i, k, pos = unit.args
            self.analyse_run(self.exp.analyses[i], k, pos)
        elif unit.kind == "escalate":
            self.escalate_one(unit.args[0])
        else:
            self.analyse_study(self.exp.analyses[unit.args[0]])

    def _scratch(self) -> Path:
        """Where a rank other than 0 lets analyses write their (duplicate) files."""
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"entrobust-rank{distributed.rank()}-"))

    def _store_analysis(self, rid: str, kind: str, res: dict[str, Any], stage: str, h: str) -> None:
        self.store.add_analysis(rid, kind, res)
        self.store.mark_stage(rid, stage, h)
        self.log.count(stage, "ran")


# ------------------------------------------------------------------------------------ parallel units


def available_cores() -> int:
    """The number of cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def unit_threads(threads: int | None, workers: int, cores: int | None = None) -> int:
    """Torch threads of each worker: the experiment's ``threads`` when it fixes them — the same
    count for every number of workers, so every unit computes bit for bit what it computes
    in-process — else the cores divided between the workers (results may then differ in the last
    bits from a run with another number of workers)."""
    if threads is not None:
        return threads
    return max(1, (cores if cores is not None else available_cores()) // max(1, workers))


#: the worker process's runner (models and datasets stay cached between its units) and settings
_WORKER: dict[str, Any] = {}


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this worker when the runner dies (even by ``kill -9``), so no
    orphan keeps writing into a workspace that a resumed runner has taken over."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request above
        os._exit(1)


def _worker_init(threads: int, t0: float, live: bool, parent: int) -> None:
    import torch

    _die_with_parent(parent)
    torch.set_num_threads(threads)
    _WORKER.clear()
    _WORKER.update(t0=t0, live=live)


class _WorkerLog(Progress):
    """A worker's progress lines, timed from the runner's start: printed at once when the runner
    prints to stdout (the workers share it), else collected for the runner's log when the unit
    ends."""

    def __init__(self, t0: float, live: bool) -> None:
        super().__init__("stdout" if live else None)
        self.t0 = t0
        self.lines: list[str] = []

    #: the unit the lines are about (:meth:`_Runner.unit_tag`): set on the indented lines, which
    #: would otherwise be told apart from another worker's only by their order
    tag: str = ""

    def __call__(self, msg: str) -> None:
        if self.tag and msg.startswith(" "):
            indent = len(msg) - len(msg.lstrip(" "))
            msg = f"{msg[:indent]}{self.tag} · {msg[indent:]}"
        if self.stream is not None:
            super().__call__(msg)
        else:
            self.lines.append(msg)


def _worker_run(
    exp: Experiment, workspace: Path, ids: dict[int, str], unit: _Unit, progress: bool
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Run one unit in a worker process; return its counts and collected progress lines."""
    r = _WORKER.get("runner")
    if r is None or r.ws != workspace or r.exp.name != exp.name:
        r = _Runner(exp, workspace, _WorkerLog(_WORKER["t0"], _WORKER["live"]), progress)
        r.ids = dict(ids)
        _WORKER["runner"] = r
    log = r.log
    assert isinstance(log, _WorkerLog)
    log.counts, log.lines = {}, []
    log.tag = r.unit_tag(unit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # each distinct warning once per unit, as in-process
        r.run_unit(unit)
    for note in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):
        log(f"  {note}")  # a line of the unit's log (tagged with it), not raw text on the shared stderr
    return log.counts, log.lines


_UNIT_STAGE = {
    "train": "train",
    "evaluate": "evaluate",
    "analyse": "analyse",
    "analyse-study": "analyse",
    "escalate": "analyse",
}


def _run_units(
    r: _Runner, units: list[_Unit], workers: int, threads: int, progress: bool
) -> dict[str, float]:
    """Run ``units`` over ``workers`` spawned processes, each unit once its dependencies are done,
    trainings first, then the longest guessed first among those ready
    (:meth:`_Runner.dispatch_order`); units already done are skipped here without a
    worker. A failed unit (its training run is marked ``failed``) stops the units that wait for it;
    the others go on, and the first error is raised at the end. This process schedules and holds
    the workspace lock; workers write their results through the store's retrying API, exactly as
    the unit does in-process. Returns, per stage, the elapsed seconds when its last unit finished."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    log = r.log
    waiting = sorted(units, key=r.dispatch_order)  # stable: the in-process order among equals
    done: set[str] = set()
    failed: set[str] = set()
    errors: list[BaseException] = []
    running: dict[Future[Any], _Unit] = {}
    finished_at: dict[str, float] = {}
    pool: ProcessPoolExecutor | None = None
    t_start = time.perf_counter()
    try:
        while waiting or running:
            still: list[_Unit] = []
            for u in waiting:
                blocked = [d for d in u.deps if d in failed]
                if blocked:
                    failed.add(u.key)
                    log(f"{u.key}: not run, {blocked[0]} failed")
                elif not all(d in done for d in u.deps) or len(running) >= workers:
                    still.append(u)
                elif r.unit_is_done(u):
                    r.run_unit(u)  # logs "done before, skipped"
                    done.add(u.key)
                else:
                    if pool is None:
                        pool = ProcessPoolExecutor(
                            max_workers=workers,
                            mp_context=mp.get_context("spawn"),
                            initializer=_worker_init,
                            initargs=(threads, log.t0, log._stream == "stdout", os.getpid()),
                        )
                    running[pool.submit(_worker_run, r.exp, r.ws, r.ids, u, progress)] = u
            if len(still) == len(waiting) and not running and still:
                raise RuntimeError(f"unit dependencies cannot be met: {[u.key for u in still]}")
            waiting = still
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                u = running.pop(fut)
                stage = _UNIT_STAGE[u.kind]
                finished_at[stage] = time.perf_counter() - t_start
                try:
                    counts, lines = fut.result()
                except Exception as exc:
                    failed.add(u.key)
                    errors.append(exc)
                    log(f"{u.key} failed: {type(exc).__name__}: {exc}")
                    if u.kind == "train":  # also when the worker died before it could say so
                        try:
                            r.store.set_status(r.ids[u.args[0]], "failed")
                        except Exception:
                            pass
                    continue
                for line in lines:
                    log(line)
                for st, c in counts.items():
                    mine = log.counts.setdefault(st, {"ran": 0, "skipped": 0})
                    for what, n in c.items():
                        mine[what] = mine.get(what, 0) + n
                done.add(u.key)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    if pool is not None:  # every result is in: the workers wind down on their own (torch's exit
        pool.shutdown(wait=False)  # takes a second or two) while the runner goes on
    if errors:
        raise errors[0]
    return finished_at


def run_experiment(
    exp: Experiment,
    workspace: str | Path,
    *,
    log: Progress | None = None,
    progress: bool = False,
    report: bool = True,
    report_dir: str | Path | None = None,
    stages: Sequence[str] = ("train", "evaluate", "analyse", "report"),
    on_stage: Callable[[str], Any] | None = None,
    wait: bool = False,
    workers: int | None = 1,
    adaptive: bool = False,
) -> ExperimentResult:
    """Run (or resume) ``exp`` in ``workspace``; see the module docstring.

    With ``workers`` > 1 the independent units — each training run, each (evaluation, run) pair,
    each analysis — run in that many spawned worker processes, each unit as soon as the units it
    needs are done (an evaluation after its run's training and, for a transfer evaluation, its
    surrogate's; an audit after its normal surrogate's training; study analyses and the report
    after everything). Each worker uses :func:`unit_threads` torch threads: the experiment's
    ``threads`` when set, so stored results are identical for every number of workers; else the
    cores divided between the workers. ``workers=1`` runs everything in this process, in order;
    ``None`` uses every core (:func:`available_cores`). Under ``torchrun`` it is always 1.

    The workspace is locked for the whole run (:mod:`entrobust.experiments.lock`): while another
    process runs in it, this raises :class:`~entrobust.experiments.lock.WorkspaceBusyError` naming
    that process, before touching anything — or, with ``wait``, starts once it has finished.

    Args:
        exp: the experiment (:func:`~entrobust.experiments.spec.load_experiment`).
        workspace: folder holding ``results.sqlite`` and the run folders (created if needed).
        log: a :class:`Progress` printer (default: prints to stdout).
        progress: also show tqdm bars for epochs and attacks.
        report: write the report at the end (``report_dir``, default ``<workspace>/reports/<name>``).
        stages: which stages to run (``train``, ``evaluate``, ``analyse``, ``report``).
        on_stage: called with each stage name as it starts (tests use it to kill at stage edges);
            with ``workers`` > 1 the train, evaluate and analyse units interleave, and it is called
            for the three of them before the first unit starts.
        wait: wait for another process running in the workspace instead of failing.
        workers: worker processes (see above); the lock stays with this process.
        adaptive: after each audit that warned or failed, evaluate that run again with the rows
            its evidence calls for and store the escalated worst case as the evaluation
            ``adaptive`` (:meth:`_Runner.escalate_one`; ``entrobust run --adaptive``).
    """
    from contextlib import ExitStack

    from entrobust.experiments.lock import WorkspaceBusyError, workspace_lock

    log = log if log is not None else Progress()
    n = available_cores() if workers is None else int(workers)
    if n < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    with ExitStack() as held:
        busy = None
        if distributed.is_main():  # one lock per job: rank 0 holds it for every rank
            try:
                held.enter_context(workspace_lock(workspace, wait=wait, log=log))
            except WorkspaceBusyError as exc:
                busy = str(exc)
        busy = distributed.broadcast_object(busy)
        if busy is not None:
            raise WorkspaceBusyError(busy)
        if distributed.world_size() > 1:
            n = 1  # data-parallel under torchrun: the ranks share every unit
        return _run_experiment(
            exp, workspace, log, progress, report, report_dir, stages, on_stage, n, adaptive
        )


def _run_experiment(
    exp: Experiment,
    workspace: str | Path,
    log: Progress,
    progress: bool,
    report: bool,
    report_dir: str | Path | None,
    stages: Sequence[str],
    on_stage: Callable[[str], Any] | None,
    workers: int = 1,
    adaptive: bool = False,
) -> ExperimentResult:
    """:func:`run_experiment` once the workspace lock is held."""
    ws = Path(workspace)
    ws.mkdir(parents=True, exist_ok=True)
    if not distributed.is_main():
        log = Progress(stream=None)  # under torchrun rank 0 speaks for the job
    unknown = sorted(set(stages) - {"train", "evaluate", "analyse", "report"})
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; valid: train, evaluate, analyse, report")
    if exp.threads is not None:
        from entrobust.runtime import set_threads

        set_threads(exp.threads)
    r = _Runner(exp, ws, log, progress)
    out = ExperimentResult(exp, ws)
    log(f"experiment {exp.name}: {len(r.plan)} training run(s), {len(exp.evaluations)} evaluation(s), "
        f"{len(exp.analyses)} analysis kind(s); workspace {ws}")  # fmt: skip
    r.register()
    if workers > 1:
        units = r.units(stages, adaptive)
        log(f"== {', '.join(st for st in ('train', 'evaluate', 'analyse') if st in stages)} "
            f"({len(units)} units, {workers} worker processes × "
            f"{unit_threads(exp.threads, workers)} thread(s)) ==")  # fmt: skip
        for name in ("train", "evaluate", "analyse"):
            if name in stages and on_stage is not None:
                on_stage(name)
        out.seconds.update(_run_units(r, units, workers, unit_threads(exp.threads, workers), progress))
    for name, fn in (("train", r.train_all), ("evaluate", r.evaluate_all), ("analyse", r.analyse_all)):
        if name not in stages or workers > 1:
            continue
        if on_stage is not None:
            on_stage(name)
        t0 = time.perf_counter()
        log(f"== {name} ==")
        fn()
        if name == "analyse" and adaptive:
            r.escalate_all()
        out.seconds[name] = time.perf_counter() - t0
    if {"evaluate", "analyse"} & set(stages):
        # a flagged model's robust accuracies never scroll by without the flag beside them
        for line in r.flag_summary():
            log(line)
    out.run_ids = {(pr.label, pr.dataset, pr.model, pr.seed): r.ids[k] for k, pr in enumerate(r.plan)}
    if report and "report" in stages and distributed.is_main():
        if on_stage is not None:
            on_stage("report")
        from entrobust.report import write_report

        t0 = time.perf_counter()
        log("== report ==")
        target = Path(report_dir) if report_dir is not None else ws / "reports" / exp.name
        rep = write_report(
            r.store, target, experiment=exp.name, title=exp.report.title or exp.name, spec=exp.report
        )
        out.report = rep.paths
        out.claims = rep.claims
        for p in rep.paths.values():
            r.store.raw.add_artifact(None, "report", p)
        out.seconds["report"] = time.perf_counter() - t0
        log(f"report written: {rep.paths.get('html')} and {rep.paths.get('markdown')}")
    distributed.barrier()  # the report exists before any rank returns
    out.counts = log.counts
    return out
