"""Experiment files (SPEC §6, STYLE rule 9): a study as typed, validated data.

An experiment names datasets × models × defenses (training presets with overrides) × seeds,
the evaluations to run on every trained model, the analyses, and the report. It is a TOML file::

    name = "ru-mnist-cpu"
    description = "RU Table 9 on mnist5k at CPU scale"
    source = "Ju et al. 2020 (RU), Table 9"
    scale = "cpu"                  # preset scale: "cpu", "paper" or "tiny" (= cpu, 1 short epoch)
    datasets = ["mnist5k"]
    models = []                    # empty: each preset's own model
    seeds = [0, 1]

    [overrides]                    # applied to every defense (dotted TrainConfig keys)
    epochs = 3

    [[defense]]
    preset = "ru/normal"
    label = "Normal"               # the column name in tables (default: the preset name)

    [[defense]]
    preset = "ru/pat"
    label = "PAT"
    overrides = { "method.adversary.steps" = 7 }

    [[evaluation]]
    name = "white-box"
    suite = "ru"                   # a suite name or string, see entrobust.evaluation
    mode = "independent"
    max_examples = 500

    [[evaluation]]
    name = "black-box"
    suite = "PGD10-32,PGD10-48"
    transfer = true                # crafted on each defense's surrogate, then transferred
    surrogate = "Normal"

    [analysis.audit]               # analysis kind → its parameters
    eps = 0.3

    [report]
    tables = ["ru-table1"]

Loading validates everything before any work starts (scalars with the typed converter every config
loader uses, :mod:`entrobust.training.convert`): unknown keys, wrong types and unknown
names (presets, datasets, models, suites, analyses, tables) raise
:class:`~entrobust.errors.ConfigError` (or :class:`~entrobust.errors.UnknownNameError`) naming
the file and the key, e.g. ``ru.toml: defense[2].overrides: unknown config key 'epoks'``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrobust.errors import ConfigError, EntrobustError, UnknownNameError
from entrobust.training.convert import convert

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SCALES",
    "TINY_OVERRIDES",
    "AnalysisSpec",
    "DefenseSpec",
    "EvaluationSpec",
    "Experiment",
    "PlannedRun",
    "ReportSpec",
    "experiment_from_dict",
    "load_experiment",
]

#: experiment scales; ``tiny`` is the ``cpu`` preset shrunk by :data:`TINY_OVERRIDES` (CI, demo tests)
SCALES: tuple[str, ...] = ("tiny", "cpu", "paper")

#: what ``scale = "tiny"`` changes in every ``cpu`` preset: one epoch on a small training subset,
#: no validation split (early stopping is meaningless in one epoch), one thread
TINY_OVERRIDES: dict[str, Any] = {
    "epochs": 1,
    "max_train_examples": 256,
    "batch_size": 64,
    "validation.size": 0,
    "threads": 1,
    "checkpoint_every": 1,
}

EVAL_MODES: tuple[str, ...] = ("cascade", "independent")
CHECKPOINTS: tuple[str, ...] = ("last", "best")


# --------------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class DefenseSpec:
    """One defense of the study: a training preset, its overrides and its table label.

    ``datasets`` / ``models`` / ``seeds`` (when given) replace the experiment's lists for this
    defense. ``surrogate`` is the label of the defense whose model crafts this one's black-box
    (transfer) examples (RU §5.1: a Normal model for defenses without AT, PAT for those with).
    """

    preset: str
    label: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    surrogate: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.preset


@dataclass(frozen=True)
class EvaluationSpec:
    """One evaluation run on every (selected) trained model.

    ``suite`` is anything :func:`entrobust.evaluation.get_suite` accepts; ``eps`` the ε values
    (empty: the suite's default for the dataset); ``mode`` cascade (worst case, each attack only on
    points still robust) or independent (each row on every clean-correct point — the papers'
    per-row tables). ``transfer = true`` makes it a black-box evaluation: each row's adversarial
    examples are crafted on the surrogate model and then classified by the target.
    ``only`` restricts it to some defense labels; ``checkpoint`` picks the last or the best
    (validation-selected) weights.
    """

    name: str
    suite: str
    eps: tuple[float, ...] = ()
    norm: str = "linf"
    mode: str = "cascade"
    max_examples: int | None = None
    batch_size: int = 250
    seed: int = 0
    transfer: bool = False
    surrogate: str | None = None
    only: tuple[str, ...] | None = None
    checkpoint: str = "last"
    per_example: bool = True

    def key(self) -> dict[str, Any]:
        """Everything that changes the numbers (hashed into the stage mark)."""
        d = dataclasses.asdict(self)
        d.pop("only")
        d.pop("per_example")
        return d


@dataclass(frozen=True)
class AnalysisSpec:
    """One analysis (a kind of :data:`entrobust.diagnostics.analysis.ANALYSES`) and its
    parameters."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    only: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ReportSpec:
    """What the report shows: paper tables (names of :data:`entrobust.report.tables.TABLES`,
    empty = every table that has data), plots (empty = all), the claims check."""

    title: str = ""
    tables: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    claims: bool = True


@dataclass(frozen=True)
class Experiment:
    """A whole study; see the module docstring. ``path`` is the file it came from (if any)."""

    name: str
    defenses: tuple[DefenseSpec, ...]
    description: str = ""
    source: str = ""
    scale: str = "cpu"
    datasets: tuple[str, ...] = ("mnist5k",)
    models: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    overrides: dict[str, Any] = field(default_factory=dict)
    evaluations: tuple[EvaluationSpec, ...] = ()
    analyses: tuple[AnalysisSpec, ...] = ()
    report: ReportSpec = field(default_factory=ReportSpec)
    device: str = "auto"
    threads: int | None = None
    path: str | None = None

    def plan(self) -> list[PlannedRun]:
        """Every training run of the study (defense × dataset × model × seed), configs resolved."""
        return plan_runs(self)

    def label_of(self, preset: str) -> str | None:
        for d in self.defenses:
            if d.preset == preset:
                return d.name
        return None


@dataclass(frozen=True)
class PlannedRun:
    """One resolved training run: its label, coordinates and :class:`TrainConfig`."""

    label: str
    preset: str
    dataset: str
    model: str
    seed: int
    config: Any  # entrobust.training.TrainConfig
    defense: DefenseSpec

    @property
    def adversarial(self) -> bool:
        """True when the method trains on adversarial examples (RU's "with AT" group)."""
        return str(self.config.method.adversary.kind) != "none"

    def coords(self) -> tuple[str, str, int]:
        return (self.dataset, self.model, self.seed)


# --------------------------------------------------------------------------------- parsing


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _expect_table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where or 'experiment'}: expected a table, got {type(value).__name__} {value!r}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for k in data:
        if k not in allowed:
            raise ConfigError(
                f"unknown key {_where(where, k)!r}; "
                f"valid keys{' of ' + where if where else ''}: {', '.join(allowed)}"
            )


def _str(value: Any, where: str, *, empty: bool = False) -> str:
    out: str = convert(str, value, where)
    if not empty and not out.strip():
        raise ConfigError(f"{where}: must not be empty")
    return out


def _int(value: Any, where: str, *, minimum: int | None = None) -> int:
    out: int = convert(int, value, where)
    if minimum is not None and out < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {out}")
    return out


def _float(value: Any, where: str) -> float:
    out: float = convert(float, value, where)
    if out < 0:
        raise ConfigError(f"{where}: must be a finite number >= 0, got {value!r}")
    return out


def _eps(value: Any, where: str) -> float:
    """A number or a fraction string such as ``"8/255"``."""
    if isinstance(value, str):
        from entrobust.evaluation.suites import parse_value

        parsed = parse_value(value)
        if isinstance(parsed, str) or parsed is None or isinstance(parsed, bool):
            raise ConfigError(f"{where}: expected a number or a fraction like '8/255', got {value!r}")
        value = parsed
    return _float(value, where)


def _bool(value: Any, where: str) -> bool:
    out: bool = convert(bool, value, where)
    return out


def _list(value: Any, where: str) -> list[Any]:
    return list(convert(tuple[Any, ...], value, where))


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    return tuple(_int(v, f"{where}[{i}]", minimum=0) for i, v in enumerate(_list(value, where)))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"method": {"adversary": {"steps": 7}}}`` → ``{"method.adversary.steps": 7}``; dotted keys
    (``"method.adversary.steps" = 7``) pass through. Tables under ``*kwargs``/``params`` stay whole."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        leaf = key.rsplit(".", 1)[-1]
        if isinstance(v, Mapping) and v and not (leaf.endswith("kwargs") or leaf == "params"):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _overrides(value: Any, where: str) -> dict[str, Any]:
    return _flatten(_expect_table(value, where))


def _defense(data: Any, where: str) -> DefenseSpec:
    d = _expect_table(data, where)
    _check_keys(d, [f.name for f in dataclasses.fields(DefenseSpec)], where)
    if "preset" not in d:
        raise ConfigError(f"{where}: missing key 'preset' (the training preset's name)")
    return DefenseSpec(
        preset=_str(d["preset"], f"{where}.preset"),
        label=_str(d.get("label", ""), f"{where}.label", empty=True),
        overrides=_overrides(d.get("overrides", {}), f"{where}.overrides"),
        datasets=_str_list(d["datasets"], f"{where}.datasets") if "datasets" in d else None,
        models=_str_list(d["models"], f"{where}.models") if "models" in d else None,
        seeds=_int_list(d["seeds"], f"{where}.seeds") if "seeds" in d else None,
        surrogate=_str(d["surrogate"], f"{where}.surrogate") if d.get("surrogate") is not None else None,
    )


def _evaluation(data: Any, where: str) -> EvaluationSpec:
    d = _expect_table(data, where)
    _check_keys(d, [f.name for f in dataclasses.fields(EvaluationSpec)], where)
    for req in ("name", "suite"):
        if req not in d:
            raise ConfigError(f"{where}: missing key {req!r}")
    norm = _str(d.get("norm", "linf"), f"{where}.norm")
    if norm not in ("linf", "l2"):
        raise ConfigError(f"{where}.norm: must be 'linf' or 'l2', got {norm!r}")
    mode = _str(d.get("mode", "cascade"), f"{where}.mode")
    if mode not in EVAL_MODES:
        raise ConfigError(f"{where}.mode: must be one of {', '.join(EVAL_MODES)}, got {mode!r}")
    ck = _str(d.get("checkpoint", "last"), f"{where}.checkpoint")
    if ck not in CHECKPOINTS:
        raise ConfigError(f"{where}.checkpoint: must be one of {', '.join(CHECKPOINTS)}, got {ck!r}")
    eps = tuple(_eps(v, f"{where}.eps[{i}]") for i, v in enumerate(_list(d.get("eps", []), f"{where}.eps")))
    return EvaluationSpec(
        name=_str(d["name"], f"{where}.name"),
        suite=_str(d["suite"], f"{where}.suite"),
        eps=eps,
        norm=norm,
        mode=mode,
        max_examples=_int(d["max_examples"], f"{where}.max_examples", minimum=1)
        if d.get("max_examples")
        else None,
        batch_size=_int(d.get("batch_size", 250), f"{where}.batch_size", minimum=1),
        seed=_int(d.get("seed", 0), f"{where}.seed", minimum=0),
        transfer=_bool(d.get("transfer", False), f"{where}.transfer"),
        surrogate=_str(d["surrogate"], f"{where}.surrogate") if d.get("surrogate") is not None else None,
        only=_str_list(d["only"], f"{where}.only") if "only" in d else None,
        checkpoint=ck,
        per_example=_bool(d.get("per_example", True), f"{where}.per_example"),
    )


def _analyses(data: Any, where: str) -> tuple[AnalysisSpec, ...]:
    from entrobust.diagnostics.analysis import analysis_kind

    d = _expect_table(data, where)
    out: dict[str, AnalysisSpec] = {}
    for kind, params in d.items():
        w = f"{where}.{kind}"
        p = dict(_expect_table(params, w))
        only = _str_list(p.pop("only"), f"{w}.only") if "only" in p else None
        name = analysis_kind(str(kind), w)
        if name in out:
            raise ConfigError(f"{w}: analysis {name!r} is given twice (once under its old name)")
        out[name] = AnalysisSpec(kind=name, params=p, only=only)
    return tuple(out.values())


def _report(data: Any, where: str) -> ReportSpec:
    d = _expect_table(data, where)
    _check_keys(d, [f.name for f in dataclasses.fields(ReportSpec)], where)
    return ReportSpec(
        title=_str(d.get("title", ""), f"{where}.title", empty=True),
        tables=_str_list(d.get("tables", []), f"{where}.tables"),
        plots=_str_list(d.get("plots", []), f"{where}.plots"),
        claims=_bool(d.get("claims", True), f"{where}.claims"),
    )


_TOP = (
    "name", "description", "source", "scale", "datasets", "models", "seeds", "overrides", "defense",
    "evaluation", "analysis", "report", "device", "threads",
)  # fmt: skip


def experiment_from_dict(
    data: Mapping[str, Any], *, path: str | None = None, check_names: bool = True
) -> Experiment:
    """Build and validate an :class:`Experiment` from plain data (a parsed TOML document).

    With ``check_names`` (default) every preset, dataset, model, suite, analysis and table name is
    looked up in its registry and every defense's training configuration is resolved, so a typo
    fails here, before any training starts. Errors name the key (and the file, via
    :func:`load_experiment`).
    """
    d = _expect_table(data, "")
    _check_keys(d, _TOP, "")
    if "name" not in d:
        raise ConfigError("missing key 'name' (the experiment's name)")
    if "defense" not in d:
        raise ConfigError("missing [[defense]] entries: an experiment trains at least one defense")
    scale = _str(d.get("scale", "cpu"), "scale")
    if scale not in SCALES:
        raise ConfigError(f"scale: must be one of {', '.join(SCALES)}, got {scale!r}")
    defenses = tuple(_defense(v, f"defense[{i}]") for i, v in enumerate(_list(d["defense"], "defense")))
    if not defenses:
        raise ConfigError("defense: an experiment trains at least one defense")
    defenses = _resolve_labels(defenses, check_names)
    labels = [x.name for x in defenses]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"defense: label {dup[0]!r} is used twice; give each defense its own label")
    evaluations = tuple(
        _evaluation(v, f"evaluation[{i}]") for i, v in enumerate(_list(d.get("evaluation", []), "evaluation"))
    )
    names = [e.name for e in evaluations]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ConfigError(f"evaluation: name {dup[0]!r} is used twice")
    threads = d.get("threads")
    exp = Experiment(
        name=_str(d["name"], "name"),
        description=_str(d.get("description", ""), "description", empty=True),
        source=_str(d.get("source", ""), "source", empty=True),
        scale=scale,
        datasets=_str_list(d.get("datasets", ["mnist5k"]), "datasets"),
        models=_str_list(d.get("models", []), "models"),
        seeds=_int_list(d.get("seeds", [0]), "seeds"),
        overrides=_overrides(d.get("overrides", {}), "overrides"),
        defenses=defenses,
        evaluations=evaluations,
        analyses=_analyses(d.get("analysis", {}), "analysis"),
        report=_report(d.get("report", {}), "report"),
        device=_str(d.get("device", "auto"), "device"),
        threads=_int(threads, "threads", minimum=1) if threads is not None else None,
        path=path,
    )
    if not exp.datasets:
        raise ConfigError("datasets: name at least one dataset")
    if not exp.seeds:
        raise ConfigError("seeds: give at least one seed")
    _check_references(exp)
    if check_names:
        validate_names(exp)
    return exp


def _resolve_labels(defenses: tuple[DefenseSpec, ...], check_names: bool) -> tuple[DefenseSpec, ...]:
    """Give every defense without a label its preset's title (``ru/pat-entm`` → ``PAT-EntM``), or
    the preset name when two presets share a title. Unknown presets fail here, by key."""
    if not check_names:
        return defenses
    from entrobust.training import PRESETS

    titles: list[str | None] = []
    for i, d in enumerate(defenses):
        if d.preset not in PRESETS:
            raise UnknownNameError(
                f"defense[{i}].preset: unknown preset {d.preset!r}; valid: {', '.join(_preset_names())}"
            )
        titles.append(None if d.label else PRESETS.get(d.preset).title)
    taken = [d.label for d in defenses if d.label]
    out = []
    for d, title in zip(defenses, titles, strict=True):
        if title is None:
            out.append(d)
            continue
        clash = taken.count(title) > 0 or titles.count(title) > 1
        out.append(dataclasses.replace(d, label=d.preset if clash else title))
    return tuple(out)


def _check_references(exp: Experiment) -> None:
    labels = {d.name for d in exp.defenses}
    valid = ", ".join(sorted(labels))
    for i, d in enumerate(exp.defenses):
        if d.surrogate is not None and d.surrogate not in labels:
            raise ConfigError(f"defense[{i}].surrogate: no defense labelled {d.surrogate!r}; labels: {valid}")
    for i, e in enumerate(exp.evaluations):
        for j, lab in enumerate(e.only or ()):
            if lab not in labels:
                raise ConfigError(f"evaluation[{i}].only[{j}]: no defense labelled {lab!r}; labels: {valid}")
        if e.surrogate is not None and e.surrogate not in labels:
            raise ConfigError(
                f"evaluation[{i}].surrogate: no defense labelled {e.surrogate!r}; labels: {valid}"
            )
        covered = [d for d in exp.defenses if e.only is None or d.name in e.only]
        if e.transfer and e.surrogate is None and not any(d.surrogate for d in covered):
            raise ConfigError(
                f"evaluation[{i}]: a transfer evaluation needs 'surrogate' (or a surrogate on the defenses "
                "it covers; defenses without one are skipped)"
            )
    for i, a in enumerate(exp.analyses):
        for j, lab in enumerate(a.only or ()):
            if lab not in labels:
                raise ConfigError(f"analysis.{a.kind}.only[{j}]: no defense labelled {lab!r}")
        del i


def _renamed(exc: EntrobustError, where: str) -> EntrobustError:
    cls = UnknownNameError if isinstance(exc, UnknownNameError) else ConfigError
    return cls(f"{where}: {exc}")


def validate_names(exp: Experiment) -> None:
    """Look every name up in its registry and resolve every training config (see
    :func:`experiment_from_dict`)."""
    from entrobust.data import DATASETS
    from entrobust.diagnostics.analysis import ANALYSES
    from entrobust.evaluation import get_suite
    from entrobust.evaluation.suites import check_suite
    from entrobust.models import MODELS
    from entrobust.report.tables import TABLES

    for i, name in enumerate(exp.datasets):
        if name not in DATASETS:
            raise UnknownNameError(
                f"datasets[{i}]: unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS.names()))}"
            )
    for i, name in enumerate(exp.models):
        if name not in MODELS:
            raise UnknownNameError(
                f"models[{i}]: unknown model {name!r}; valid: {', '.join(sorted(MODELS.names()))}"
            )
    all_datasets = ", ".join(sorted(DATASETS.names()))
    all_models = ", ".join(sorted(MODELS.names()))
    for i, dfn in enumerate(exp.defenses):
        for j, name in enumerate(dfn.datasets or ()):
            if name not in DATASETS:
                raise UnknownNameError(
                    f"defense[{i}].datasets[{j}]: unknown dataset {name!r}; valid: {all_datasets}"
                )
        for j, name in enumerate(dfn.models or ()):
            if name not in MODELS:
                raise UnknownNameError(
                    f"defense[{i}].models[{j}]: unknown model {name!r}; valid: {all_models}"
                )
    for i, ev in enumerate(exp.evaluations):
        covered = [d for d in exp.defenses if ev.only is None or d.name in ev.only]
        for ds in dict.fromkeys(ds for d in covered for ds in d.datasets or exp.datasets):
            try:  # every attack is built (not run) with its options, at every ε it will run at
                suite = get_suite(ev.suite, ds)
                check_suite(suite, ev.eps or suite.default_eps(ds) or (), ev.norm)
            except EntrobustError as exc:
                raise _renamed(exc, f"evaluation[{i}].suite ({ev.suite!r} on {ds})") from None
    for a in exp.analyses:
        if a.kind not in ANALYSES:
            raise UnknownNameError(
                f"analysis.{a.kind}: unknown analysis {a.kind!r}; valid: {', '.join(ANALYSES.names())}"
            )
        try:
            ANALYSES.get(a.kind).validate(a.params)
        except EntrobustError as exc:
            raise _renamed(exc, f"analysis.{a.kind}") from None
    for i, t in enumerate(exp.report.tables):
        if t not in TABLES:
            raise UnknownNameError(
                f"report.tables[{i}]: unknown table {t!r}; valid: {', '.join(TABLES.names())}"
            )
    plan_runs(exp)  # resolves every preset × dataset × model with its overrides


def _preset_names() -> list[str]:
    from entrobust.training import PRESETS

    return sorted(PRESETS.names())


def resolve_config(
    exp: Experiment, defense: DefenseSpec, dataset: str, model: str | None, seed: int, where: str
) -> Any:
    """The :class:`~entrobust.training.TrainConfig` of one run, by the one resolver
    (:func:`entrobust.training.resolve_config`): preset at the experiment's scale, then the
    tiny-scale overrides, the experiment's overrides, the defense's overrides, and finally model,
    seed, device and threads."""
    from entrobust.training import PRESETS
    from entrobust.training import resolve_config as resolve

    if defense.preset not in PRESETS:
        raise UnknownNameError(
            f"{where}.preset: unknown preset {defense.preset!r}; valid: {', '.join(_preset_names())}"
        )
    what = f"(preset {defense.preset!r}, dataset {dataset!r})"
    final: dict[str, Any] = {"seed": seed, "device": exp.device}
    if model is not None:
        final["model"] = model
    if exp.threads is not None:
        final["threads"] = exp.threads
    return resolve(
        defense.preset,
        dataset=dataset,
        scale="cpu" if exp.scale == "tiny" else exp.scale,
        layers=[
            (f"{where} {what}", TINY_OVERRIDES if exp.scale == "tiny" else {}),
            (f"overrides {what}", exp.overrides),
            (f"{where}.overrides {what}", defense.overrides),
            (f"{where} {what}", final),
        ],
        where=f"{where} {what}",
    )


def plan_runs(exp: Experiment) -> list[PlannedRun]:
    """Every training run of ``exp`` in a stable order (defense, dataset, model, seed)."""
    runs: list[PlannedRun] = []
    for i, d in enumerate(exp.defenses):
        datasets = d.datasets or exp.datasets
        models: Sequence[str | None] = d.models or exp.models or (None,)
        seeds = d.seeds or exp.seeds
        for ds in datasets:
            for m in models:
                for s in seeds:
                    cfg = resolve_config(exp, d, ds, m, s, f"defense[{i}]")
                    runs.append(PlannedRun(d.name, d.preset, ds, str(cfg.model), s, cfg, d))
    return runs


def load_experiment(path: str | Path, *, check_names: bool = True) -> Experiment:
    """Read and validate an experiment TOML file; every error message starts with the file name."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read experiment file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return experiment_from_dict(data, path=str(p), check_names=check_names)
    except EntrobustError as exc:
        cls = UnknownNameError if isinstance(exc, UnknownNameError) else ConfigError
        raise cls(f"{p}: {exc}") from None
