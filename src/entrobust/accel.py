"""Fast paths for accelerators: bf16 autocast, channels-last, ``torch.compile``, pinned memory.

All of them are off by default and change speed, not the method:

``amp="bf16"``
    model forwards run under :func:`torch.autocast` with bfloat16. Losses and attack steps stay
    in float32: objectives and attack losses read ``logits.float()``, inputs and perturbations
    are float32 tensors, so ‖δ‖ ≤ ε and the [0, 1] box are enforced exactly. bf16 has float32's
    exponent range, so no loss scaling is needed (fp16 would need a ``GradScaler`` and is not
    offered). On CPU the same code runs through CPU autocast — slower than float32 there, but it
    lets the tests exercise the path.
``channels_last``
    model weights and inputs in NHWC memory format (faster convolutions on tensor cores).
``compile``
    wrap the model with :func:`torch.compile` (``compile_backend`` picks the backend;
    ``"inductor"`` needs a C compiler, ``"eager"`` only checks the graph capture).

Evaluation can cross-check bf16 against float32: see ``evaluate(..., fp32_check=...)``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from entrobust.errors import ConfigError

__all__ = [
    "AMP_MODES",
    "AccelConfig",
    "autocast",
    "autocast_factory",
    "channels_last_weights",
    "prepare_model",
    "to_device",
]

AMP_MODES = ("off", "bf16")


@dataclass(frozen=True)
class AccelConfig:
    """Speed knobs of a run (see the module docstring); none of them changes the method."""

    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        check_amp(self.amp)
        if not self.compile_backend:
            raise ConfigError("compile_backend must name a torch.compile backend, e.g. inductor")


def check_amp(amp: str) -> None:
    """Raise :class:`ConfigError` unless ``amp`` is one of :data:`AMP_MODES`."""
    if amp not in AMP_MODES:
        hint = (
            " (fp16 needs loss scaling; bf16 does not and is what entrobust offers)" if amp == "fp16" else ""
        )
        raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}{hint}")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic instructions (AVX512-BF16 or AMX).

    Without them PyTorch emulates bf16 through float32 conversions: measured 8× slower than plain
    float32 for a small CNN on an AVX2 CPU, so bf16 on such a CPU only costs time.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


_WARNED_SLOW_BF16 = False


def warn_if_bf16_is_emulated(device: torch.device) -> None:
    """Warn once per process when bf16 autocast runs on a CPU without native bf16 instructions."""
    global _WARNED_SLOW_BF16
    if device.type == "cpu" and not _WARNED_SLOW_BF16 and not cpu_has_native_bf16():
        _WARNED_SLOW_BF16 = True
        warnings.warn(
            "amp='bf16' on a CPU without native bf16 instructions (no AVX512-BF16 or AMX): PyTorch "
            "emulates bf16 there, which is several times slower than float32 (8x measured on AVX2); "
            "use amp='off' on this machine",
            RuntimeWarning,
            stacklevel=3,
        )


def autocast(device: torch.device | str, amp: str = "off") -> ContextManager[Any]:
    """A context running forwards in bf16 on ``device`` (``amp="bf16"``), or a no-op (``"off"``).

    On a CPU without native bf16 instructions it warns once (:func:`warn_if_bf16_is_emulated`).
    """
    check_amp(amp)
    if amp == "off":
        return contextlib.nullcontext()
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"autocast is not available on device {dev}")
    warn_if_bf16_is_emulated(dev)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def autocast_factory(device: torch.device | str, amp: str = "off") -> Callable[[], ContextManager[Any]]:
    """A zero-argument function returning a fresh :func:`autocast` context (for repeated use)."""
    check_amp(amp)
    return lambda: autocast(device, amp)


def prepare_model(model: nn.Module, config: AccelConfig) -> nn.Module:
    """Apply ``channels_last`` in place and, with ``compile``, return the compiled wrapper.

    The returned module shares parameters with ``model``; save checkpoints from ``model``
    (or :func:`entrobust.distributed.unwrap` of the result).
    """
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if config.compile:
        try:
            return torch.compile(model, backend=config.compile_backend)  # type: ignore[return-value]
        except Exception as exc:  # unknown backend, unsupported platform
            raise ConfigError(f"torch.compile(backend={config.compile_backend!r}) failed: {exc}") from None
    return model


@contextlib.contextmanager
def channels_last_weights(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its 4-D parameters and buffers in channels-last (NHWC) memory format for
    the duration; the original tensors are put back after, so values, identities and layouts of
    the caller's model are as before.

    Only the memory layout changes, never a value: convolutions then produce NHWC activations,
    for which CPU pooling and convolution kernels are faster (cnn4 on one AVX-512 core: a
    forward ≈ 30 % cheaper, ``docs/autoattack.md``, "Cost"). Results agree with the NCHW run up
    to float rounding (different summation order inside the kernels). Used by AutoAttack on a
    CPU; models without 4-D weights are left alone.
    """
    swapped: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for t in (*model.parameters(), *model.buffers()):
                if t.dim() == 4:
                    swapped.append((t, t.data))
                    # as Module.to(memory_format=...): restrides even when size-1 dims make the
                    # tensor count as contiguous in both formats (e.g. a 1-channel conv weight)
                    t.data = t.data.to(memory_format=torch.channels_last)
        yield model
    finally:
        for t, data in reversed(swapped):
            t.data = data


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Move a batch to ``device`` without blocking (from pinned memory on CUDA), optionally NHWC."""
    if x.device.type == "cpu" and device.type == "cuda" and not x.is_pinned():
        x = x.pin_memory()
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
