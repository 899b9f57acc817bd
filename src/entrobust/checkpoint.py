"""Safe checkpoints: weights in ``safetensors``, metadata in a small JSON file beside them.

A checkpoint ``<stem>`` is two files (SPEC §2):

* ``<stem>.safetensors`` — the model's ``state_dict`` (including the normalization buffers),
  plus optional extra tensors under the ``__extra__.`` prefix;
* ``<stem>.json`` — how to rebuild the model (registry name, kwargs, classes, channels,
  dataset, mean/std), the SHA-256 of the weights file, library and torch versions, creation
  time, and whatever recipe/metrics the caller adds.

Both are written atomically (:mod:`entrobust.io`), the JSON last, so a checkpoint exists only
once it is complete; the hash catches a weights file that was truncated or replaced later.
Loading never unpickles arbitrary objects: ``safetensors`` holds only tensors, and foreign
``.pt``/``.pth`` files go through ``torch.load(weights_only=True)``. A checkpoint for another
architecture or number of classes is refused with a message naming both.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save as _st_save
from torch import Tensor, nn

import entrobust
from entrobust.errors import CheckpointError, ConfigError, EntrobustError
from entrobust.io import atomic_write_bytes, atomic_write_text
from entrobust.models.core import NormalizedModel, create_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "checkpoint_paths",
    "load_checkpoint",
    "load_extra_tensors",
    "load_foreign_weights",
    "load_weights",
    "model_spec",
    "read_checkpoint_metadata",
    "save_checkpoint",
    "unwrap_model",
]

FORMAT = "entrobust-checkpoint"
FORMAT_VERSION = 1
EXTRA_PREFIX = "__extra__."
_RESERVED = frozenset(
    {
        "format",
        "format_version",
        "model",
        "weights",
        "sha256",
        "num_parameters",
        "extra_tensors",
        "entrobust_version",
        "torch_version",
        "created",
    }
)
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "state")
_SHOW = 5  # keys named in an error message

PathLike = str | os.PathLike[str]
Device = str | torch.device


# ---------------------------------------------------------------------------------------------
# paths and model descriptions


def checkpoint_paths(path: PathLike) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths of checkpoint ``path``.

    ``path`` may be the stem (``runs/best``), either file (``runs/best.json``,
    ``runs/best.safetensors``) or a directory (then the stem is ``<dir>/model``). Only these
    two suffixes are stripped, so stems containing dots (``epoch.10``) are kept whole.
    """
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        stem = p / "model"
    elif p.suffix in (".json", ".safetensors"):
        stem = p.with_suffix("")
    else:
        stem = p
    return Path(f"{stem}.safetensors"), Path(f"{stem}.json")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile`` wrappers.

    Checkpoints always hold the plain model, so a run saved under DDP loads into a single
    process and vice versa.
    """
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def model_spec(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint records about ``model``'s architecture.

    For a registry model (a :class:`NormalizedModel` made by ``create_model``) this is its
    ``spec``: name, kwargs, num_classes, in_channels, dataset, mean, std. For any other module
    ``name`` is ``None`` and the class name identifies it; ``num_classes`` comes from a
    ``num_classes`` attribute when the module has one.
    """
    model = unwrap_model(model)
    net = model.net if isinstance(model, NormalizedModel) else model
    if isinstance(model, NormalizedModel) and model.spec.get("name"):
        try:
            spec: dict[str, Any] = _to_json_value(dict(model.spec))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model spec of {model.spec['name']!r} is not JSON-able: {err}") from None
    else:
        spec = {"name": None, "num_classes": None, "kwargs": {}}
        if isinstance(model, NormalizedModel):
            mean = model.normalize.mean.flatten().tolist()
            spec.update(in_channels=len(mean), mean=mean, std=model.normalize.std.flatten().tolist())
    if spec.get("num_classes") is None:
        n = getattr(net, "num_classes", None)
        spec["num_classes"] = n if isinstance(n, int) else None
    spec["class"] = type(net).__qualname__
    spec["module"] = type(net).__module__
    spec["wrapped"] = isinstance(model, NormalizedModel)
    return spec


def _arch(spec: Mapping[str, Any]) -> str:
    """Short architecture label: registry name (with kwargs) or the class name."""
    name = spec.get("name") or spec.get("class") or "unknown model"
    kwargs = spec.get("kwargs") or {}
    if kwargs:
        name += "(" + ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items())) + ")"
    return str(name)


def _describe(spec: Mapping[str, Any]) -> str:
    n = spec.get("num_classes")
    classes = f"{n} classes" if n is not None else "an unknown number of classes"
    return f"{_arch(spec)} with {classes}"


# ---------------------------------------------------------------------------------------------
# JSON helpers


def _to_json_value(obj: Any) -> Any:
    """Round ``obj`` through JSON so tuples become lists (what a reload will see)."""
    return json.loads(json.dumps(obj, default=_jsonable))


def _jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for the usual non-JSON values in recipes and metrics."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    if isinstance(obj, Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):  # scalars and arrays
        return obj.tolist()
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-serializable")


# ---------------------------------------------------------------------------------------------
# saving


def _plain_tensors(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU tensors that own their storage (safetensors refuses shared storage).

    Tied or aliased parameters (two names, one storage) and views of a larger storage are
    cloned, so each name gets its own copy; loading restores the values under every name.
    """
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, t in state.items():
        t = t.detach().to("cpu")
        if not t.is_contiguous():
            t = t.contiguous()
        if t.numel() > 0:
            storage = t.untyped_storage()
            if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    *,
    metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write ``model`` as ``<stem>.safetensors`` + ``<stem>.json``; return the weights path.

    Args:
        path: checkpoint stem, either file name, or a directory (stem ``<dir>/model``).
        model: any ``nn.Module``; a registry model also records how to rebuild itself.
        metadata: JSON-able caller data stored at the top level of the JSON, e.g.
            ``{"recipe": {...}, "metrics": {...}, "epoch": 7}``. Paths, tuples, sets,
            dataclasses, enums and numpy/torch scalars are converted.
        extra_tensors: tensors to keep beside the weights (e.g. an EMA or a fixed noise
            sample); read them back with :func:`load_extra_tensors`.

    Raises:
        ConfigError: a metadata key collides with a reserved key, or a value cannot be
            serialized. Nothing is written in that case.
    """
    weights_path, json_path = checkpoint_paths(path)
    model = unwrap_model(model)
    user = dict(metadata or {})
    clash = sorted(_RESERVED & user.keys())
    if clash:
        raise ConfigError(f"metadata keys {clash} are reserved by the checkpoint format")
    tensors = _plain_tensors(model.state_dict())
    for name, t in (extra_tensors or {}).items():
        if not isinstance(t, Tensor):
            raise ConfigError(f"extra tensor {name!r} is a {type(t).__name__}, not a Tensor")
        tensors.update(_plain_tensors({EXTRA_PREFIX + name: t}))
    data = _st_save(tensors, metadata={"format": "pt"})
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_spec(model),
        "weights": weights_path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "extra_tensors": sorted(extra_tensors or {}),
        "entrobust_version": entrobust.__version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **user,
    }
    try:
        text = json.dumps(doc, indent=2, default=_jsonable)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"checkpoint metadata cannot be stored as JSON: {err}") from None
    atomic_write_bytes(weights_path, data)
    atomic_write_text(json_path, text + "\n")  # last: the checkpoint now counts
    return weights_path


# ---------------------------------------------------------------------------------------------
# loading


def read_checkpoint_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON metadata of checkpoint ``path`` (cheap: the weights are not read).

    Raises :class:`CheckpointError` naming the file when it is missing, not JSON, or not an
    entrobust checkpoint.
    """
    weights_path, json_path = checkpoint_paths(path)
    if not json_path.is_file():
        if weights_path.is_file():
            raise CheckpointError(
                f"incomplete checkpoint: {weights_path} has no metadata file {json_path} "
                "(was the save interrupted?)"
            )
        raise CheckpointError(f"checkpoint not found: {json_path}")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint metadata {json_path}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not an entrobust checkpoint (no format {FORMAT!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} has checkpoint format {meta['format_version']}, newer than this "
            f"entrobust ({FORMAT_VERSION}); upgrade entrobust"
        )
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{json_path} has no model description")
    return meta


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_safetensors(path: Path, device: Device = "cpu") -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {path}")
    try:
        return _st_load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"corrupt or unreadable weights file {path}: {err}") from None


def _read_weights(weights_path: Path, meta: Mapping[str, Any], device: Device) -> dict[str, Tensor]:
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights_path}")
    expected = meta.get("sha256")
    if expected and _file_sha256(weights_path) != expected:
        raise CheckpointError(
            f"weights file {weights_path} does not match its metadata (SHA-256 differs): "
            "it is truncated, corrupt or was replaced"
        )
    return _read_safetensors(weights_path, device)


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def load_weights(model: nn.Module, state: Mapping[str, Tensor], *, source: str = "weights") -> None:
    """Load ``state`` into ``model`` strictly; refuse missing/unexpected keys or wrong shapes.

    The error names the first few offending keys (and shapes) and ``source``. Values are copied
    into the model's tensors, so they keep the model's device and dtype.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {list(state[k].shape)} vs model {list(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {_names(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as err:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"cannot load {source}: {err}") from None


def _check_expect(meta: Mapping[str, Any], expect: Mapping[str, Any], source: Path) -> None:
    spec = meta["model"]
    for key, want in expect.items():
        if key in spec:
            have = spec[key]
        elif key in meta:
            have = meta[key]
        else:
            raise CheckpointError(f"{source} records no {key!r} (expected {want!r})")
        if have != _to_json_value(want):
            raise CheckpointError(f"{source} has {key}={have!r}, expected {want!r}")


def _check_same_architecture(saved: Mapping[str, Any], given: Mapping[str, Any], source: Path) -> None:
    same_name = (saved.get("name") or saved.get("class")) == (given.get("name") or given.get("class"))
    n_saved, n_given = saved.get("num_classes"), given.get("num_classes")
    same_classes = n_saved is None or n_given is None or n_saved == n_given
    if not (same_name and same_classes):
        raise CheckpointError(f"checkpoint {source} is {_describe(saved)}, model is {_describe(given)}")


def _rebuild(spec: Mapping[str, Any], source: Path) -> NormalizedModel:
    name = spec.get("name")
    if not name:
        raise CheckpointError(
            f"{source} holds a custom model ({spec.get('module')}.{spec.get('class')}), which "
            "cannot be rebuilt from its name: create an instance and pass it as model="
        )
    try:
        model = create_model(
            str(name),
            num_classes=spec.get("num_classes"),
            in_channels=spec.get("in_channels"),
            mean=spec.get("mean"),
            std=spec.get("std"),
            **dict(spec.get("kwargs") or {}),
        )
    except EntrobustError as err:
        raise CheckpointError(f"cannot rebuild the model of {source}: {err}") from None
    model.spec["dataset"] = spec.get("dataset")
    return model


def load_checkpoint(
    path: PathLike,
    model: nn.Module | None = None,
    *,
    map_location: Device = "cpu",
    expect: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load checkpoint ``path``; return ``(model, metadata)``.

    Without ``model`` the registry model is rebuilt from the JSON spec (via
    :func:`~entrobust.models.create_model`), moved to ``map_location`` and put in eval mode.
    With ``model`` the checkpoint must be of the same architecture and number of classes
    (otherwise a :class:`CheckpointError` names both) and its weights must fit exactly; the
    model keeps its device and mode. ``expect`` maps keys of the model spec or top-level
    metadata (``dataset``, ``num_classes``, ``name`` ...) to required values.

    Raises :class:`CheckpointError` for missing, corrupt or mismatched checkpoints.
    """
    weights_path, json_path = checkpoint_paths(path)
    meta = read_checkpoint_metadata(path)
    spec = meta["model"]
    if expect:
        _check_expect(meta, expect, json_path)
    rebuilt = model is None
    given = model
    if model is None:
        model = _rebuild(spec, json_path).to(map_location)
        device: Device = map_location
    else:
        model = unwrap_model(model)
        _check_same_architecture(spec, model_spec(model), json_path)
        first = next(iter(model.state_dict().values()), None)
        device = first.device if first is not None else map_location
    tensors = _read_weights(weights_path, meta, device)
    weights = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    load_weights(model, weights, source=str(weights_path))
    if rebuilt:
        model.eval()
    return (given if given is not None else model), meta


def load_extra_tensors(path: PathLike, *, map_location: Device = "cpu") -> dict[str, Tensor]:
    """The ``extra_tensors`` saved with checkpoint ``path`` (empty dict if there were none)."""
    weights_path, _ = checkpoint_paths(path)
    meta = read_checkpoint_metadata(path)
    tensors = _read_weights(weights_path, meta, map_location)
    n = len(EXTRA_PREFIX)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}


# ---------------------------------------------------------------------------------------------
# foreign files (.pt / .pth / .safetensors from other code bases)


def _unwrap(obj: Any, source: Path) -> dict[str, Tensor]:
    """Find the state dict inside a loaded object (plain, or under a usual wrapper key)."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return {str(k): v for k, v in inner.items()}
        keys = ", ".join(map(str, list(obj)[:10]))
        raise CheckpointError(f"{source} holds no state dict of tensors (top-level keys: {keys})")
    raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict of tensors")


def _strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _pickle_reason(err: Exception) -> str:
    """The informative line of torch's weights-only error (e.g. which global was refused)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if "Unsupported" in ln or "WeightsUnpickler error" in ln:
            reason = ln.removeprefix("WeightsUnpickler error:").strip()
            return reason.split(" was not an allowed global")[0][:200]
    return (lines[0] if lines else type(err).__name__)[:200]


def load_foreign_weights(
    path: PathLike,
    model: nn.Module | None = None,
    *,
    rename: Callable[[str], str | None] | None = None,
    map_location: Device = "cpu",
) -> dict[str, Tensor]:
    """Read a state dict saved by other code (``.pt``/``.pth`` via ``torch.save``, or
    ``.safetensors``), safely; optionally load it into ``model``.

    ``.pt``/``.pth`` files are opened with ``torch.load(weights_only=True)`` only: a pickle
    that would build anything but tensors and plain containers (i.e. could run code) is
    refused with a :class:`CheckpointError`, never executed. The state dict may sit under a
    usual key (``state_dict``, ``model``, ``net`` ...); a ``module.`` (DataParallel) or
    ``_orig_mod.`` (``torch.compile``) prefix on every key is removed. ``rename`` maps each key
    to a new key, or to ``None`` to drop it (e.g. TRADES' unused ``sub_block1.*``).

    With ``model``, the weights are loaded strictly (:func:`load_weights`); for a
    :class:`NormalizedModel` whose checkpoint lacks normalization buffers they go into
    ``model.net``, since foreign code keeps normalization outside the network.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"weights file not found: {source}")
    if source.suffix == ".safetensors":
        state = _read_safetensors(source, map_location)
    else:
        try:
            obj = torch.load(source, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"refusing to unpickle {source}: it contains objects that are not plain tensors "
                f"and loading it could run arbitrary code ({_pickle_reason(err)}). Re-save only "
                "its state_dict from code you trust."
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"corrupt or unreadable weights file {source}: {err}") from None
        state = _unwrap(obj, source)
    for prefix in ("module.", "_orig_mod."):
        state = _strip_prefix(state, prefix)
    if rename is not None:
        renamed: dict[str, Tensor] = {}
        for k, v in state.items():
            new = rename(k)
            if new is not None:
                renamed[new] = v
        state = renamed
    if model is not None:
        target = unwrap_model(model)
        if isinstance(target, NormalizedModel) and "normalize.mean" not in state:
            target = target.net
        load_weights(target, state, source=str(source))
    return state
