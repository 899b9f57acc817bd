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

Workspace layout: ``results.sqlite``, ``runs/<run id>/`` (checkpoints, trainer state, evaluation
state), ``reports/<experiment>/`` (report.md, report.html), ``entrobust.lock`` (held while a
runner works there: one runner per workspace, see :mod:`entrobust.experiments.lock`). Kill it at
any point (even ``kill -9``) and run it again: it ends with the same stored results as a run never
interrupted.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from entrobust import distributed
from entrobust.errors import ConfigError
from entrobust.experiments.spec import EvaluationSpec, Experiment, PlannedRun
from entrobust.experiments.store import Store, config_hash

__all__ = [
    "ExperimentResult",
    "Progress",
    "evaluation_rows",
    "run_experiment",
    "store_path",
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
    fingerprint is the same in every process.
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


def evaluation_rows(
    result: Any, spec: EvaluationSpec, *, extra: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Store rows of one :class:`~entrobust.evaluation.EvalResult`: a ``clean`` row (ε = 0, with
    per-example clean margin / loss / entropy), one row per (attack, ε) step and one ``worst-case``
    row per ε. A step row's accuracy is the attack's own accuracy in independent mode and the
    cumulative worst case after it in cascade mode (``spec["accuracy"]`` says which)."""
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
    rows: list[dict[str, Any]] = []
    cc = result.clean["clean_correct"]
    clean_examples = None
    if spec.per_example:
        clean_examples = [
            {
                "idx": idx[i],
                "success": not bool(cc[i]),
                "margin": float(result.clean["clean_margin"][i]),
                "loss": float(result.clean["clean_loss"][i]),
                "entropy": float(result.clean["clean_entropy"][i]),
            }
            for i in range(n)
        ]
    rows.append(
        {
            "attack": "clean", "spec": {**base_spec, "row": "clean"}, "norm": result.norm, "eps": 0.0, "n": n,
            "clean_acc": clean_acc, "robust_acc": clean_acc, "examples": clean_examples,
        }
    )  # fmt: skip
    key = "standalone_accuracy" if result.mode == "independent" else "cumulative_accuracy"
    entries = result.suite.get("entries", [])
    for st in result.attack_stats():
        i_step = st["index"]
        examples = None
        if spec.per_example:
            rec = result.records
            ran = rec["ran"][i_step]
            examples = []
            for i in ran.nonzero().flatten().tolist():
                examples.append(
                    {
                        "idx": idx[i],
                        "success": bool(rec["success"][i_step, i]),
                        "first_success": int(rec["first_success"][i_step, i]),
                        "margin": _num(rec["margin"][i_step, i]),
                        "loss": _num(rec["loss"][i_step, i]),
                        "entropy": _num(rec["entropy"][i_step, i]),
                        "distance": _num(rec["distance"][i_step, i]),
                    }
                )
        entry = entries[st["entry_index"]] if st["entry_index"] < len(entries) else {}
        rows.append(
            {
                "attack": st["label"],
                "spec": {
                    **base_spec,
                    "row": "attack",
                    "entry": entry,
                    "step": i_step,
                    "accuracy": "standalone" if key == "standalone_accuracy" else "cumulative",
                    "n_attacked": st["n_attacked"],
                    "n_fooled": st["n_fooled"],
                    "seconds": st["seconds"],
                },
                "norm": st["norm"],
                "eps": st["eps"],
                "n": n,
                "clean_acc": clean_acc,
                "robust_acc": st[key],
                "examples": examples,
            }
        )
    for e in result.attacked_eps:  # a column where no attack ran has no worst case to store
        mask = result.robust_mask(e)
        worst = (
            [{"idx": idx[i], "success": not bool(mask[i])} for i in range(n)] if spec.per_example else None
        )
        rows.append(
            {
                "attack": "worst-case", "spec": {**base_spec, "row": "worst-case"}, "norm": result.norm,
                "eps": float(e), "n": n, "clean_acc": clean_acc, "robust_acc": result.robust_accuracy(e),
                "examples": worst,
            }
        )  # fmt: skip
    return rows


def _num(v: Any) -> float | None:
    f = float(v)
    return None if f != f else f


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
            self._models[key] = _load_model(path, self.exp.device)
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
        total = len(self.plan)
        for k, pr in enumerate(self.plan):
            rid = self.ids[k]
            run = self.store.run(rid)
            ck = self.run_dir(rid) / "last.safetensors"
            if run.status == "done" and ck.exists():
                self.log.count("train", "skipped")
                self.log(f"train {k + 1}/{total} {_describe(pr)}: done before, skipped")
                continue
            self.train_one(k, f"{k + 1}/{total}")
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
        if surrogate_k is not None:
            suite = _transfer_suite(ev.suite, pr.dataset, self.model(surrogate_k, ev.checkpoint), str(sur_id))
            extra.update(transfer_from=sur_id, surrogate_label=self.plan[surrogate_k].label)
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
        rows = evaluation_rows(result, ev, extra=extra)
        self.store.replace_evaluations(rid, ev.name, rows, stage=(stage, spec_hash))
        if distributed.is_main():
            shutil.rmtree(state, ignore_errors=True)
        self.log.count(stage, "ran")
        worst = ", ".join(f"ε={e:.3g}: {_fmt_pct(a)}" for e, a in result.accuracy_by_eps().items())
        self.log(
            f"  clean {_fmt_pct(result.clean_accuracy)}; worst case {worst} ({time.perf_counter() - t0:.1f}s)"
        )

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
        from entrobust.experiments.analyses import ANALYSES, AnalysisContext

        for a in self.exp.analyses:
            kind = ANALYSES.get(a.kind)
            params = kind.validate(a.params)
            spec_hash = config_hash({"kind": a.kind, "params": params})
            stage = f"analysis:{a.kind}"
            if kind.scope == "study":
                rid = self.study_run()
                if self.store.stage_done(rid, stage, spec_hash):
                    self.log.count(stage, "skipped")
                    self.log(f"analysis {a.kind} (study): done before, skipped")
                    continue
                self.log(f"analysis {a.kind} (study)")
                t0 = time.perf_counter()
                res = kind.fn(AnalysisContext(seed=0, log=lambda m: self.log("  " + m)), params)
                self._store_analysis(rid, a.kind, res, stage, spec_hash)
                self.log(f"  done in {time.perf_counter() - t0:.1f}s")
                continue
            targets = [k for k, pr in enumerate(self.plan) if a.only is None or pr.label in a.only]
            for pos, k in enumerate(targets):
                pr, rid = self.plan[k], self.ids[k]
                sur = self.normal_for(k) if a.kind == "audit" else None
                h = config_hash({"spec": spec_hash, "surrogate": self.ids[sur] if sur is not None else None})
                if self.store.stage_done(rid, stage, h):
                    self.log.count(stage, "skipped")
                    self.log(
                        f"analysis {a.kind} {pos + 1}/{len(targets)} {_describe(pr)}: done before, skipped"
                    )
                    continue
                self.log(f"analysis {a.kind} {pos + 1}/{len(targets)} {_describe(pr)}")
                t0 = time.perf_counter()
                ctx = AnalysisContext(
                    dataset=pr.dataset,
                    model=self.model(k),
                    test=self.dataset(pr.dataset, "test", pr.config.data_root),
                    train=self.dataset(pr.dataset, "train", pr.config.data_root),
                    surrogate=self.model(sur) if sur is not None else None,
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

    def _scratch(self) -> Path:
        """Where a rank other than 0 lets analyses write their (duplicate) files."""
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"entrobust-rank{distributed.rank()}-"))

    def _store_analysis(self, rid: str, kind: str, res: dict[str, Any], stage: str, h: str) -> None:
        self.store.add_analysis(rid, kind, res)
        self.store.mark_stage(rid, stage, h)
        self.log.count(stage, "ran")


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
) -> ExperimentResult:
    """Run (or resume) ``exp`` in ``workspace``; see the module docstring.

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
        on_stage: called with each stage name as it starts (tests use it to kill at stage edges).
        wait: wait for another process running in the workspace instead of failing.
    """
    from contextlib import ExitStack

    from entrobust.experiments.lock import WorkspaceBusyError, workspace_lock

    log = log if log is not None else Progress()
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
        return _run_experiment(exp, workspace, log, progress, report, report_dir, stages, on_stage)


def _run_experiment(
    exp: Experiment,
    workspace: str | Path,
    log: Progress,
    progress: bool,
    report: bool,
    report_dir: str | Path | None,
    stages: Sequence[str],
    on_stage: Callable[[str], Any] | None,
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
    for name, fn in (("train", r.train_all), ("evaluate", r.evaluate_all), ("analyse", r.analyse_all)):
        if name not in stages:
            continue
        if on_stage is not None:
            on_stage(name)
        t0 = time.perf_counter()
        log(f"== {name} ==")
        fn()
        out.seconds[name] = time.perf_counter() - t0
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
