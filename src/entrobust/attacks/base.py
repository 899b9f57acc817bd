"""The attack base class: a final ``__call__`` that makes every attack safe to run.

Subclasses implement only :meth:`Attack._search`. The base call (STYLE rule 4):

* validates the inputs (:mod:`entrobust.attacks.inputs`): finite images in the box, NCHW, integer
  labels with a logit each, a model that returns ``(N, classes)`` logits, an ε smaller than the
  box's diameter — each a :class:`~entrobust.errors.ConfigError` that says what is expected;
  returns ``x`` unchanged when ε = 0;
* runs the model in eval mode (or the mode named by ``model_mode``) and restores its mode;
* freezes parameters for the duration (``requires_grad`` off), so parameters and their
  ``.grad`` are untouched whatever the subclass does, and no weight gradients are wasted;
* projects the result onto the ε-ball and clamps it to the box;
* optionally reports per-example outcomes (:class:`AttackResult`);
* under autocast (``entrobust.accel.autocast(device, "bf16")``) runs only the model's forwards in
  bf16: ``_search`` sees a model whose logits are upcast to float32, and everything else — the
  loss, its gradient's sign or norm, the step, the projection, the returned ``x_adv`` — runs with
  autocast switched off, in the input's dtype (float32). bf16 keeps 8 mantissa bits: a rounded
  loss could flip sign(∇) or a "loss improved" test, and a rounded iterate could leave the ε-ball.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, final, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entrobust.attacks.inputs import check_finite, check_labels, check_layout, checked_logits
from entrobust.attacks.threat import ThreatModel
from entrobust.errors import ConfigError
from entrobust.losses import entropy, fp32, margin

ModelMode = Literal["eval", "train"]


@dataclass
class AttackResult:
    """Per-example outcome of one attack on a batch (all tensors have a leading dim N).

    ``first_success`` is the iteration at which the example was first misclassified
    (0 = already misclassified at the start, -1 = never, or unknown for attacks that do not track it).
    ``margin`` is z_y − max_{i≠y} z_i at ``x_adv`` (negative ⇔ misclassified).
    """

    x_adv: Tensor
    success: Tensor  # bool: misclassified at x_adv (untargeted) / predicted target (targeted)
    first_success: Tensor  # int64
    margin: Tensor
    loss: Tensor  # cross-entropy at x_adv
    entropy: Tensor  # prediction entropy at x_adv (nats)
    distance: Tensor  # ‖x_adv − x‖ in the threat model's norm


def margin_of(logits: Tensor, y: Tensor) -> Tensor:
    """Decision margin z_y − max_{i≠y} z_i per example (correct for all-negative logits);
    float32 for bf16 / fp16 logits."""
    return margin(fp32(logits), y)


def entropy_of(logits: Tensor) -> Tensor:
    """Shannon entropy (nats) of softmax(logits) per example (float32 for bf16 / fp16 logits)."""
    return entropy(fp32(logits))


@contextmanager
def frozen(model: nn.Module, mode: ModelMode = "eval") -> Iterator[nn.Module]:
    """Run ``model`` in ``mode`` with ``requires_grad`` off on every parameter; restore both after."""
    was_training = {m: m.training for m in model.modules()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.train(mode == "train")
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, t in was_training.items():
            m.training = t


class LowPrecisionForward(nn.Module):
    """``model`` run under ``torch.autocast(device_type, dtype)``, its logits upcast to float32.

    What an attack's search sees when it is called under autocast (see the module docstring): the
    forward keeps the caller's reduced precision, the attack's own arithmetic does not.
    """

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            out = self.model(x)
        return fp32(out)


@contextmanager
def fp32_attack_math(model: nn.Module, x: Tensor) -> Iterator[nn.Module]:
    """Yield the model an attack should query; inside, autocast is off for ``x``'s device.

    Without autocast active on ``x``'s device this yields ``model`` itself and changes nothing.
    Under autocast it yields :class:`LowPrecisionForward` (bf16 forwards, float32 logits) and
    switches autocast off for the caller's own arithmetic. A model that is already such a wrapper
    (an attack run inside another attack's search) is passed through.
    """
    device_type = x.device.type
    if isinstance(model, LowPrecisionForward) or not torch.is_autocast_enabled(device_type):
        yield model
        return
    net = LowPrecisionForward(model, device_type, torch.get_autocast_dtype(device_type))
    with torch.autocast(device_type=device_type, enabled=False):
        yield net


class Attack(ABC):
    """Base of every attack: ``attack(model, x, y) -> x_adv`` inside ``threat``.

    Args:
        threat: the threat model (norm, ε, box).
        model_mode: ``"eval"`` (default; TRADES / MART / MadryLab) or ``"train"`` (BatchNorm batch
            statistics, as robust_overfitting / AWP / ATENT generate training adversaries).
        seed: when given, random starts and other sampling use a generator seeded with it, so the
            attack is deterministic and batch-consistent; when ``None`` torch's global RNG is used.
    """

    name: str = "attack"
    targeted: bool = False
    #: iteration number of the point ``_search`` returns; an example whose success is first seen
    #: there (``first`` = −1 from the search, success at ``x_adv``) is reported at this iteration.
    #: −1 (default) means the attack does not count iterations.
    final_iteration: int = -1

    def __init__(self, threat: ThreatModel, *, model_mode: ModelMode = "eval", seed: int | None = None):
        if not isinstance(threat, ThreatModel):
            raise ConfigError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        if model_mode not in ("eval", "train"):
            raise ConfigError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        self.threat = threat
        self.model_mode: ModelMode = model_mode
        self.seed = seed

    # ------------------------------------------------------------------ API
    @overload
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        target: Tensor | None = ...,
        return_info: Literal[False] = ...,
    ) -> Tensor: ...

    @overload
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        target: Tensor | None = ...,
        return_info: Literal[True],
    ) -> AttackResult: ...

    @final
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        target: Tensor | None = None,
        return_info: bool = False,
    ) -> Tensor | AttackResult:
        """Attack ``model`` at ``(x, y)``; see the class docstring for the guarantees."""
        self._check_inputs(model, x, y, target)
        x = x.detach()
        y = y.detach().long()
        if target is not None:
            target = target.detach().long()
        labels = {"y": y} if target is None else {"y": y, "target": target}
        first: Tensor | None = None
        with frozen(model, self.model_mode), checked_logits(model, labels), fp32_attack_math(model, x) as net:
            if self.threat.is_zero() or x.shape[0] == 0:
                x_adv = x.clone()
            else:
                with torch.enable_grad():
                    out = self._search(net, x, y, target)
                if isinstance(out, tuple):
                    x_adv, first = out
                else:
                    x_adv = out
                if x_adv.shape != x.shape:
                    raise RuntimeError(f"{type(self).__name__} returned shape {tuple(x_adv.shape)}")
                x_adv = self.threat.project(x_adv.detach().to(x.dtype), x)
            if not return_info:
                return x_adv
            with torch.no_grad():
                logits = fp32(net(x_adv))
            return self._result(x, y, target, x_adv, logits, first)

    # --------------------------------------------------------- for subclasses
    @abstractmethod
    def _search(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Return ``x_adv`` (or ``(x_adv, first_success_iteration)``); the base projects it."""

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """A fresh generator seeded with ``self.seed`` (``None`` → use the global RNG)."""
        if self.seed is None:
            return None
        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed)
        return g

    # ------------------------------------------------------------- internals
    def _check_inputs(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ConfigError("x must be a floating-point tensor of images in [0, 1]")
        if x.dim() < 2:
            raise ConfigError(f"x must be a batch (N, ...) of images, got shape {tuple(x.shape)}")
        check_labels(y, x.shape[0], "y")
        check_finite(x, "x")
        check_layout(x, model, "x")
        self.threat.check_input(x)
        if x.numel() and (
            float(x.min()) < self.threat.lower - 1e-6 or float(x.max()) > self.threat.upper + 1e-6
        ):
            raise ConfigError(
                f"x must lie in [{self.threat.lower}, {self.threat.upper}]; "
                "normalization belongs inside the model"
            )
        if self.targeted and target is None:
            raise ConfigError(f"{self.name} is targeted: pass target=")
        if target is not None:
            check_labels(target, x.shape[0], "target")

    def _result(
        self, x: Tensor, y: Tensor, target: Tensor | None, x_adv: Tensor, logits: Tensor, first: Tensor | None
    ) -> AttackResult:
        pred = logits.argmax(1)
        success = pred.eq(target) if target is not None else pred.ne(y)
        if first is None:
            first = torch.full_like(y, -1)
        else:  # first success refers to the returned point: -1 wherever it is not a success
            first = first.to(device=y.device, dtype=torch.long)
            first = torch.where(first.lt(0), torch.full_like(first, self.final_iteration), first)
            first = torch.where(success, first, torch.full_like(first, -1))
        return AttackResult(
            x_adv=x_adv,
            success=success,
            first_success=first.to(torch.long),
            margin=margin_of(logits, y),
            loss=F.cross_entropy(fp32(logits), y, reduction="none"),
            entropy=entropy_of(logits),
            distance=self.threat.distance(x_adv, x),
        )

    def __repr__(self) -> str:
        t = self.threat
        eps = t.eps if not isinstance(t.eps, Tensor) else "per-example"
        return f"{type(self).__name__}(norm={t.norm}, eps={eps})"
