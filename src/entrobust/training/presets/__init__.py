"""Named training recipes of the four papers (SPEC §4 "Presets"), registered in :data:`PRESETS`.

Names are lowercase kebab with a paper prefix: ``ru/…`` (Ju et al. 2020, "Rethinking
Uncertainty"), ``atent/…`` (Jagatap et al. 2021), ``minmax/…`` (Shen, Chen & Wang), ``kanai/…``
(Kanai et al., smoothness of adversarial training). Each preset carries

* its source (table and appendix of the paper),
* the paper's hyperparameters per dataset (``scale="paper"``; full-size models, GPU-sized runs),
* a ``cpu`` variant on ``mnist5k`` with a small CNN (``scale="cpu"``, the default for
  ``mnist5k``/``mnist``): seconds for standard training; for adversarial training the converged
  recipe below (minutes of CPU).

The recipes are data: one TOML file per paper next to this module (``ru.toml``, ``atent.toml``,
``minmax.toml``, ``kanai.toml``), every value commented with the table, appendix or script it
comes from. A file holds ``paper``, ``source`` and ``datasets`` (the defaults of its presets), a
``[base]`` layer shared by all its presets, named ``[layers.NAME]`` that presets opt into with
``layers = [...]``, and one ``[preset."NAME"]`` per recipe (``title``, ``key``, ``notes`` and
optionally ``source`` / ``datasets`` beside its own config keys). A layer is
:class:`~entrobust.training.config.TrainConfig` keys plus two optional sub-tables: ``paper``
(keys for every paper dataset, and a ``paper.<dataset>`` table per dataset) and ``cpu``.
The config of a preset at (``dataset``, ``scale``) is the deep merge, in this order, of::

    base, base.paper, base.paper.<dataset>        (or: base, base.cpu)
    each named layer the same way
    the preset itself the same way

Tables merge key by key; any other value (lists included) replaces. A string ``"a/b"`` (e.g.
``"8/255"``) is the number a / b.

``preset_config("ru/pat-entm", dataset="cifar10")`` returns the validated
:class:`~entrobust.training.config.TrainConfig`; ``overrides`` (``{"optimizer.lr": 0.05}`` or
``["epochs=3"]``) are applied last. Choices the papers leave open are stated in each preset's
``notes`` and in ``docs/training.md``.

CPU variants, common choices: without adversarial training ``cnn4`` (RU's MNIST network;
``lenet`` for the Min-Max paper), batch 64, SGD lr 0.05 (momentum 0.9), 3–4 epochs; validation
on 300 held-out examples with PGD-10. The adversarially trained cpu variants follow the converged
cpu recipe (docs/training.md, "Converged cpu recipes"): SmallCNN (RU: cnn4, Min-Max: LeNet, the
papers' networks), Adam 1e-3, batch 128, 10-step attacks, ε ramped linearly from 1/3 of its value
over 3 epochs (``schedule.eps_warmup_epochs`` / ``eps_warmup_start``; pure adversarial training
at ε = 0.3 stays at chance for thousands of iterations, Madry et al. train 100k) and tens of
epochs, minutes of CPU each (the demo keeps its own lighter budget,
``entrobust.experiments.demo.DEMO_RECIPES``). Entropy-SGD cpu variants use L = 5, η = 1 (the
first regime of Chaudhari's Lua MNIST schedule), Kanai's η′ = 0.1, γ = 0.03, α = 0.75,
Nesterov 0.9.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from entrobust.errors import ConfigError, EntrobustError, UnknownNameError
from entrobust.registry import Registry
from entrobust.training.config import (
    TrainConfig,
    config_from_dict,
    parse_override,
    set_path,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CPU_DATASETS",
    "PRESETS",
    "SCALES",
    "Preset",
    "load_presets",
    "preset_config",
    "preset_table",
    "resolve_config",
]

SCALES: tuple[str, ...] = ("paper", "cpu")
#: datasets the ``cpu`` variants run on (digits is only for tests: the models need 28×28)
CPU_DATASETS: tuple[str, ...] = ("mnist5k", "mnist")
#: the data files, one per paper, in registration order
FILES: tuple[str, ...] = ("ru", "atent", "minmax", "kanai")

Config = dict[str, Any]

_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_PRESET_META = ("title", "source", "notes", "key", "datasets", "layers")
_FRACTION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*")


@dataclass(frozen=True)
class Preset:
    """A paper's training recipe: ``paper`` configs per dataset and a ``cpu`` variant.

    ``layers`` are its data layers in merge order (base, named layers, the preset's own), each
    split into the parts ``all``, ``paper``, ``paper.<dataset>`` and ``cpu``; :meth:`config_dict`
    merges them (see the module docstring).
    """

    name: str
    title: str  # the paper's name for the method, e.g. "PAT-EntM"
    paper: str  # "RU", "ATENT", "Min-Max", "Kanai"
    source: str  # tables / appendix the numbers come from
    paper_datasets: tuple[str, ...]
    layers: tuple[Mapping[str, Config], ...]
    notes: str = ""
    key: Mapping[str, Any] = field(default_factory=dict)  # key hyperparameters for tables

    @property
    def datasets(self) -> list[str]:
        """Datasets with paper hyperparameters."""
        return list(self.paper_datasets)

    @property
    def paper_configs(self) -> dict[str, Config]:
        """Raw ``paper`` config dict per dataset (see :meth:`config_dict`)."""
        return {d: self.config_dict(d, "paper") for d in self.paper_datasets}

    @property
    def cpu(self) -> Config:
        """Raw ``cpu`` config dict (see :meth:`config_dict`)."""
        return self.config_dict(None, "cpu")

    def config_dict(self, dataset: str | None = None, scale: str | None = None) -> Config:
        """The raw config dict (before validation) for ``dataset`` at ``scale``."""
        if scale is not None and scale not in SCALES:
            raise ConfigError(f"unknown preset scale {scale!r}; valid: {', '.join(SCALES)}")
        if scale is None:
            scale = "cpu" if dataset is None or dataset in CPU_DATASETS else "paper"
        if scale == "paper":
            if dataset is None:
                dataset = self.paper_datasets[0]
            if dataset not in self.paper_datasets:
                raise ConfigError(
                    f"preset {self.name!r} has paper hyperparameters for {', '.join(self.datasets)}, "
                    f"not {dataset!r}; use scale='cpu' or another dataset"
                )
        data: Config = {}
        for layer in self.layers:
            parts = ("all", "cpu") if scale == "cpu" else ("all", "paper", f"paper.{dataset}")
            for part in parts:
                data = _merge(data, layer.get(part, {}))
        if scale == "paper" or dataset is not None:
            data["dataset"] = dataset
        data["preset"] = self.name
        return data

    def config(
        self,
        dataset: str | None = None,
        scale: str | None = None,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
    ) -> TrainConfig:
        """Validated :class:`TrainConfig` (see :func:`preset_config`)."""
        cfg = config_from_dict(self.config_dict(dataset, scale))
        return _apply(cfg, overrides) if overrides else cfg


def _merge(into: Config, layer: Mapping[str, Any]) -> Config:
    """Deep merge: tables key by key, anything else replaced (a new dict; inputs untouched)."""
    out = dict(into)
    for k, v in layer.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _numbers(value: Any) -> Any:
    """``"8/255"`` → 8 / 255, recursively; other values unchanged."""
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        m = _FRACTION.fullmatch(value)
        if m:
            num, den = (float(g) if "." in g else int(g) for g in m.groups())
            return num / den
    return value


def _layer(table: Any, datasets: Sequence[str], where: str) -> dict[str, Config]:
    """A layer table split into its parts ``all``, ``paper``, ``paper.<dataset>`` and ``cpu``;
    keys that are neither TrainConfig keys nor those sub-tables raise :class:`ConfigError`."""

    def config(t: Any, w: str, subtables: Sequence[str]) -> Config:
        if not isinstance(t, Mapping):
            raise ConfigError(f"{w}: expected a table, got {t!r}")
        for k in t:
            if k not in _FIELDS and k not in subtables:
                valid = ", ".join(["TrainConfig keys", *subtables])
                raise ConfigError(f"{w}: unknown key {k!r}; valid: {valid}")
        return {k: _numbers(v) for k, v in t.items() if k not in subtables}

    out = {"all": config(table, where, ("paper", "cpu"))}
    if "cpu" in table:
        out["cpu"] = config(table["cpu"], f"{where}.cpu", ())
    if "paper" in table:
        out["paper"] = config(table["paper"], f"{where}.paper", datasets)
        for d in datasets:
            if d in table["paper"]:
                out[f"paper.{d}"] = config(table["paper"][d], f"{where}.paper.{d}", ())
    return out


def _load_file(name: str) -> list[Preset]:
    """The presets of data file ``<name>.toml`` (see the module docstring)."""
    text = resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    where = f"presets/{name}.toml"
    unknown = set(doc) - {"paper", "source", "datasets", "base", "layers", "preset"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key {sorted(unknown)[0]!r}")
    named = doc.get("layers", {})
    out = []
    for pname, spec in doc.get("preset", {}).items():
        w = f"{where}: preset {pname!r}"
        datasets = tuple(spec.get("datasets", doc["datasets"]))
        for layer_name in spec.get("layers", []):
            if layer_name not in named:
                raise ConfigError(f"{w}: unknown layer {layer_name!r}; valid: {', '.join(named)}")
        own = {k: v for k, v in spec.items() if k not in _PRESET_META}
        every = tuple(dict.fromkeys([*doc["datasets"], *datasets]))
        layers = [
            _layer(doc.get("base", {}), every, f"{where}: base"),
            *(_layer(named[n], every, f"{where}: layers.{n}") for n in spec.get("layers", [])),
            _layer(own, every, w),
        ]
        out.append(
            Preset(
                name=pname,
                title=spec["title"],
                paper=doc["paper"],
                source=spec.get("source", doc["source"]),
                paper_datasets=datasets,
                layers=tuple(layers),
                notes=spec.get("notes", ""),
                key=dict(spec.get("key", {})),
            )
        )
    return out


def load_presets(files: Sequence[str] = FILES) -> list[Preset]:
    """Every preset of the data ``files`` (names without ``.toml``), in file order."""
    return [p for name in files for p in _load_file(name)]


PRESETS: Registry[Preset] = Registry("preset")
for _preset in load_presets():
    PRESETS.register(_preset.name, _preset, help=f"{_preset.title} — {_preset.source}")


Overrides = Mapping[str, Any] | Sequence[str]
#: one resolution layer: (label for error messages, ``{"dotted.key": value}`` or ``["key=value"]``)
Layer = tuple[str, Overrides]


def resolve_config(
    preset: str | None = None,
    *,
    base: TrainConfig | None = None,
    dataset: str | None = None,
    scale: str | None = None,
    layers: Sequence[Layer] = (),
    where: str = "",
) -> TrainConfig:
    """The one resolver of a training config, used by the API, ``entrobust train`` and experiments.

    Starts from ``preset`` at (``dataset``, ``scale``) — see :func:`preset_config` — or from
    ``base`` (a config file, a resumed run; default :class:`TrainConfig`), then applies each
    ``(label, overrides)`` layer in order. A layer that changes ``model`` without setting
    ``model_kwargs`` resets them (the preset's kwargs belong to its own model). Every step is
    validated and bound (:func:`~entrobust.training.method.bind_method`), so a model that cannot
    train the method fails here. Errors keep their class and are prefixed with ``where`` (the
    preset step) or the layer's label.
    """
    if preset is not None and base is not None:
        raise ConfigError("give either a preset or a base config, not both")
    try:
        cfg = PRESETS.get(preset).config(dataset, scale) if preset is not None else base or TrainConfig()
    except EntrobustError as exc:
        raise _prefixed(exc, where) from None
    for label, overrides in layers:
        if not overrides:
            continue
        try:
            cfg = _apply(cfg, overrides)
        except EntrobustError as exc:
            raise _prefixed(exc, label) from None
    return cfg


def _apply(cfg: TrainConfig, overrides: Overrides) -> TrainConfig:
    """:func:`~entrobust.training.config.apply_overrides`, but resetting ``model_kwargs`` when the
    model changes and they are not set."""
    pairs = (
        list(overrides.items()) if isinstance(overrides, Mapping) else list(map(parse_override, overrides))
    )
    keys = [k for k, _ in pairs]
    if "model" in keys and "model_kwargs" not in keys:
        model = [v for k, v in pairs if k == "model"][-1]
        if model != cfg.model:
            pairs.append(("model_kwargs", {}))
    data = cfg.to_dict()
    for key, value in pairs:
        set_path(data, key, value)
    return config_from_dict(data)


def _prefixed(exc: EntrobustError, label: str) -> EntrobustError:
    if not label:
        return exc
    cls = UnknownNameError if isinstance(exc, UnknownNameError) else ConfigError
    return cls(f"{label}: {exc}")


def preset_config(
    name: str,
    dataset: str | None = None,
    scale: str | None = None,
    overrides: Overrides | None = None,
) -> TrainConfig:
    """The :class:`TrainConfig` of preset ``name`` for ``dataset`` at ``scale``.

    ``scale`` is ``"paper"`` (the paper's hyperparameters for ``dataset``) or ``"cpu"`` (the
    small variant); ``None`` picks ``cpu`` for ``mnist5k``/``mnist`` and ``paper`` otherwise.
    ``dataset`` ``None`` means ``mnist5k`` for cpu, the preset's first dataset for paper.
    ``overrides`` are applied last (see :func:`resolve_config`).
    Raises :class:`~entrobust.errors.UnknownNameError` for an unknown preset and
    :class:`ConfigError` for a dataset the preset has no hyperparameters for.
    """
    return resolve_config(name, dataset=dataset, scale=scale, layers=[("", overrides or {})])


def preset_table() -> list[dict[str, Any]]:
    """One row per preset: name, title, paper, source, datasets, key hyperparameters."""
    return [
        {
            "name": p.name,
            "title": p.title,
            "paper": p.paper,
            "source": p.source,
            "datasets": ", ".join(p.datasets),
            "key": ", ".join(f"{k}={v}" for k, v in p.key.items()),
        }
        for p in (PRESETS.get(n) for n in PRESETS.names())
    ]
