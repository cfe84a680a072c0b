"""Element-wise layers: ReLU (leaky), PReLU, Sigmoid, TanH, AbsVal, Power, Dropout (identity at test).

Dropout follows ``src/caffe/layers/dropout_layer.cpp``: in the TRAIN phase each value is kept with probability
``1 - dropout_ratio`` (``caffe_rng_bernoulli``) and scaled by ``1 / (1 - dropout_ratio)``, the backward applying
the same mask and scale; at test time it is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register
from protoseg.train import TrainPhase


class ReLU(nn.Module):
    def __init__(self, negative_slope: float):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0:
            return F.relu(x)
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" if self.negative_slope else ""


@register("ReLU")
class ReLUConverter(Converter):
    """Caffe's ReLU, leaky with ``negative_slope``."""

    preserves_coords = True

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return ReLU(self.param.relu_param.negative_slope)


class PReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.weight.reshape(-1))


@register("PReLU")
class PReLUConverter(Converter):
    """PReLU: one slope per channel, or one 0-d blob when ``channel_shared``."""

    preserves_coords = True

    def accepts(self, index: int, want: Shape, have: Shape) -> bool:
        # A shared slope saved as a 1-element vector (older writers) holds the same value as Caffe's 0-d blob.
        return super().accepts(index, want, have) or (want == () and tuple(have) == (1,))

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        if self.param.prelu_param.channel_shared:
            return [()]  # Caffe's PReLU holds one 0-d blob (vector<int>(0)) when the slope is shared
        if len(shapes[0]) < 2:
            raise self.shape_error(f"needs a bottom with a channel axis, got {shapes[0]}")
        return [(shapes[0][1],)]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = PReLU()
        m.weight = blobs[0]
        return m


class Elementwise(nn.Module):
    """One torch function of one tensor, named for ``gm.code`` readers."""

    def __init__(self, fn: str):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(torch, self.fn)(x)

    def extra_repr(self) -> str:
        return self.fn


_ELEMENTWISE = {"Sigmoid": "sigmoid", "TanH": "tanh", "AbsVal": "abs"}


@register(*_ELEMENTWISE)
class ElementwiseConverter(Converter):
    """Sigmoid, TanH and AbsVal: one torch function each."""

    preserves_coords = True

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Elementwise(_ELEMENTWISE[self.type])


class Power(nn.Module):
    """Caffe's Power: ``(shift + scale * x) ** power``."""

    def __init__(self, power: float, scale: float, shift: float):
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.scale != 1.0:
            y = y * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        if self.power != 1.0:
            y = torch.pow(y, self.power)
        return y

    def extra_repr(self) -> str:
        return f"power={self.power}, scale={self.scale}, shift={self.shift}"


@register("Power")
class PowerConverter(Converter):
    """Power: ``(shift + scale * x) ** power``."""

    preserves_coords = True

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        p = self.param.power_param
        return Power(p.power, p.scale, p.shift)


class Identity(nn.Module):
    """A layer that only acts in training (Python dropout layers): the identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Dropout(TrainPhase):
    """Caffe's Dropout: the identity at test time; in the TRAIN phase, or at any time with ``sample_test``
    (caffe-segnet's ``sample_weights_test``), each value is kept with probability ``1 - ratio`` and scaled by
    ``1 / (1 - ratio)``. Draws come from torch's generator (``torch.manual_seed`` repeats them)."""

    def __init__(self, ratio: float, sample_test: bool = False):
        super().__init__()
        self.ratio, self.sample_test = ratio, sample_test

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.sample_test or self.in_train_phase()):
            return x
        keep = torch.rand_like(x) >= self.ratio
        return torch.where(keep, x * (1.0 / (1.0 - self.ratio)), 0)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}" + (", sampled at test time" if self.sample_test else "")


@register("Dropout")
class DropoutConverter(Converter):
    """Dropout: the identity at test time (Caffe scales while training)."""

    preserves_coords = True

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return dropout(self, self.param.dropout_param.dropout_ratio)


def dropout(converter: Converter, ratio: float, sample_test: bool = False) -> Dropout:
    """The Dropout module of a converter's layer; a ratio no Caffe can train with refuses the TRAIN phase."""
    m = Dropout(ratio, sample_test)
    if not 0 <= ratio < 1:
        m.refusal = converter.error(f"dropout_ratio {ratio:g} must be in [0, 1) to train (Caffe keeps each value "
                                    "with probability 1 - dropout_ratio and scales it by 1 / (1 - dropout_ratio))")
    return m
