"""A quickly trained, normally trained surrogate model for black-box transfer checks.

RU §5.1 crafts black-box PGD on a separately trained model; the obfuscation audit needs one
when the user has none. We build a fresh copy of the target's registered architecture (for a
model made by :func:`~entrobust.models.create_model`) or, for any other module, a small generic
CNN (two 3×3 conv layers, adaptive pooling, one linear layer) that fits any image size — never a
copy of the target itself, whose forward pass may be the very thing that masks gradients.
It is trained for a few epochs with Adam on cross-entropy and, by default, *distilled* from the
target: half of its loss is the cross-entropy to the target's own softmax outputs on the same
images (Hinton et al. 2015; the substitute-model attack of Papernot et al. 2017 trains on the
target's labels), so its decision boundaries — and hence the transfer attack — follow the model
under audit rather than only the data. Only the target's outputs are used, never its gradients,
so the check stays black-box.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entrobust.diagnostics._util import DataLike, as_xy, model_device
from entrobust.errors import ConfigError


class SmallSurrogate(nn.Module):
    """conv(C→32, 3) → ReLU → conv(32→64, 3, stride 2) → ReLU → avgpool(4) → linear(1024→K)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(64 * 16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def surrogate_like(model: nn.Module, in_channels: int, num_classes: int) -> nn.Module:
    """A freshly initialized surrogate: the target's registered architecture, else :class:`SmallSurrogate`."""
    from entrobust.models.core import NormalizedModel, create_model

    spec = getattr(model, "spec", None)
    if isinstance(model, NormalizedModel) and isinstance(spec, dict) and spec.get("name"):
        kwargs = dict(spec.get("kwargs") or {})
        try:
            return create_model(
                str(spec["name"]),
                num_classes=int(spec.get("num_classes") or num_classes),
                in_channels=int(spec.get("in_channels") or in_channels),
                mean=spec.get("mean"),
                std=spec.get("std"),
                **kwargs,
            )
        except Exception:  # an ensemble or exotic spec: fall back to the generic network
            pass
    return SmallSurrogate(in_channels, num_classes)


def train_surrogate(
    model: nn.Module,
    data: DataLike,
    *,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 1e-3,
    max_examples: int | None = 4000,
    seed: int = 0,
    architecture: nn.Module | None = None,
    distill: bool = True,
) -> nn.Module:
    """Train a normal (clean inputs, Adam) surrogate for ``model`` on ``data``.

    The loss is cross-entropy to the labels, averaged with cross-entropy to ``model``'s softmax
    outputs on the batch when ``distill`` (default; ``False``: labels only, a surrogate that
    knows the data but not the target). ``architecture`` (an untrained module) overrides the
    choice of :func:`surrogate_like`. The surrogate ends in eval mode on the target's device.
    Deterministic given ``seed`` (for a deterministic target).
    """
    if epochs < 1:
        raise ConfigError(f"surrogate epochs must be >= 1, got {epochs}")
    x, y = as_xy(data)
    if max_examples is not None and x.shape[0] > max_examples:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(x.shape[0], generator=g)[:max_examples]
        x, y = x[idx], y[idx]
    dev = model_device(model)
    with torch.no_grad():
        was = model.training
        model.eval()
        num_classes = int(model(x[:1].to(dev)).shape[1])
        model.train(was)
    torch.manual_seed(seed)
    net = (
        copy.deepcopy(architecture)
        if architecture is not None
        else surrogate_like(model, x.shape[1], num_classes)
    )
    net = net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    net.train()
    was = model.training
    model.eval()
    try:
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0], batch_size):
                idx = order[i : i + batch_size]
                xb, yb = x[idx].to(dev), y[idx].to(dev)
                opt.zero_grad(set_to_none=True)
                out = net(xb)
                loss = F.cross_entropy(out, yb)
                if distill:
                    with torch.no_grad():
                        soft = F.softmax(model(xb).float(), dim=1)
                    loss = 0.5 * loss + 0.5 * -(soft * F.log_softmax(out.float(), dim=1)).sum(1).mean()
                loss.backward()
                opt.step()
    finally:
        model.train(was)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
