"""WideResNet-34-10 (SPEC §2): the CIFAR network of TRADES, MART, ATENT and EntropySGD-AT.

Zagoruyko & Komodakis 2016 ("Wide Residual Networks") in the form of TRADES
(``yaodongyu/TRADES``, ``models/wideresnet.py``) and MART (``YisenWang/MART``, same file).
Parameter names follow those files so their published checkpoints load; the references also
build an unused ``sub_block1`` that never runs in ``forward`` — we do not create it, drop its
keys when loading such a checkpoint (see :func:`entrobust.checkpoint.load_foreign_weights`).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from entrobust.errors import ConfigError
from entrobust.models._build import build
from entrobust.models.core import register_model

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation wide block: bn-relu-conv3, bn-relu-(dropout)-conv3, plus the shortcut.

    As in the references, when the width or stride changes the *pre-activated* input feeds
    both the residual branch and the 1×1 projection shortcut; otherwise the shortcut is the
    raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut: nn.Module | None = None  # reference checkpoint name
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        skip = x if self.convShortcut is None else self.convShortcut(act)
        return out + skip


class _Stage(nn.Module):
    """``n`` wide blocks; kept as a module with a ``layer`` child for checkpoint key names."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float):
        super().__init__()
        blocks = [
            WideBasicBlock(
                in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate
            )
            for i in range(n)
        ]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen: 3×3 stem (16 ch), 3 stages of (depth−4)/6 wide blocks, BN-ReLU, pool, fc.

    Stage widths are 16k, 32k, 64k for widen factor k, strides 1, 2, 2. ``depth=34,
    widen_factor=10`` is WRN-34-10 (≈46 M parameters). Initialization as in the references:
    convolutions N(0, 2/(k²·out_channels)), BN weight 1 / bias 0, linear bias 0.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        depth: int = 34,
        widen_factor: int = 10,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        if widen_factor < 1:
            raise ConfigError(f"widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _Stage(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = _Stage(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = _Stage(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("wrn34_10", input_shape=(3, 32, 32), source="TRADES/MART models/wideresnet.py")
def wrn34_10(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """WideResNet-34-10 (TRADES/MART/ATENT/EnSGD); ``depth``/``widen_factor`` kwargs resize it."""
    return build(WideResNet, "wrn34_10", num_classes, in_channels, **kw)
