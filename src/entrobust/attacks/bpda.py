"""BPDA: attack through a non-differentiable input transform with a differentiable stand-in.

Athalye, Carlini & Wagner, *Obfuscated Gradients Give a False Sense of Security*, ICML 2018, §4.1
(Backward Pass Differentiable Approximation): a defense f(g(x)) whose preprocessing g
(quantization, JPEG, denoising, ...) has a zero, undefined or useless gradient is attacked by
running g exactly in the forward pass and replacing it by a differentiable h ≈ g in the backward
pass; when g(x) ≈ x, h = identity ("straight-through") suffices.

:class:`BPDA` is an ``nn.Module``, so a model that contains it is an ordinary model: every gradient
attack (PGD, APGD, AutoAttack, ...) and the audit (:func:`entrobust.diagnostics.audit`) use it
unchanged, and its forward — hence every reported prediction — is the defended model's own.
:func:`with_bpda` wraps a named submodule of an existing model in place of editing its code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor, nn

from entrobust.errors import ConfigError

Transform = Callable[[Tensor], Tensor]


class BPDA(nn.Module):
    """Forward: ``preprocess(x)``; backward: the gradient of ``approx(x)`` (default: identity).

    Implemented as ``h(x) + (g(x) − h(x)).detach()`` (Athalye et al. 2018 §4.1): the value is
    exactly g(x), the gradient exactly that of h. ``approx`` must map ``x`` to a tensor of g(x)'s
    shape; the identity requires g to keep the input's shape.

    Args:
        preprocess: the transform g (an ``nn.Module`` or any callable on tensors).
        approx: its differentiable approximation h; ``None`` = identity (straight-through).

    Raises:
        ConfigError: when ``preprocess`` or ``approx`` is not callable, or (at call time) when
            h(x) and g(x) differ in shape.

    Example:
        >>> quantize = lambda x: torch.round(x * 4) / 4                    # doctest: +SKIP
        >>> defended = nn.Sequential(BPDA(quantize), classifier)           # doctest: +SKIP
        >>> x_adv = build_attack("pgd", ThreatModel("linf", 0.3))(defended, x, y)  # doctest: +SKIP
    """

    def __init__(self, preprocess: Transform, approx: Transform | None = None) -> None:
        super().__init__()
        if not callable(preprocess):
            raise ConfigError(f"BPDA needs a callable preprocess, got {type(preprocess).__name__}")
        if approx is not None and not callable(approx):
            raise ConfigError(f"BPDA approx must be callable or None, got {type(approx).__name__}")
        self.preprocess = preprocess
        self.approx = approx

    def forward(self, x: Tensor) -> Tensor:
        exact = self.preprocess(x)
        if not x.requires_grad:
            return exact
        surrogate = x if self.approx is None else self.approx(x)
        if surrogate.shape != exact.shape:
            raise ConfigError(
                f"BPDA: the approximation gives shape {tuple(surrogate.shape)} but the transform "
                f"{tuple(exact.shape)}; pass approx= that matches the transform's output"
            )
        return surrogate + (exact - surrogate).detach()

    def extra_repr(self) -> str:
        return f"approx={'identity' if self.approx is None else getattr(self.approx, '__name__', 'module')}"


def with_bpda(model: nn.Module, name: str, approx: Transform | None = None) -> nn.Module:
    """A shallow copy of ``model`` whose submodule ``name`` (dotted path) is wrapped in :class:`BPDA`.

    ``model`` itself is left untouched and the copy shares its parameters, so the defended
    model's predictions are unchanged while every attack sees the BPDA gradient. Use
    ``model.named_modules()`` to find the name (e.g. ``"preprocess"`` or ``"0"`` in a
    ``Sequential``).

    Raises:
        ConfigError: when ``name`` names no submodule; the message lists the valid names.
    """
    modules = dict(model.named_modules())
    if not name or name not in modules:
        valid = ", ".join(n for n in modules if n) or "(none)"
        raise ConfigError(f"no submodule {name!r} to wrap in BPDA; submodules: {valid}")
    copied = copy.copy(model)
    parent_name, _, leaf = name.rpartition(".")
    # copy the chain of parents so that assigning the wrapper does not touch the caller's model
    parent = copied
    copied._modules = dict(model._modules)
    path = parent_name.split(".") if parent_name else []
    for part in path:
        child = copy.copy(parent._modules[part])
        assert child is not None
        child._modules = dict(child._modules)
        parent._modules[part] = child
        parent = child
    original = parent._modules[leaf]
    assert original is not None
    parent._modules[leaf] = BPDA(original, approx)
    return copied
