"""PSPNet's Caffe fork (also ICNet's): its ``BN`` layer.

hszhao/PSPNet ``src/caffe/layers/bn_layer.cpp``: four blobs, each 1 x C x 1 x 1 (slope, bias, mean, variance);
at test time (and when ``frozen``) ``y = slope * (x - mean) / sqrt(variance + eps) + bias`` with the stored
statistics, ``eps`` from ``bn_param`` (1e-5 by default). caffe-segnet's ``BN`` is another layer of the same name
(:mod:`protoseg.layers.segnet`); the fork decides which.
"""

from __future__ import annotations

import torch
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register


class AffineNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps) * slope + bias``, blobs shaped 1 x C x 1 x 1."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps
        self.slope: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self.mean: nn.Parameter | None = None
        self.variance: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / torch.sqrt(self.variance + self.eps) * self.slope + self.bias

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
        self.eps = self.param.bn_param.eps
        if not self.eps >= 0:
            raise self.error(f"eps {self.eps} must be a number >= 0")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        if len(shapes[0]) != 4:
            raise self.shape_error(f"expects an N x C x H x W bottom, got {shapes[0]}")
        return [shapes[0]]

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        return [(1, shapes[0][1], 1, 1)] * 4

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = AffineNorm(self.eps)
        m.slope, m.bias, m.mean, m.variance = blobs
        return m
