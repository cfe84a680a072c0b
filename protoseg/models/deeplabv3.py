"""DeepLab v3 (Chen, Papandreou, Schroff, Adam 2017, arXiv:1706.05587) on ResNet-101, built to export to Caffe.

DeepLab v3 never had a Caffe release. This is the paper's ASPP model (its section 3.3) written only with layers
that :mod:`protoseg.to_caffe` turns into Caffe layers exactly, so it can be trained in PyTorch and deployed
through toolchains that read Caffe files:

- **Backbone**: ResNet-101 v1 (He et al. 2016, table 1: units (3, 4, 23, 3)) as MSRA's Caffe release and
  DeepLab v2's ``prototxt/deeplab_v2_resnet101_msc.prototxt`` build it, so their ImageNet weights fit layer for
  layer: 7x7/2 conv, 3x3/2 max pool with pad 1 and ceil rounding (torch's ``ceil_mode`` equals Caffe's here
  because the pad is at most half the kernel), bottleneck units whose stride sits in the first 1x1 conv (not in
  the 3x3 as in torchvision's "v1.5"), projection shortcuts on each stage's first unit, convs without bias.
- **Output stride** 16: block4 (``res5``) keeps stride 1 and dilates its three 3x3 convs by 2 x ``multi_grid``,
  (2, 4, 8) for the paper's (1, 2, 4). Output stride 8: block3 (``res4``) also keeps stride 1 and dilates every
  3x3 conv by 2 (its first unit too, as DeepLab v2 does), block4 by 4 x ``multi_grid``.
- **ASPP**: a 1x1 conv and three 3x3 convs with rates 6, 12, 18 (doubled at output stride 8), and image-level
  features (global average pooling, 1x1 conv, then bilinear upsampling to the feature size), each 256 channels
  with BatchNorm and ReLU; concatenated, a 1x1 conv to 256 (BatchNorm, ReLU), then the 1x1 classifier (with bias).
- **Output**: the logits resized to the input size, bilinear with ``align_corners=True`` (DeepLab's Interp).

Inputs are N x 3 x H x W, BGR with the ImageNet mean subtracted, as DeepLab's Caffe nets take them. Training
needs batches of more than one image: the image-level branch's BatchNorm sees one value per channel and image.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.errors import ProtosegError

__all__ = ["DeepLabV3", "ModelArgumentError", "RESNET101_UNITS", "ASPP_RATES", "deeplabv3_resnet101"]

#: Bottleneck units per stage (res2..res5, the paper's block1..block4) of ResNet-101.
RESNET101_UNITS = (3, 4, 23, 3)
#: ASPP's 3x3 rates at output stride 16; doubled at output stride 8.
ASPP_RATES = (6, 12, 18)
#: Output strides the paper trains and evaluates with.
OUTPUT_STRIDES = (8, 16)
#: The stem (7x7/2 conv, 3x3/2 pool) reduces by 4; each later stage halves unless it dilates instead.
STEM_STRIDE = 4


class ModelArgumentError(ProtosegError, ValueError):
    """A model builder was given a bad argument (a ValueError too, as torchvision's builders raise)."""


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelArgumentError(f"{name} must be a positive int, got {value!r}")
    return value


def _counts(name: str, values: object, length: int | None = None) -> tuple[int, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ModelArgumentError(f"{name} must be a sequence of positive ints, got {values!r}")
    if length is not None and len(values) != length:
        raise ModelArgumentError(f"{name} must have {length} entries, got {len(values)} in {tuple(values)!r}")
    return tuple(_count(f"{name}[{i}]", v) for i, v in enumerate(values))


def stage_plan(output_stride: int, multi_grid: Sequence[int], units: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Per stage (res2..res5): its first unit's stride and each unit's 3x3 dilation.

    DeepLab's rule: a stage whose stride would take the features past ``output_stride`` keeps stride 1 and
    multiplies the rate by 2 instead; block4's units then take rate x ``multi_grid[i]``.
    """
    plan, stride, rate = [], STEM_STRIDE, 1
    for index, count in enumerate(units):
        first = 1 if index == 0 else 2
        if stride * first > output_stride:
            rate, first = rate * first, 1
        stride *= first
        grid = multi_grid if index == len(units) - 1 else (1,) * count
        plan.append((first, [rate * g for g in grid]))
    return plan


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU, the unit every ASPP branch is made of."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=dilation * (kernel // 2),
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """A ResNet v1 bottleneck unit named as MSRA's Caffe ResNet names it (``branch2a/b/c``, ``branch1``).

    1x1 (carries the stride) -> 3x3 (carries the dilation) -> 1x1 to 4x the width; a 1x1 projection shortcut
    when the shape changes; the sum goes through ReLU. Every ReLU is its own module so that each call is one
    node (one Caffe layer) with its own name.
    """

    def __init__(self, in_channels: int, width: int, *, stride: int, dilation: int):
        super().__init__()
        out_channels = 4 * width
        self.branch2a = nn.Conv2d(in_channels, width, 1, stride=stride, bias=False)
        self.bn2a = nn.BatchNorm2d(width)
        self.relu2a = nn.ReLU()
        self.branch2b = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2b = nn.BatchNorm2d(width)
        self.relu2b = nn.ReLU()
        self.branch2c = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn2c = nn.BatchNorm2d(out_channels)
        self.project = stride != 1 or in_channels != out_channels
        if self.project:
            self.branch1 = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu2a(self.bn2a(self.branch2a(x)))
        y = self.relu2b(self.bn2b(self.branch2b(y)))
        y = self.bn2c(self.branch2c(y))
        shortcut = self.bn1(self.branch1(x)) if self.project else x
        return self.relu(y + shortcut)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with image-level features (the paper's figure 5), then the 1x1 fusion."""

    def __init__(self, in_channels: int, channels: int, rates: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList([ConvBNReLU(in_channels, channels, 1)]
                                      + [ConvBNReLU(in_channels, channels, 3, rate) for rate in rates])
        self.image_pool = nn.AdaptiveAvgPool2d(1)
        self.image_conv = ConvBNReLU(in_channels, channels, 1)
        self.fuse = ConvBNReLU(channels * (len(rates) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches]
        image = self.image_conv(self.image_pool(x))
        outputs.append(F.interpolate(image, size=x.shape[-2:], mode="bilinear", align_corners=True))
        return self.fuse(torch.cat(outputs, dim=1))


class DeepLabV3(nn.Module):
    """DeepLab v3 with ASPP on a ResNet v1 backbone; see the module docstring for the architecture.

    :func:`deeplabv3_resnet101` builds the paper's model. The constructor's extra knobs exist for thin copies
    of the same graph (tests, quick experiments): ``units`` per stage, ``base_width`` (the first stage's
    bottleneck width, 64 in ResNet; later stages double it; the stem has ``base_width`` channels too) and
    ``aspp_channels`` (256 in the paper).
    """

    def __init__(self, *, num_classes: int = 21, output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
                 units: Sequence[int] = RESNET101_UNITS, base_width: int = 64, aspp_channels: int = 256):
        super().__init__()
        if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride not in OUTPUT_STRIDES:
            raise ModelArgumentError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        self.num_classes = _count("num_classes", num_classes)
        units = _counts("units", units, 4)
        self.multi_grid = _counts("multi_grid", multi_grid, units[-1])
        self.output_stride = output_stride
        base_width = _count("base_width", base_width)
        aspp_channels = _count("aspp_channels", aspp_channels)

        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn_conv1 = nn.BatchNorm2d(base_width)
        self.conv1_relu = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        channels = base_width
        for index, (stride, dilations) in enumerate(stage_plan(output_stride, self.multi_grid, units)):
            width = base_width * 2 ** index
            stage = []
            for i, dilation in enumerate(dilations):
                stage.append(Bottleneck(channels, width, stride=stride if i == 0 else 1, dilation=dilation))
                channels = 4 * width
            setattr(self, f"res{index + 2}", nn.Sequential(*stage))
        self.aspp_rates = tuple(rate * 16 // output_stride for rate in ASPP_RATES)
        self.aspp = ASPP(channels, aspp_channels, self.aspp_rates)
        self.classifier = nn.Conv2d(aspp_channels, self.num_classes, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """block4's output, at 1/output_stride of the input (rounded up)."""
        x = self.pool1(self.conv1_relu(self.bn_conv1(self.conv1(x))))
        return self.res5(self.res4(self.res3(self.res2(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.aspp(self.features(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


def deeplabv3_resnet101(*, num_classes: int = 21, output_stride: int = 16,
                        multi_grid: Sequence[int] = (1, 2, 4)) -> DeepLabV3:
    """The paper's DeepLab v3 ResNet-101 (randomly initialised; no weights are published for it).

    ``output_stride`` 16 or 8; ``multi_grid``: block4's three unit rates, multiplied by 2 (OS 16) or 4 (OS 8).
    Raises :class:`ModelArgumentError` (a ValueError) naming the bad argument.
    """
    return DeepLabV3(num_classes=num_classes, output_stride=output_stride, multi_grid=multi_grid)
