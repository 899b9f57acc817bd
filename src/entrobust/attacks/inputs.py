"""Input checks shared by every attack's call and by :func:`~entrobust.evaluation.evaluate`.

Each turns a mistake that would otherwise give silently wrong numbers (NaN pixels propagate into
``x_adv``; float labels truncate) or a raw traceback from deep inside a model (channels-last
images, a model that returns a tuple, a label the model has no logit for) into an
:class:`~entrobust.errors.EntrobustError` that says what was expected and where the bad value is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.errors import ConfigError, EntrobustError

__all__ = [
    "check_finite",
    "check_label_range",
    "check_labels",
    "check_layout",
    "check_logits",
    "checked_logits",
]


def _position(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(out))


def check_finite(
    x: Tensor, what: str = "x", *, error: type[EntrobustError] = ConfigError, index: Tensor | None = None
) -> None:
    """Raise ``error`` when ``x`` ``(N, ...)`` holds NaN or ±inf, saying how many values, in how
    many examples, and where the first one is (example index — ``index[i]`` when given — and its
    position inside the example)."""
    if x.numel() == 0 or not x.is_floating_point() or bool(torch.isfinite(x).all()):
        return
    bad = ~torch.isfinite(x.detach())
    per_example = bad.flatten(1).sum(1) if x.dim() > 1 else bad.long()
    first = int(per_example.nonzero()[0, 0])
    pos = _position(int(bad[first].flatten().nonzero()[0, 0]), tuple(x.shape[1:])) if x.dim() > 1 else ()
    value = float(x[first].flatten()[bad[first].flatten()][0]) if x.dim() > 1 else float(x[first])
    example = int(index[first]) if index is not None else first
    raise error(
        f"{what} has {int(bad.sum())} non-finite value(s) (NaN or ±inf) in {int((per_example > 0).sum())} "
        f"example(s); the first is example {example}, position {pos} ({value}). Images must be finite "
        "values in [0, 1]"
    )


def check_layout(
    x: Tensor, model: nn.Module | None = None, what: str = "x", *, error: type[EntrobustError] = ConfigError
) -> None:
    """Refuse image batches laid out channels-last (NHWC) where NCHW is expected.

    A model with its normalization inside (:class:`~entrobust.models.NormalizedModel`) says how
    many channels it takes, so a mismatch is certain; for any other model a 4-D batch whose second
    dimension is not 1 or 3 but whose last one is (``(N, 28, 28, 1)``, ``(N, 32, 32, 3)``) is
    taken as NHWC.
    """
    if x.dim() != 4:
        return
    expected = _model_channels(model)
    c, last = int(x.shape[1]), int(x.shape[3])
    hint = "(x.permute(0, 3, 1, 2) converts NHWC to NCHW)"
    if expected is not None:
        if c != expected:
            layout = " — it looks channels-last (NHWC)" if last == expected else ""
            raise error(
                f"{what} has shape {tuple(x.shape)} but the model takes NCHW images with {expected} "
                f"channel(s){layout} {hint}"
            )
        return
    if c not in (1, 3) and last in (1, 3):
        raise error(
            f"{what} has shape {tuple(x.shape)}, which looks channels-last (NHWC); images must be NCHW "
            f"(N, channels, height, width) {hint}"
        )


def _model_channels(model: nn.Module | None) -> int | None:
    normalize = getattr(model, "normalize", None) if model is not None else None
    mean = getattr(normalize, "mean", None)
    if isinstance(mean, Tensor) and mean.dim() == 4:
        return int(mean.shape[1])
    return None


def check_labels(y: Tensor, n: int, what: str = "y", *, error: type[EntrobustError] = ConfigError) -> None:
    """Labels must be a ``(n,)`` integer tensor of class indices ≥ 0 (the upper bound, the number
    of classes, is checked against the model's logits by :func:`checked_logits`)."""
    if not isinstance(y, Tensor):
        raise error(f"{what} must be a tensor of integer class labels, got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise error(
            f"{what} must hold integer class indices (torch.long), got {y.dtype}; convert them with "
            ".long() if they are whole numbers (one-hot or soft labels are not class indices)"
        )
    if y.dim() != 1 or y.shape[0] != n:
        raise error(f"{what} must have shape ({n},), got {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        i = int((y < 0).nonzero()[0, 0])
        raise error(f"{what} must be class indices >= 0; example {i} has {int(y[i])}")


def check_label_range(
    num_classes: int,
    labels: dict[str, Tensor],
    *,
    error: type[EntrobustError] = ConfigError,
    index: Tensor | None = None,
) -> None:
    """Every label in ``labels`` (name → ``(N,)``) must be < ``num_classes`` (the logits' width);
    the error names the first offending example (``index[i]`` when given)."""
    for what, y in labels.items():
        if y.numel() and int(y.max()) >= num_classes:
            i = int((y >= num_classes).nonzero()[0, 0])
            example = int(index[i]) if index is not None else i
            raise error(
                f"{what}: example {example} has label {int(y[i])} but the model returns {num_classes} "
                f"logits (classes 0..{num_classes - 1})"
            )


def check_logits(out: Any, batch: int, *, error: type[EntrobustError] = ConfigError) -> Tensor:
    """The model's output must be a ``(batch, classes)`` tensor of logits; return it."""
    if not isinstance(out, Tensor):
        kind = type(out).__name__
        extra = (
            " — wrap the model so it returns only the logits (e.g. a module whose forward returns "
            "model(x)[0])"
            if isinstance(out, (tuple, list, dict))
            else ""
        )
        raise error(
            f"the model returned a {kind}; attacks and evaluation need a (N, classes) logits tensor{extra}"
        )
    if out.dim() != 2 or out.shape[0] != batch or out.shape[1] < 2:
        raise error(
            f"the model returned shape {tuple(out.shape)} for a batch of {batch}; expected (N, classes) "
            "logits with at least 2 classes"
        )
    return out


@contextmanager
def checked_logits(model: nn.Module, labels: dict[str, Tensor]) -> Iterator[None]:
    """While inside, every forward of ``model`` must return ``(N, classes)`` logits, and the first
    one checks ``labels`` (name → ``(N,)``) against ``classes``; else :class:`ConfigError`.

    A forward hook, so the model is not called an extra time (query budgets and call counts
    stay what the attack says) and attacks still see the model itself.
    """
    checked = False

    def hook(_module: nn.Module, args: Any, out: Any) -> None:
        nonlocal checked
        x = args[0] if args else None
        batch = int(x.shape[0]) if isinstance(x, Tensor) and x.dim() else -1
        if (
            not isinstance(out, Tensor)
            or out.dim() != 2
            or out.shape[1] < 2
            or (batch >= 0 and out.shape[0] != batch)
        ):
            check_logits(out, batch)
        if not checked:
            checked = True
            check_label_range(int(out.shape[1]), labels)

    try:
        handle = model.register_forward_hook(hook)
    except RuntimeError:  # TorchScript modules take no hooks: run unchecked
        yield
        return
    try:
        yield
    finally:
        handle.remove()
