"""CIFAR-size residual networks (SPEC §2): ``resnet18``, ``preact_resnet18``, ``resnet20``.

All take 32×32 input by design but end in a global average pool, so other sizes work too (on
32×32 the global pool equals the references' fixed ``avg_pool2d(·, 4)`` / ``(·, 8)``).
Submodule names follow the reference code so published checkpoints load with
:func:`entrobust.checkpoint.load_foreign_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from entrobust.errors import ConfigError
from entrobust.models._build import build
from entrobust.models.core import register_model

__all__ = ["BasicBlock", "CifarBasicBlock", "PreActBlock", "PreActResNet", "ResNet", "ResNet20"]


class BasicBlock(nn.Module):
    """Post-activation basic block: conv3-bn-relu-conv3-bn, plus shortcut, then relu.

    The shortcut is a 1×1 conv + BN when the shape changes ("option B" of He et al. 2016).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet of TRADES (``yaodongyu/TRADES``, ``models/resnet.py``; He et al. 2016).

    3×3 stride-1 stem with 64 channels and BN, *no* max-pool, four stages of basic blocks
    (64, 128, 256, 512 channels; strides 1, 2, 2, 2), global average pool, linear layer.
    ``num_blocks=(2, 2, 2, 2)`` is ResNet-18, as used by RU for CIFAR-10/100 and SVHN.
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or any(n < 1 for n in num_blocks):
            raise ConfigError(f"ResNet needs 4 positive stage depths, got {list(num_blocks)}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes_in = 64
        stages: list[nn.Sequential] = []
        for planes, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), num_blocks, strict=True):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(BasicBlock(planes_in, planes, s))
                planes_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b, "Identity Mappings"): bn-relu-conv twice.

    When the shape changes the shortcut is a 1×1 conv applied to the *pre-activated* input,
    as in the AWP / robust-overfitting code.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet of AWP (``csdongxian/AWP``, ``AT_AWP/preactresnet.py``).

    Same layout as :class:`ResNet` (3×3 stem without BN, stages 64-512) but with
    :class:`PreActBlock` and a final BN + ReLU before the global average pool. Used by AWP and
    the EntropySGD smoothness paper (Kanai et al.) on CIFAR-10.
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or any(n < 1 for n in num_blocks):
            raise ConfigError(f"PreActResNet needs 4 positive stage depths, got {list(num_blocks)}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        planes_in = 64
        stages: list[nn.Sequential] = []
        for planes, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), num_blocks, strict=True):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(PreActBlock(planes_in, planes, s))
                planes_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class CifarBasicBlock(nn.Module):
    """Basic block of the CIFAR ResNets of He et al. 2016 (§4.2).

    ``shortcut="A"`` (the paper's CIFAR choice): when the shape changes, the identity is
    subsampled by 2 and zero-padded with the extra channels, adding no parameters.
    ``shortcut="B"``: a 1×1 conv + BN projection instead.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = 0
        self.stride = stride
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.pad = planes - in_planes
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            skip = self.shortcut(x)
        elif self.stride != 1 or self.pad:
            skip = x[:, :, :: self.stride, :: self.stride]
            half = self.pad // 2
            skip = F.pad(skip, (0, 0, 0, 0, half, self.pad - half))
        else:
            skip = x
        return F.relu(out + skip)


class ResNet20(nn.Module):
    """CIFAR ResNet-(6n+2) of He et al. 2016, §4.2; ``n=3`` is ResNet-20 (ATENT ℓ2 CIFAR).

    3×3 stem with 16 channels, three stages of ``n`` basic blocks (16, 32, 64 channels; strides
    1, 2, 2), global average pool, linear layer; about 0.27 M parameters with option-A shortcuts.
    Kaiming-normal initialization of convolutions and the linear layer, as in the widely used
    CIFAR ResNet-20 reimplementations.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        blocks_per_stage: int = 3,
        shortcut: str = "A",
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ConfigError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if shortcut not in ("A", "B"):
            raise ConfigError(f"shortcut must be 'A' (zero-pad) or 'B' (1x1 conv), got {shortcut!r}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes_in = 16
        stages: list[nn.Sequential] = []
        for planes, stride in zip((16, 32, 64), (1, 2, 2), strict=True):
            blocks = []
            for s in [stride] + [1] * (blocks_per_stage - 1):
                blocks.append(CifarBasicBlock(planes_in, planes, s, shortcut))
                planes_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


_CIFAR = (3, 32, 32)


@register_model("resnet18", input_shape=_CIFAR, source="TRADES models/resnet.py")
def resnet18(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """CIFAR ResNet-18 (3×3 stem, no max-pool) as in TRADES; RU's CIFAR/SVHN model."""
    if kw:
        raise ConfigError(f"resnet18 takes no extra arguments, got {sorted(kw)}")
    return ResNet((2, 2, 2, 2), num_classes, in_channels)


@register_model("preact_resnet18", input_shape=_CIFAR, source="AWP AT_AWP/preactresnet.py")
def preact_resnet18(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """Pre-activation ResNet-18 as in AWP (and the EntropySGD smoothness paper)."""
    if kw:
        raise ConfigError(f"preact_resnet18 takes no extra arguments, got {sorted(kw)}")
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels)


@register_model("resnet20", input_shape=_CIFAR, source="He et al. 2016 §4.2; ATENT ℓ2 CIFAR")
def resnet20(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """CIFAR ResNet-20: 3 stages × 3 basic blocks, 16/32/64 channels (ATENT ℓ2 CIFAR)."""
    return build(ResNet20, "resnet20", num_classes, in_channels, **kw)
