"""The ResNet network both ResNet backbones build (cifar.py: the CIFAR stem; imagenet.py: the ImageNet stem).

Knows nothing of any method: each stage gets an injected interaction object and calls its hooks
(see interaction/base.py), on feature maps.
"""
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..interaction.base import Interaction, StageSpec
from ..interaction.stage import Stage
from ..layers.layout import FEATURE_MAPS
from .registry import Backbone


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class Block(nn.Module):
    """A residual block returns its residual branch and its identity; the interaction merges them."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, extra_in: int = 0) -> None:
        super().__init__()
        out = planes * self.expansion
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))

    def residual(self, x_in: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x_in: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        identity = x if self.downsample is None else self.downsample(x)
        return self.residual(x_in), identity

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        raise NotImplementedError


class BasicBlock(Block):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, extra_in: int = 0) -> None:
        super().__init__(inplanes, planes, stride)
        self.conv1 = conv3x3(inplanes + extra_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)

    def residual(self, x_in: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x_in)))
        return self.bn2(self.conv2(out))

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(Block):
    """1x1 -> 3x3 (stride here, as torchvision's v1.5) -> 1x1 x4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, extra_in: int = 0) -> None:
        super().__init__(inplanes, planes, stride)
        self.conv1 = conv1x1(inplanes + extra_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)

    def residual(self, x_in: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x_in)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


BlockType = type[BasicBlock | Bottleneck]
InteractionFactory = Callable[[StageSpec], Interaction]


class ResNet(nn.Module):
    def __init__(self, block: BlockType, layers: Sequence[int], widths: Sequence[int], stem: str,
                 num_classes: int, interaction: InteractionFactory, zero_init_residual: bool = False,
                 deep_stem: bool = False) -> None:
        super().__init__()
        self.stem = make_stem(stem, widths[0], deep_stem)
        inplanes = widths[0]
        stages: list[Stage] = []
        for i, (n, planes) in enumerate(zip(layers, widths)):
            spec = StageSpec(planes * block.expansion, n, i, len(layers), FEATURE_MAPS, first_block=sum(layers[:i]))
            inter = interaction(spec)
            blocks = []
            for t in range(n):
                stride = 2 if (t == 0 and i > 0) else 1
                blocks.append(block(inplanes, planes, stride, inter.extra_input_channels))
                inplanes = planes * block.expansion
            stages.append(Stage(blocks, inter))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(stages[-1].interaction.head_channels(inplanes), num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Block):
                    nn.init.zeros_(m.last_bn.weight)

    @property
    def stage_channels(self) -> list[int]:
        """Channels of each `forward_stages` output (the last one's after the method's head)."""
        channels = [stage.interaction.spec.channels for stage in self.stages]
        channels[-1] = self.stages[-1].interaction.head_channels(channels[-1])
        return channels

    def forward_stages(self, x: Tensor, last_only: bool = False) -> list[Tensor]:
        """Each stage's output after the method's work, the last one through the method's head (what the
        classifier pools); `last_only` returns just that one, freeing the earlier maps as it goes."""
        x = self.stem(x)
        carry = None
        outputs = []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            x, carry = stage(x, carry)
            if i == last:
                x = stage.interaction.head(x, carry)
            if i == last or not last_only:
                outputs.append(x)
        return outputs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_stages(x, last_only=True)[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))


def make_stem(kind: str, width: int, deep: bool = False) -> nn.Sequential:
    """"3x3" (CIFAR): one 3x3 conv. "7x7" (ImageNet): a 7x7 stride-2 conv, or with `deep` three 3x3 convs (stride 2,
    widths width/2, width/2, width; the public MRLA-base ImageNet stem), then a 3x3 stride-2 max-pool."""
    if kind == "3x3":
        return nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    if deep:
        half = width // 2
        return nn.Sequential(
            conv3x3(3, half, stride=2), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            conv3x3(half, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            conv3x3(half, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
    return nn.Sequential(
        nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
    )


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetBackbone(Backbone):
    """A ResNet family: its stem, stage widths and the blocks per stage of a depth (`layers`)."""

    stem: str = ""  # "3x3" | "7x7" (make_stem)
    widths: tuple[int, ...] = ()

    def layers(self, depth: int, block: str | None = None) -> tuple[BlockType, tuple[int, ...]]:
        """The block type and blocks per stage of `depth`; ValueError naming what is allowed."""
        raise NotImplementedError

    def check_depth(self, depth: int, block: str | None = None) -> None:
        self.layers(depth, block)

    def stage_channels(self, depth: int, block: str | None = None) -> list[int]:
        block_type, _ = self.layers(depth, block)
        return [w * block_type.expansion for w in self.widths]

    def build(self, depth: int, num_classes: int, block: str | None, interaction: InteractionFactory, *,
              zero_init_residual: bool = False, stem: str = "standard") -> nn.Module:
        block_type, layers = self.layers(depth, block)
        return ResNet(block_type, layers, self.widths, self.stem, num_classes, interaction,
                      zero_init_residual=zero_init_residual, deep_stem=stem == "deep")
