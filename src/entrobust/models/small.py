"""MNIST-size networks (SPEC §2): ``smallcnn``, ``cnn4``, ``lenet``, ``lenet5``, ``mlp3``.

Every builder returns the *bare* network; :func:`~entrobust.models.create_model` puts the
normalization in front. Fully connected sizes that depend on the input are computed from
``input_size`` (default 28×28, the registered input), so the same architecture also runs on
other sizes (e.g. ``input_size=32`` for CIFAR-size images).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from entrobust.errors import ConfigError
from entrobust.models._build import build
from entrobust.models.core import register_model

__all__ = ["CNN4", "MLP3", "LeNet", "LeNet5", "SmallCNN"]

InputSize = int | Sequence[int]


def _pair(size: InputSize, *, what: str = "input_size") -> tuple[int, int]:
    """``28`` or ``(28, 28)`` (or a JSON list) -> ``(28, 28)``."""
    if isinstance(size, int):
        h = w = size
    else:
        values = tuple(int(s) for s in size)
        if len(values) != 2:
            raise ConfigError(f"{what} must be an int or (height, width), got {size!r}")
        h, w = values
    if h < 1 or w < 1:
        raise ConfigError(f"{what} must be positive, got {size!r}")
    return h, w


def _conv_out(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _check_features(model: str, h: int, w: int, input_size: InputSize) -> None:
    if h < 1 or w < 1:
        raise ConfigError(f"input_size {input_size!r} is too small for {model}")


class SmallCNN(nn.Module):
    """TRADES' MNIST SmallCNN (``yaodongyu/TRADES``, ``models/small_cnn.py``), also ATENT ℓ∞ MNIST.

    conv32-3, relu, conv32-3, relu, maxpool2, conv64-3, relu, conv64-3, relu, maxpool2,
    fc1024→200, relu, dropout 0.5, fc200→200, relu, fc200→C (1024 = 64·4·4 for 28×28 input).
    Submodule names match the reference so its public checkpoints load.

    Initialization follows the reference for the convolutions (Kaiming normal, zero bias). The
    reference also sets the last layer to zero; that makes every input gradient exactly zero
    until the first update, which stalls gradient attacks on fresh models, so it is opt-in
    (``zero_init_last=True``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        *,
        input_size: InputSize = 28,
        dropout: float = 0.5,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        h, w = _pair(input_size)
        for _ in range(2):  # two (conv3, conv3, pool2) stages
            h, w = _conv_out(_conv_out(h, 3), 3) // 2, _conv_out(_conv_out(w, 3), 3) // 2
        _check_features("smallcnn", h, w, input_size)
        self.num_classes = num_classes
        self.num_features = 64 * h * w
        self.feature_extractor = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, 32, 3)),
                    ("relu1", nn.ReLU()),
                    ("conv2", nn.Conv2d(32, 32, 3)),
                    ("relu2", nn.ReLU()),
                    ("maxpool1", nn.MaxPool2d(2, 2)),
                    ("conv3", nn.Conv2d(32, 64, 3)),
                    ("relu3", nn.ReLU()),
                    ("conv4", nn.Conv2d(64, 64, 3)),
                    ("relu4", nn.ReLU()),
                    ("maxpool2", nn.MaxPool2d(2, 2)),
                ]
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(self.num_features, 200)),
                    ("relu1", nn.ReLU()),
                    ("drop", nn.Dropout(dropout)),
                    ("fc2", nn.Linear(200, 200)),
                    ("relu2", nn.ReLU()),
                    ("fc3", nn.Linear(200, num_classes)),
                ]
            )
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if zero_init_last:
            fc3 = self.classifier.fc3
            assert isinstance(fc3, nn.Linear)
            nn.init.zeros_(fc3.weight)
            nn.init.zeros_(fc3.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.feature_extractor(x).flatten(1))


class CNN4(nn.Module):
    """RU's MNIST "four-layer CNN" (Ju et al. 2020, Appendix A.1).

    conv10-5, maxpool2, relu, conv20-5, maxpool2, relu, fc320→50, relu, fc50→C. The paper's
    "stride 5" is a misprint for kernel 5 (20·4·4 = 320 only with kernel 5, stride 1), and its
    first FC is written "320 → 10" although the next one takes 50 inputs: we use 320→50.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, input_size: InputSize = 28) -> None:
        super().__init__()
        h, w = _pair(input_size)
        for _ in range(2):
            h, w = _conv_out(h, 5) // 2, _conv_out(w, 5) // 2
        _check_features("cnn4", h, w, input_size)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(20 * h * w, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.pool(self.conv1(x)))
        x = self.relu(self.pool(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


class LeNet(nn.Module):
    """LeNet with ReLU, as used by the Min-Max paper (Shen, Chen, Wang, §3.1, Fig. 1).

    conv6-5, relu, maxpool2, conv16-5, relu, maxpool2, fc→120, relu, fc120→84, relu, fc84→C.
    The first convolution is padded by 2 on 28×28 input (so the classic 16·5·5 = 400 features
    come out); ``padding=None`` picks 2 for 28-pixel and 0 for 32-pixel (CIFAR) inputs, as in
    the classic LeNet-5 which takes 32×32 images.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        *,
        input_size: InputSize = 28,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        h, w = _pair(input_size)
        pad = (2 if min(h, w) < 32 else 0) if padding is None else padding
        h, w = _conv_out(h, 5, pad) // 2, _conv_out(w, 5, pad) // 2
        h, w = _conv_out(h, 5) // 2, _conv_out(w, 5) // 2
        _check_features("lenet", h, w, input_size)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.fc1(x.flatten(1)))
        return self.fc3(self.relu(self.fc2(x)))


class LeNet5(nn.Module):
    """The "LeNet5" of ATENT ℓ2 MNIST (Jagatap et al. 2021, App. B) and MMA (Ding et al. 2019).

    conv32-5 pad2, relu, maxpool2, conv64-5 pad2, relu, maxpool2, fc3136→1024, relu,
    fc1024→C (3136 = 64·7·7 for 28×28 input). This is Madry et al.'s MNIST network as
    AdverTorch ships it (``BorealisAI/advertorch``, ``advertorch/test_utils.py``,
    ``LeNet5Madry``), whose parameter names we keep; AdverTorch's *other* ``LeNet5`` (3×3
    kernels, fc200) does not match the sizes the ATENT paper states.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, input_size: InputSize = 28) -> None:
        super().__init__()
        h, w = _pair(input_size)
        h, w = h // 4, w // 4  # two "same" convolutions, two 2× poolings
        _check_features("lenet5", h, w, input_size)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.linear1 = nn.Linear(64 * h * w, 1024)
        self.linear2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        return self.linear2(self.relu(self.linear1(x.flatten(1))))


class MLP3(nn.Module):
    """3-layer MLP for the 2-class (5 vs 8) MNIST decision-boundary plots of ATENT Fig. 1.

    The paper only says "3-layer neural network"; we read that as three linear layers,
    ``in→hidden→hidden→C`` with ReLU between (``hidden`` defaults to 100).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        *,
        input_size: InputSize = 28,
        hidden: int = 100,
    ) -> None:
        super().__init__()
        if hidden < 1:
            raise ConfigError(f"mlp3 hidden size must be >= 1, got {hidden}")
        h, w = _pair(input_size)
        self.num_classes = num_classes
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * h * w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


_MNIST = (1, 28, 28)


@register_model("smallcnn", input_shape=_MNIST, sized=True, source="TRADES models/small_cnn.py")
def smallcnn(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """TRADES MNIST SmallCNN: 4 conv + 3 fc, dropout 0.5 (TRADES, ATENT ℓ∞ MNIST)."""
    return build(SmallCNN, "smallcnn", num_classes, in_channels, **kw)


@register_model("cnn4", input_shape=_MNIST, sized=True, source="Ju et al. 2020 (RU), Appendix A.1")
def cnn4(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """RU's four-layer MNIST CNN: conv10-5, conv20-5, fc320→50→C."""
    return build(CNN4, "cnn4", num_classes, in_channels, **kw)


@register_model("lenet", input_shape=_MNIST, sized=True, source="Shen, Chen, Wang (Min-Max), §3.1")
def lenet(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """LeNet (ReLU): conv6-5 pad2, conv16-5, fc400→120→84→C (Min-Max paper)."""
    return build(LeNet, "lenet", num_classes, in_channels, **kw)


@register_model("lenet5", input_shape=_MNIST, sized=True, source="advertorch LeNet5; ATENT App. B")
def lenet5(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """AdverTorch LeNet5: conv32-5, conv64-5 (pad 2), fc3136→1024→C (ATENT ℓ2, MMA)."""
    return build(LeNet5, "lenet5", num_classes, in_channels, **kw)


@register_model("mlp3", input_shape=_MNIST, sized=True, source="Jagatap et al. 2021 (ATENT), Fig. 1")
def mlp3(num_classes: int, in_channels: int, **kw: object) -> nn.Module:
    """3-layer MLP in→hidden→hidden→C for 2-class MNIST boundary plots (ATENT Fig. 1)."""
    return build(MLP3, "mlp3", num_classes, in_channels, **kw)
