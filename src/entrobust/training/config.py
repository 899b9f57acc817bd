"""Typed training configuration (STYLE rule 9): frozen dataclasses, TOML/JSON, ``--set`` overrides.

A :class:`TrainConfig` says everything a run needs: data, model, method (adversary × objective ×
regularizer, :class:`~entrobust.training.method.MethodConfig`), optimizer (with an optional switch
at an epoch, e.g. Entropy-SGD → SGD at 150, Kanai et al. App. F.2), AWP, schedule, validation
and early stopping, seed and device. ``TrainConfig.from_dict`` validates: an unknown key or a
value of the wrong type raises :class:`~entrobust.errors.ConfigError` naming the dotted key
(``optimizer.lr``); ``to_dict`` is its inverse; ``to_toml`` / :func:`load_config` store and read
it; :func:`apply_overrides` applies ``key.sub=value`` strings as the CLI's ``--set`` does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrobust.accel import AccelConfig
from entrobust.errors import ConfigError, EntrobustError
from entrobust.training.convert import dataclass_from
from entrobust.training.method_config import MethodConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "AWPConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "ValidationConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_override",
    "to_toml",
]

SCHEDULES: tuple[str, ...] = ("step", "cosine", "constant")


def _positive(name: str, value: float, *, strict: bool = True) -> None:
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{name} must be a number, got nan")
    if (strict and not value > 0) or (not strict and not value >= 0):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} 0, got {value!r}")


# --------------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer ``name`` with optional warm-up and switch phases.

    ``kwargs`` go to the optimizer's factory (Entropy-SGD's ``L``, ``gamma``, ``noise``,
    ``inner_lr``, ``alpha``, ``scoping``, ``outer``...; Adam's ``betas``). Phases (0-based epochs):

    * ``epoch < warmup_epochs``: plain SGD with the same lr / momentum / weight decay / nesterov
      ("we did not apply EntropySGD and AWP for 5 (10) epochs", Kanai et al. App. E.3, F.2);
    * then ``name``;
    * ``epoch >= switch_epoch``: ``switch_to`` with ``switch_kwargs`` (Entropy-SGD → SGD at 150,
      "+AWP+EnSGD(tuned)", Kanai et al. App. F.2), at base rate ``switch_lr`` (``None`` = ``lr``).

    Each phase starts with a fresh optimizer state; the learning-rate schedule runs on.
    """

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    warmup_epochs: int = 0
    switch_to: str | None = None
    switch_epoch: int | None = None
    switch_kwargs: dict[str, Any] = field(default_factory=dict)
    switch_lr: float | None = None

    def __post_init__(self) -> None:
        _positive("optimizer.lr", self.lr, strict=False)
        if self.switch_lr is not None:
            _positive("optimizer.switch_lr", self.switch_lr, strict=False)
            if self.switch_to is None:
                raise ConfigError("optimizer.switch_lr needs optimizer.switch_to")
        _positive("optimizer.momentum", self.momentum, strict=False)
        _positive("optimizer.weight_decay", self.weight_decay, strict=False)
        _positive("optimizer.warmup_epochs", self.warmup_epochs, strict=False)
        if (self.switch_to is None) != (self.switch_epoch is None):
            raise ConfigError("optimizer.switch_to and optimizer.switch_epoch must be given together")
        if self.switch_epoch is not None and self.switch_epoch <= self.warmup_epochs:
            raise ConfigError(
                f"optimizer.switch_epoch must be > warmup_epochs = {self.warmup_epochs}, "
                f"got {self.switch_epoch}"
            )
        # optimizer names and kwargs are checked by the binding step (entrobust.training.bind)

    # phases: 0 = warm-up (plain SGD), 1 = main, 2 = after the switch
    def phases(self) -> list[int]:
        """The phases this config uses, in order."""
        return [
            p for p, on in ((0, self.warmup_epochs > 0), (1, True), (2, self.switch_to is not None)) if on
        ]

    def phase_at(self, epoch: int) -> int:
        """Phase of (0-based) ``epoch``."""
        if epoch < self.warmup_epochs:
            return 0
        if self.switch_epoch is not None and epoch >= self.switch_epoch:
            return 2
        return 1

    def base_lr(self, phase: int) -> float:
        """Base learning rate (before the schedule) in ``phase``."""
        return self.switch_lr if phase == 2 and self.switch_lr is not None else self.lr

    def phase_name(self, phase: int) -> str:
        """The optimizer name used in ``phase``."""
        return self.phase_spec(phase)[0]

    def phase_spec(self, phase: int) -> tuple[str, dict[str, Any]]:
        if phase == 0:
            return "sgd", {}
        if phase == 2:
            assert self.switch_to is not None
            return self.switch_to, dict(self.switch_kwargs)
        return self.name, dict(self.kwargs)

    def _make(self, name: str, kwargs: Mapping[str, Any], params: Any) -> Any:
        from entrobust.training.optim import build_optimizer

        return build_optimizer(
            name,
            params,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            nesterov=self.nesterov,
            **dict(kwargs),
        )

    def build(self, params: Any, phase: int = 1) -> Any:
        """The optimizer of ``phase`` for ``params``."""
        name, kwargs = self.phase_spec(phase)
        return self._make(name, kwargs, params)


@dataclass(frozen=True)
class AWPConfig:
    """Adversarial weight perturbation (:class:`~entrobust.training.optim.AWP`)."""

    gamma: float = 0.01
    warmup: int = 0
    proxy_lr: float = 0.01

    def __post_init__(self) -> None:
        _positive("awp.gamma", self.gamma, strict=False)
        _positive("awp.warmup", self.warmup, strict=False)
        _positive("awp.proxy_lr", self.proxy_lr)


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule as a factor of the base lr, a pure function of the epoch.

    ``step``: multiply by ``factor`` at each of ``milestones`` (0-based epochs at which the new
    rate starts; RU Table 5 "decay epoch 20" → ``milestones = [20]``); ``cosine``: half-cosine
    from 1 to 0 over ``epochs``; ``constant``.

    ``eps_warmup_epochs`` ramps the adversary's ε (and its step size) linearly from
    ``eps_warmup_start`` × its value (default 0: from ~0) to its value over that many epochs,
    batch by batch (0 = off, every paper preset). Pure adversarial training at ε = 0.3 on MNIST
    sits at chance for thousands of iterations before it starts learning (Madry et al. train 100k
    iterations); the ``cpu`` presets use the ramp so they learn in seconds. ``eps_warmup_start``
    is a fraction of ε, e.g. 1/3 for the ramp 0.1 → 0.3 of the converged cpu PGD-AT recipe
    (docs/training.md, "Converged cpu recipes"). Quantized to 1 % steps.
    """

    kind: str = "step"
    milestones: tuple[int, ...] = ()
    factor: float = 0.1
    eps_warmup_epochs: float = 0.0
    eps_warmup_start: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ConfigError(f"schedule.kind must be one of {', '.join(SCHEDULES)}, got {self.kind!r}")
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError(
                f"schedule.milestones must be increasing epochs >= 1, got {list(self.milestones)}"
            )
        _positive("schedule.factor", self.factor)
        _positive("schedule.eps_warmup_epochs", self.eps_warmup_epochs, strict=False)
        if not 0.0 <= self.eps_warmup_start <= 1.0:
            raise ConfigError(
                f"schedule.eps_warmup_start must be a fraction of eps in [0, 1], got {self.eps_warmup_start}"
            )

    def eps_factor(self, progress: float) -> float:
        """Multiplier of the adversary's ε after ``progress`` epochs (fractional)."""
        if self.eps_warmup_epochs <= 0 or progress >= self.eps_warmup_epochs:
            return 1.0
        start = self.eps_warmup_start
        linear = start + (1.0 - start) * progress / self.eps_warmup_epochs
        return min(1.0, max(0.01, math.ceil(100.0 * linear) / 100.0))

    def factor_at(self, epoch: int, epochs: int) -> float:
        """Multiplier of the base learning rate during (0-based) ``epoch`` of ``epochs``."""
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
        return float(self.factor ** sum(1 for m in self.milestones if epoch >= m))


@dataclass(frozen=True)
class ValidationConfig:
    """Held-out validation and early stopping on **validation robust accuracy** (Rice et al. 2020).

    ``size`` examples are carved (class-stratified, seeded by ``split_seed``) from the training
    split; 0 disables validation (then "best" = "last"). Robust accuracy uses ``attack``
    (a registered attack name, default PGD) with ``steps`` steps in the threat model
    (``norm``, ``eps``); ``None`` means "the method's training threat model", or the
    dataset's usual one (:func:`entrobust.data.default_threat`: ℓ∞ 0.3 on MNIST-like data, 0.1 on
    the 8×8 ``digits``, 8/255 on colour images) for methods without an
    adversary. ``step_size`` ``None`` = 2.5·ε/steps (Madry et al.). ``patience`` validations
    without improvement stop training (``None`` = never). ``robust_examples`` caps the examples
    attacked (the clean accuracy uses all of them; 0 skips the attack). ``metric`` selects the
    "best" checkpoint and drives early stopping: ``robust`` (validation robust accuracy), ``clean``,
    or ``auto`` = robust for methods with an adversary, clean for the others.
    """

    size: int = 0
    attack: str = "pgd"
    norm: str | None = None
    eps: float | None = None
    steps: int = 10
    step_size: float | None = None
    every: int = 1
    patience: int | None = None
    split_seed: int = 0
    batch_size: int = 500
    robust_examples: int | None = None
    metric: str = "auto"

    def __post_init__(self) -> None:
        _positive("validation.size", self.size, strict=False)
        if self.metric not in ("auto", "robust", "clean"):
            raise ConfigError(f"validation.metric must be auto, robust or clean, got {self.metric!r}")
        if self.norm is not None and self.norm not in ("linf", "l2"):
            raise ConfigError(f"validation.norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.eps is not None:
            _positive("validation.eps", self.eps, strict=False)
        _positive("validation.steps", self.steps)
        if self.step_size is not None:
            _positive("validation.step_size", self.step_size)
        _positive("validation.every", self.every)
        if self.patience is not None:
            _positive("validation.patience", self.patience)
        _positive("validation.split_seed", self.split_seed, strict=False)
        _positive("validation.batch_size", self.batch_size)
        if self.robust_examples is not None:
            _positive("validation.robust_examples", self.robust_examples, strict=False)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; see the module docstring.

    ``max_train_examples`` keeps a seeded random subset of the training split (tiny runs and
    tests). ``finetune_from`` starts from a checkpoint's weights (ATENT App. B.3 fine-tuning).
    ``threads`` sets torch's CPU threads (``None`` leaves them). ``preset`` records which preset
    produced the config (informational).

    ``augment`` turns on the dataset's standard augmentation (CIFAR: pad-4 random crop + flip;
    none for MNIST / SVHN). ``translate`` (pixels, default 0) adds random translations for a
    dataset without one: zero-pad ``translate`` pixels and take a random crop of the original size,
    no flip (digits are not mirror-symmetric); it needs ``augment = true`` and is ignored where the
    dataset's standard augmentation already crops.

    Under ``torchrun`` (data parallelism, :mod:`entrobust.distributed`) ``batch_size`` is the
    **global** batch, split evenly over the ranks, so a recipe means the same at any world size.
    ``sync_batchnorm`` converts BatchNorm layers to ``SyncBatchNorm`` (CUDA only) so batch
    statistics span the global batch. ``accel`` holds the speed knobs (bf16 autocast,
    channels-last, ``torch.compile``; :class:`~entrobust.accel.AccelConfig`).
    """

    dataset: str = "mnist5k"
    model: str = "smallcnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    method: MethodConfig = field(default_factory=MethodConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    awp: AWPConfig | None = None
    epochs: int = 1
    batch_size: int = 128
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    augment: bool = True
    translate: int = 0
    data_root: str | None = None
    max_train_examples: int | None = None
    finetune_from: str | None = None
    checkpoint_every: int = 1
    accel: AccelConfig = field(default_factory=AccelConfig)
    sync_batchnorm: bool = False
    preset: str | None = None

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset must be a dataset name")
        if not self.model:
            raise ConfigError("model must be a model name")
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("seed", self.seed, strict=False)
        if self.threads is not None:
            _positive("threads", self.threads)
        if self.max_train_examples is not None:
            _positive("max_train_examples", self.max_train_examples)
        _positive("checkpoint_every", self.checkpoint_every)
        from entrobust.data.augment import check_translate

        check_translate(self.translate)
        if self.translate and not self.augment:
            raise ConfigError("translate needs augment = true (translate > 0 is an augmentation)")
        if self.device.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}")

    # ----------------------------------------------------------------- conversions
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build and validate from plain data; errors name the dotted key."""
        return config_from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``TrainConfig.from_dict(c.to_dict()) == c``.

        ``translate`` is left out at its default 0, so a config that does not use it reads, hashes
        and resumes exactly as one written before the key existed.
        """
        data = _to_plain(self)
        if not self.translate:
            del data["translate"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_toml(self) -> str:
        return to_toml(self.to_dict())

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: Mapping[str, Any] | Sequence[str]) -> TrainConfig:
        """A copy with dotted-key overrides applied (see :func:`apply_overrides`)."""
        return apply_overrides(self, overrides)


# --------------------------------------------------------------------------------- parsing


def _method_from(value: Any) -> MethodConfig:
    """The ``method`` table as a :class:`MethodConfig` (not yet bound); errors name ``method.<key>``."""
    from entrobust.training.bind import method_error

    if isinstance(value, MethodConfig):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"method: expected a table/dict, got {type(value).__name__} {value!r}")
    try:
        out: MethodConfig = dataclass_from(MethodConfig, value, "method")
    except EntrobustError as exc:
        raise ConfigError(method_error(str(exc))) from None
    return out


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Validated :class:`TrainConfig` from plain data (TOML / JSON / dict), bound to the registries
    (:func:`entrobust.training.bind.bind_config`)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a training config must be a table/dict, got {type(data).__name__}")
    data = dict(data)
    if "method" in data:
        data["method"] = _method_from(data["method"])
    out: TrainConfig = dataclass_from(TrainConfig, data)
    from entrobust.training.bind import bind_config  # the binding step (registries)

    bind_config(out)
    return out


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        if to_dict is not None and not isinstance(obj, TrainConfig):
            return _to_plain(to_dict())
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_to_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------- TOML


def _toml_key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "-_" for c in k) else json.dumps(k)


def _toml_value(v: Any, key: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x, key) for x in v) + "]"
    if isinstance(v, Mapping):
        items = [f"{_toml_key(k)} = {_toml_value(x, key)}" for k, x in v.items() if x is not None]
        return "{" + ", ".join(items) + "}"
    raise ConfigError(f"{key}: cannot write {type(v).__name__} to TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """Serialize nested plain data as TOML (``None`` values are left out: they mean "default")."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], path: list[str]) -> None:
        scalars = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
        if path and (scalars or not tables):
            lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
        for k, v in scalars:
            lines.append(f"{_toml_key(k)} = {_toml_value(v, '.'.join([*path, k]))}")
        for k, v in tables:
            emit(v, [*path, k])

    emit(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


def load_config(path: str | Path) -> TrainConfig:
    """Read a :class:`TrainConfig` from a ``.toml`` or ``.json`` file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


# --------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"optimizer.lr=0.1"`` → ``("optimizer.lr", 0.1)``.

    The value is read as a TOML value (numbers, ``true``/``false``, ``"strings"``, ``[lists]``,
    ``{inline = "tables"}``); ``none``/``null`` mean None; anything else is a bare string.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    if raw.lower() in ("none", "null"):
        return key, None
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def set_path(data: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in nested plain ``data`` (creating tables on the way)."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a table")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any] | Sequence[str]) -> TrainConfig:
    """Apply ``{"optimizer.lr": 0.1}`` or ``["optimizer.lr=0.1", ...]`` and re-validate.

    Raises :class:`ConfigError` naming the key for unknown keys or wrong types.
    """
    pairs = (
        list(overrides.items()) if isinstance(overrides, Mapping) else [parse_override(o) for o in overrides]
    )
    data = config.to_dict()
    for key, value in pairs:
        set_path(data, key, value)
    return config_from_dict(data)
