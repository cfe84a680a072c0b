"""PSPNet's Caffe fork (also ICNet's): its ``BN`` layer.

hszhao/PSPNet ``src/caffe/layers/bn_layer.cpp``: four blobs, each 1 x C x 1 x 1 (slope, bias, mean, variance);
at test time (and when ``frozen``) ``y = slope * (x - mean) / sqrt(variance + eps) + bias`` with the stored
statistics, ``eps`` from ``bn_param`` (1e-5 by default). caffe-segnet's ``BN`` is another layer of the same name
(:mod:`protoseg.layers.segnet`); the fork decides which.

TRAIN phase (the layer is registered as ``BNLayer``; its cuDNN variant is never created): unless ``frozen``, the
batch's mean and biased variance (over N, H and W) normalise, and the stored ones become
``momentum * stored + (1 - momentum) * batch`` (``momentum`` 0.9 by default, no variance correction).
LayerSetUp fixes the statistics' ``lr_mult``/``decay_mult`` at 0, and with ``frozen`` the slope's and bias's too:
a frozen BN is a fixed affine map in training as well.
"""

from __future__ import annotations

import torch
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register
from protoseg.train import Spec, TrainPhase


class AffineNorm(TrainPhase):
    """``(x - mean) / sqrt(var + eps) * slope + bias``, blobs shaped 1 x C x 1 x 1; in the TRAIN phase, unless
    ``frozen``, the batch's statistics, folded into the stored ones with ``momentum``."""

    def __init__(self, eps: float, frozen: bool = False, momentum: float = 0.9):
        super().__init__()
        self.eps, self.frozen, self.momentum = eps, frozen, momentum
        self.slope: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self.mean: nn.Parameter | None = None
        self.variance: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen or not self.in_train_phase():
            return (x - self.mean) / torch.sqrt(self.variance + self.eps) * self.slope + self.bias
        mean, var = (s.view_as(self.mean) for s in self.channel_statistics(x))
        with torch.no_grad():
            self.mean.mul_(self.momentum).add_((1.0 - self.momentum) * mean)
            self.variance.mul_(self.momentum).add_((1.0 - self.momentum) * var)
        return (x - mean) / torch.sqrt(var + self.eps) * self.slope + self.bias

    def channel_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` with ``y = a[c] * x + b[c]``, in float64, for folding (:mod:`protoseg.optimize`)."""
        a = self.slope.double().flatten() / torch.sqrt(self.variance.double().flatten() + self.eps)
        return a, self.bias.double().flatten() - self.mean.double().flatten() * a

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


@register("BN", fork="pspnet")
class PSPNetBN(Converter):
    """PSPNet's BN: ``slope * (x - mean) / sqrt(var + eps) + bias`` from four 1 x C x 1 x 1 blobs."""

    preserves_coords = True
    stored_blobs = (4,)

    def setup(self) -> None:
        p = self.param.bn_param
        self.eps, self.frozen, self.momentum = p.eps, p.frozen, p.momentum
        if not self.eps >= 0:
            raise self.error(f"eps {self.eps} must be a number >= 0")

    def train_specs(self, specs: list[Spec]) -> list[Spec]:
        """PSPNet's LayerSetUp: mean and variance at lr_mult = decay_mult = 0, slope and bias too when frozen."""
        return [Spec(0.0, 0.0) if i >= 2 or self.frozen else spec for i, spec in enumerate(specs)]

    def infer(self, shapes: Bottoms) -> list[Shape]:
        if len(shapes[0]) != 4:
            raise self.shape_error(f"expects an N x C x H x W bottom, got {shapes[0]}")
        return [shapes[0]]

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        return [(1, shapes[0][1], 1, 1)] * 4

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = AffineNorm(self.eps, self.frozen, self.momentum)
        m.slope, m.bias, m.mean, m.variance = blobs
        return m
