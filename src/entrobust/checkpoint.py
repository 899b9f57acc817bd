"""Safe checkpoints: weights in ``safetensors``, metadata in a small JSON file beside them.

A checkpoint ``<stem>`` is two files (SPEC §2):

* ``<stem>.safetensors`` — the model's ``state_dict`` (including the normalization buffers),
  plus optional extra tensors under the ``__extra__.`` prefix;
* ``<stem>.json`` — how to rebuild the model (registry name, kwargs, classes, channels,
  dataset, mean/std), the SHA-256 of the weights file, library and torch versions, creation
  time, and whatever recipe/metrics the caller adds.

The JSON is the checkpoint's commit point. Saving first stages the new weights completely under
a hidden name derived from their hash (``.<stem>.safetensors.<sha256[:16]>.pending``), then
atomically replaces the JSON (which records that hash), and only then renames the staged weights
onto ``<stem>.safetensors``. A reader that finds the weights not matching the JSON's hash loads
the staged file named by it, so whenever a save is interrupted either the old or the new
checkpoint loads — never neither — and the next save (or a trainer resume) cleans up.

Loading never unpickles arbitrary objects: ``safetensors`` holds only tensors, and foreign
``.pt``/``.pth`` files go through ``torch.load(weights_only=True)``. Nothing from the JSON is
trusted before it is checked: field types are validated, the weights file's hash is verified
and its tensor shapes are compared with the model the JSON describes (built on the ``meta``
device, without memory) before any model is allocated, so a crafted JSON cannot make loading
allocate more than the weights file holds. A checkpoint for another architecture or number of
classes is refused with a message naming both.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save as _st_save
from torch import Tensor, nn

import entrobust
from entrobust.distributed import unwrap
from entrobust.errors import CheckpointError, ConfigError, EntrobustError
from entrobust.io import atomic_write_text, publish, remove_temp_files, stage_bytes
from entrobust.models.core import NormalizedModel, create_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "checkpoint_paths",
    "encode_checkpoint",
    "finish_interrupted_save",
    "load_checkpoint",
    "load_extra_tensors",
    "load_foreign_weights",
    "load_weights",
    "model_spec",
    "pending_weights_path",
    "read_checkpoint_metadata",
    "save_checkpoint",
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
_MAX_METADATA_BYTES = 64 << 20  # a checkpoint JSON is a few kB; refuse to parse anything huge
_SHA256 = re.compile(r"[0-9a-f]{64}")

PathLike = str | os.PathLike[str]
Device = str | torch.device


# ---------------------------------------------------------------------------------------------
# paths and model descriptions


#: the stems a training run directory holds, in the order a directory argument tries them
RUN_CHECKPOINTS = ("best", "last")


def checkpoint_paths(path: PathLike) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths of checkpoint ``path``.

    ``path`` may be the stem (``runs/best``), either file (``runs/best.json``,
    ``runs/best.safetensors``) or a training run's directory, which means its ``best``
    checkpoint if it has one, else its ``last`` (the two the trainer writes). Only the two
    suffixes are stripped, so stems containing dots (``epoch.10``) are kept whole.

    Raises :class:`CheckpointError` for a directory holding neither, naming what it looked for.
    """
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        for name in RUN_CHECKPOINTS:
            if any((p / f"{name}{ext}").is_file() for ext in (".json", ".safetensors")):
                stem = p / name
                break
        else:
            looked = ", ".join(f"{p / n}.json" for n in RUN_CHECKPOINTS)
            raise CheckpointError(
                f"{p} is a directory without a checkpoint: looked for {looked} (a training run "
                "writes best.* and last.*); pass a checkpoint stem such as runs/x/best"
            )
    elif p.suffix in (".json", ".safetensors"):
        stem = p.with_suffix("")
    else:
        stem = p
    return Path(f"{stem}.safetensors"), Path(f"{stem}.json")


def model_spec(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint records about ``model``'s architecture.

    For a registry model (a :class:`NormalizedModel` made by ``create_model``) this is its
    ``spec``: name, kwargs, num_classes, in_channels, dataset, mean, std. For any other module
    ``name`` is ``None`` and the class name identifies it; ``num_classes`` comes from a
    ``num_classes`` attribute when the module has one.
    """
    model = unwrap(model)
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


def pending_weights_path(weights_path: PathLike, sha256: str) -> Path:
    """Where weights with hash ``sha256`` are staged before they replace ``weights_path``."""
    w = Path(weights_path)
    return w.with_name(f".{w.name}.{sha256[:16]}.pending")


def encode_checkpoint(
    path: PathLike,
    model: nn.Module,
    *,
    metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, Tensor] | None = None,
) -> tuple[Path, Path, bytes, str]:
    """The bytes of checkpoint ``path`` without writing anything: ``(weights path, JSON path,
    weights bytes, JSON text)``. Arguments and errors are those of :func:`save_checkpoint`; use
    it to commit a checkpoint together with other files (the trainer does)."""
    weights_path, json_path = checkpoint_paths(path)
    model = unwrap(model)
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
    return weights_path, json_path, data, text + "\n"


def finish_interrupted_save(path: PathLike) -> None:
    """Complete what an interrupted :func:`save_checkpoint` of ``path`` left: publish weights
    that its committed JSON records but that are still staged, and delete staged files that were
    never committed. Safe to call on any checkpoint; needs no other writer on it."""
    weights_path, json_path = checkpoint_paths(path)
    if json_path.is_file():
        try:
            expected = read_checkpoint_metadata(json_path).get("sha256")
        except CheckpointError:
            expected = None
        if isinstance(expected, str):
            staged = pending_weights_path(weights_path, expected)
            if staged.is_file() and _file_sha256(staged) == expected:
                publish(staged, weights_path)
    remove_temp_files(weights_path.parent, prefix=f".{weights_path.name}.")


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    *,
    metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write ``model`` as ``<stem>.safetensors`` + ``<stem>.json``; return the weights path.

    Args:
        path: checkpoint stem or either file name (a directory means its ``best`` or ``last``
            checkpoint, see :func:`checkpoint_paths`; to write a new one name the stem).
        model: any ``nn.Module``; a registry model also records how to rebuild itself.
        metadata: JSON-able caller data stored at the top level of the JSON, e.g.
            ``{"recipe": {...}, "metrics": {...}, "epoch": 7}``. Paths, tuples, sets,
            dataclasses, enums and numpy/torch scalars are converted.
        extra_tensors: tensors to keep beside the weights (e.g. an EMA or a fixed noise
            sample); read them back with :func:`load_extra_tensors`.

    Overwriting is crash-safe (see the module docstring): at every instant either the old or
    the new checkpoint loads.

    Raises:
        ConfigError: a metadata key collides with a reserved key, or a value cannot be
            serialized. Nothing is written in that case.
    """
    weights_path, json_path, data, text = encode_checkpoint(
        path, model, metadata=metadata, extra_tensors=extra_tensors
    )
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    finish_interrupted_save(weights_path)
    staged = pending_weights_path(weights_path, hashlib.sha256(data).hexdigest())
    try:
        stage_bytes(weights_path, data, staged=staged)
        atomic_write_text(json_path, text)  # the commit point: from here on the new checkpoint counts
    except BaseException:
        staged.unlink(missing_ok=True)  # not committed: the old checkpoint stays as it was
        raise
    publish(staged, weights_path)  # if this fails, readers load the committed weights from `staged`
    remove_temp_files(weights_path.parent, prefix=f".{weights_path.name}.")  # older interrupted saves
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
        size = json_path.stat().st_size
        if size > _MAX_METADATA_BYTES:
            raise CheckpointError(
                f"{json_path} is {size} bytes, too large for checkpoint metadata "
                f"(limit {_MAX_METADATA_BYTES}); it is not an entrobust checkpoint"
            )
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"corrupt checkpoint metadata {json_path}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not an entrobust checkpoint (no format {FORMAT!r})")
    version = meta.get("format_version", 0)
    if not _is_int(version):
        raise CheckpointError(f"{json_path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} has checkpoint format {version}, newer than this "
            f"entrobust ({FORMAT_VERSION}); upgrade entrobust"
        )
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{json_path} has no model description")
    _validate_metadata(meta, json_path)
    return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _validate_metadata(meta: Mapping[str, Any], source: Path) -> None:
    """Check the type of every field loading relies on; raise :class:`CheckpointError` naming it."""

    def bad(field: str, want: str, have: Any) -> CheckpointError:
        shown = repr(have)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return CheckpointError(f"{source}: {field} must be {want}, got {shown}")

    sha = meta.get("sha256")  # absent only in hand-made files: the weights are then parsed unchecked
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise bad("sha256", "the 64 hex digits of the weights' SHA-256", sha)
    weights = meta.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise bad("weights", "a file name", weights)
    extra = meta.get("extra_tensors", [])
    if not isinstance(extra, list) or not all(isinstance(e, str) for e in extra):
        raise bad("extra_tensors", "a list of names", extra)
    spec = meta["model"]
    for key in ("name", "class", "module", "dataset"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise bad(f"model.{key}", "a string or null", spec[key])
    for key in ("num_classes", "in_channels"):
        v = spec.get(key)
        if v is not None and not (_is_int(v) and v > 0):
            raise bad(f"model.{key}", "a positive integer or null", v)
    for key in ("mean", "std"):
        v = spec.get(key)
        if v is not None and not (isinstance(v, list) and all(_is_number(x) for x in v)):
            raise bad(f"model.{key}", "a list of finite numbers or null", v)
    kwargs = spec.get("kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise bad("model.kwargs", "an object of keyword arguments", kwargs)


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


def _verified_weights(weights_path: Path, meta: Mapping[str, Any]) -> Path:
    """The file holding exactly the weights ``meta`` records (hash-checked).

    That is ``weights_path``, or — when a save was interrupted after its JSON was committed but
    before the weights were renamed into place — the staged file named by the hash.
    """
    expected = meta.get("sha256")
    if expected is None:
        if not weights_path.is_file():
            raise CheckpointError(f"checkpoint weights not found: {weights_path}")
        return weights_path
    staged = pending_weights_path(weights_path, expected)
    if weights_path.is_file() and _file_sha256(weights_path) == expected:
        return weights_path
    if staged.is_file() and _file_sha256(staged) == expected:
        return staged
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights_path}")
    raise CheckpointError(
        f"weights file {weights_path} does not match its metadata (SHA-256 differs): "
        "it is truncated, corrupt or was replaced"
    )


def _read_weights(weights_path: Path, meta: Mapping[str, Any], device: Device) -> dict[str, Tensor]:
    return _read_safetensors(_verified_weights(weights_path, meta), device)


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"corrupt or unreadable weights file {path}: {err}") from None


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def load_weights(model: nn.Module, state: Mapping[str, Tensor], *, source: str = "weights") -> None:
    """Load ``state`` into ``model`` strictly; refuse missing/unexpected keys or wrong shapes.

    The error names the first few offending keys (and shapes) and ``source``. Values are copied
    into the model's tensors, so they keep the model's device and dtype.
    """
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_fit(own, {k: tuple(v.shape) for k, v in state.items()}, type(model).__name__, source)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as err:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"cannot load {source}: {err}") from None


def _check_fit(
    own: Mapping[str, tuple[int, ...]], file: Mapping[str, tuple[int, ...]], what: str, source: str
) -> None:
    """Refuse ``file`` shapes that do not fit the model's exactly (missing/unexpected/shape)."""
    missing = [k for k in own if k not in file]
    unexpected = [k for k in file if k not in own]
    mismatched = [
        f"{k} (file {list(file[k])} vs model {list(own[k])})" for k in own if k in file and file[k] != own[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {_names(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {what}: " + "; ".join(problems))


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
    except (EntrobustError, TypeError, ValueError) as err:
        raise CheckpointError(f"cannot rebuild the model of {source}: {err}") from None
    model.spec["dataset"] = spec.get("dataset")
    return model


def _check_rebuild_fits(spec: Mapping[str, Any], weights: Path, source: Path) -> None:
    """Build the described model on the ``meta`` device (no memory) and refuse it unless its
    tensors have exactly the shapes stored in the (already verified) weights file — so the real
    model allocated next is never larger than that file."""
    with torch.device("meta"):
        try:
            ghost = _rebuild(spec, source)
        except CheckpointError:
            raise
        except (NotImplementedError, RuntimeError) as err:  # an architecture meta cannot build
            raise CheckpointError(f"cannot rebuild the model of {source}: {err}") from None
    own = {k: tuple(v.shape) for k, v in ghost.state_dict().items()}
    file = {k: s for k, s in _header_shapes(weights).items() if not k.startswith(EXTRA_PREFIX)}
    _check_fit(own, file, _describe(spec), str(weights))


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
    if model is not None:
        _check_same_architecture(spec, model_spec(unwrap(model)), json_path)
    source = _verified_weights(weights_path, meta)  # hash first: nothing is built from a bad file
    if model is None:
        _check_rebuild_fits(spec, source, json_path)
        model = _rebuild(spec, json_path).to(map_location)
        device: Device = map_location
    else:
        model = unwrap(model)
        first = next(iter(model.state_dict().values()), None)
        device = first.device if first is not None else map_location
    tensors = _read_safetensors(source, device)
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


#: lines of torch's weights-only error text (torch/serialization.py ``_get_wo_message``, 2.6-2.13)
#: that are advice, not the reason
_TORCH_ADVICE = (
    "This file can still be loaded",
    "(1)",
    "(2)",
    "In PyTorch 2.6",
    "Please file an issue",
    "Check the documentation",
)


def _pickle_reason(err: Exception) -> str:
    """The line of torch's weights-only error that says what was refused.

    torch wraps the unpickler's own message in advice. The reason follows
    ``WeightsUnpickler error:`` (refused global: ``Unsupported global: GLOBAL io.open``; other
    refusals come on a later line, e.g. ``Trying to call reduce for unrecognized function``), or
    stands alone after the advice (``Trying to load unsupported GLOBAL posix.system whose module
    posix is blocked.``), or directly after ``Weights only load failed.`` (import errors).
    """
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    for raw in text.splitlines():
        ln = raw.strip().removeprefix("Weights only load failed.").strip()
        if not ln or ln.startswith(_TORCH_ADVICE):
            continue
        return ln.split(" was not an allowed global")[0][:200]
    return type(err).__name__


#: what ``load_foreign_weights(normalization=...)`` accepts, and why it must be said
_NORMALIZATION_CHOICES = (
    "say which input the source network was trained on, with normalization=:\n"
    '  "none"        raw [0, 1] pixels (TRADES, MART, AWP and most robustness code): the\n'
    "                model's normalization becomes the identity;\n"
    '  "dataset"     pixels standardized with the model\'s own mean/std{current}, which are kept;\n'
    "  (mean, std)   pixels standardized with these per-channel statistics, which are installed.\n"
    "A wrong choice can leave clean accuracy almost unchanged while misstating robust accuracy."
)

Normalization = str | tuple[Sequence[float], Sequence[float]]


def _normalization_stats(
    normalization: Normalization | None, model: nn.Module, source: Path
) -> tuple[list[float], list[float]] | None:
    """The (mean, std) the model's ``Normalize`` layer must hold for ``normalization``;
    ``None`` for a plain module (which gets the pixels unchanged). Raises ``ConfigError`` for
    a missing or invalid choice."""
    wrapped = isinstance(model, NormalizedModel)
    current = ""
    if isinstance(model, NormalizedModel):
        current = (
            f" (mean={[round(v, 4) for v in model.normalize.mean.flatten().tolist()]}, "
            f"std={[round(v, 4) for v in model.normalize.std.flatten().tolist()]})"
        )
    if normalization is None:
        raise ConfigError(
            f"loading foreign weights {source} into a model: "
            + _NORMALIZATION_CHOICES.format(current=current)
        )
    if not wrapped:
        if normalization != "none":
            raise ConfigError(
                f"normalization={normalization!r} needs a NormalizedModel, but the model is a plain "
                f"{type(model).__name__}: wrap it (NormalizedModel(net, Normalize(mean, std))) or pass "
                'normalization="none" (the module gets the [0, 1] pixels unchanged)'
            )
        return None
    assert isinstance(model, NormalizedModel)
    channels = model.normalize.mean.numel()
    if normalization == "none":
        return [0.0] * channels, [1.0] * channels
    if normalization == "dataset":
        return model.normalize.mean.flatten().tolist(), model.normalize.std.flatten().tolist()
    if isinstance(normalization, str) or not (
        isinstance(normalization, tuple | list) and len(normalization) == 2
    ):
        raise ConfigError(
            f"normalization={normalization!r} is not a valid choice; "
            + _NORMALIZATION_CHOICES.format(current=current)
        )
    mean, std = ([float(v) for v in part] for part in normalization)
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(
            f"normalization mean/std have {len(mean)}/{len(std)} values, the model has {channels} "
            "input channels"
        )
    if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
        raise ConfigError(f"normalization needs finite means and positive stds, got {mean}, {std}")
    return mean, std


def load_foreign_weights(
    path: PathLike,
    model: nn.Module | None = None,
    *,
    normalization: Normalization | None = None,
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

    ``normalization`` (required with ``model``) says what input the source network was trained
    on, because nothing in a foreign state dict records it and a wrong guess keeps clean
    accuracy close while robust accuracy is misstated:

    * ``"none"`` — raw [0, 1] pixels (TRADES, MART, AWP and most robustness code): the model's
      ``Normalize`` becomes the identity (mean 0, std 1);
    * ``"dataset"`` — pixels standardized with the model's own mean/std, which are kept;
    * ``(mean, std)`` — standardized with these per-channel statistics, which are installed.

    The chosen statistics are also written into ``model.spec``, so a checkpoint saved afterwards
    rebuilds the same model. A plain module (no ``Normalize``) accepts only ``"none"``. A file
    that carries its own ``normalize.mean``/``normalize.std`` must agree with the choice.

    Raises:
        ConfigError: ``normalization`` missing (the message explains the three choices) or
            invalid for the model.
        CheckpointError: unreadable or unsafe file, weights that do not fit, or normalization
            buffers in the file that contradict ``normalization``.
    """
    source = Path(path)
    stats = _normalization_stats(normalization, unwrap(model), source) if model is not None else None
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
        target = unwrap(model)
        if isinstance(target, NormalizedModel) and stats is not None:
            mean, std = stats
            if "normalize.mean" in state:
                _check_file_normalization(state, mean, std, normalization, source)
                load_weights(target, state, source=str(source))
            else:
                load_weights(target.net, state, source=str(source))
            with torch.no_grad():
                target.normalize.mean.copy_(torch.tensor(mean).view_as(target.normalize.mean))
                target.normalize.std.copy_(torch.tensor(std).view_as(target.normalize.std))
            target.spec["mean"], target.spec["std"] = list(mean), list(std)
        else:
            load_weights(target, state, source=str(source))
    return state


def _check_file_normalization(
    state: Mapping[str, Tensor], mean: list[float], std: list[float], choice: object, source: Path
) -> None:
    """Refuse a file whose own normalization buffers contradict the chosen statistics."""
    file_mean = state["normalize.mean"].flatten().double()
    file_std = state.get("normalize.std", torch.ones_like(file_mean)).flatten().double()
    want_mean, want_std = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    if not (
        file_mean.shape == want_mean.shape
        and torch.allclose(file_mean, want_mean, atol=1e-6)
        and torch.allclose(file_std, want_std, atol=1e-6)
    ):
        raise CheckpointError(
            f"{source} carries its own normalization (mean={file_mean.tolist()}, "
            f"std={file_std.tolist()}), which contradicts normalization={choice!r} "
            f"(mean={mean}, std={std})"
        )
