"""DeconvNet's Caffe fork (HyeonwooNoh/caffe, V1 only): ``UNPOOLING``.

``src/caffe/layers/unpooling_layer.cpp``: the output is ``unpool_size`` (or ``unpool_h x unpool_w``), else
``max((H - 1) * stride + kernel - 2 * pad, H * stride - pad + 1)``; ``pad`` must be 0. MAX unpooling with the
pooling's mask as second bottom puts each value at the flat position its mask holds in a zero plane
(:func:`~protoseg.layers.pool.scatter_by_mask`); without a mask, at ``(h * stride, w * stride)`` clamped into
the plane. The fork's
BN is caffe-segnet's (:mod:`protoseg.layers.segnet`), its window/image data layers are data layers and its
accuracy layers are pruned.
"""

from __future__ import annotations

import torch
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register
from protoseg.layers.pool import scatter_by_mask


def unpool_size(in_hw, size: tuple[int, int] | None, kernel: tuple[int, int], stride: tuple[int, int]):
    """UnpoolingLayer::Reshape with pad 0."""
    if size is not None:
        return size
    return tuple(max((n - 1) * s + k, n * s + 1) for n, k, s in zip(in_hw, kernel, stride))


class Unpool(nn.Module):
    def __init__(self, size: tuple[int, int] | None, kernel: tuple[int, int], stride: tuple[int, int]):
        super().__init__()
        self.size, self.kernel, self.stride = size, kernel, stride

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        out_h, out_w = unpool_size((h, w), self.size, self.kernel, self.stride)
        if mask is None:  # each value to the top-left corner of its window, clamped into the plane as Caffe does
            rows = (torch.arange(h, device=x.device)[:, None] * self.stride[0]).clamp(max=out_h - 1)
            cols = (torch.arange(w, device=x.device)[None, :] * self.stride[1]).clamp(max=out_w - 1)
            mask = (rows * out_w + cols).to(x.dtype).expand_as(x)
        return scatter_by_mask(x, mask, out_h, out_w)

    def extra_repr(self) -> str:
        return f"size={self.size}, kernel={self.kernel}, stride={self.stride}"


@register("Unpooling", fork="deconvnet")
class UnpoolingConverter(Converter):
    """DeconvNet's UNPOOLING (MAX): scatter by the pooling mask into the unpooled size."""

    bottoms = (1, 2)

    def setup(self) -> None:
        p = self.param.unpooling_param
        method = type(p).UnpoolMethod.Name(p.unpool)
        if method != "MAX":
            raise self.error(f"unpool: {method} is not supported (no published net uses it); use MAX")
        self.kernel = self.hw(p, "kernel_size", repeated=False)
        self.stride = self.hw(p, "stride", 1, repeated=False)
        pad = self.hw(p, "pad", 0, repeated=False)
        if any(pad) or min(self.kernel) <= 0 or min(self.stride) <= 0:
            raise self.error(f"kernel {self.kernel} and stride {self.stride} must be positive and pad {pad} 0 "
                             "(DeconvNet's checks)")
        if p.HasField("unpool_size"):
            self.size = (p.unpool_size, p.unpool_size)
        elif p.HasField("unpool_h") or p.HasField("unpool_w"):
            if not (p.HasField("unpool_h") and p.HasField("unpool_w")):
                raise self.error("give both unpool_h and unpool_w")
            self.size = (p.unpool_h, p.unpool_w)
        else:
            self.size = None
        if self.size is not None and min(self.size) <= 0:
            raise self.error(f"unpool size {self.size} must be positive")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        x = shapes[0]
        if len(x) != 4 or (len(shapes) == 2 and tuple(shapes[1]) != tuple(x)):
            raise self.shape_error(f"expects an N x C x H x W input and a mask of its shape, got {list(shapes)}")
        return [(x[0], x[1], *unpool_size(x[2:], self.size, self.kernel, self.stride))]

    def fixed_size(self) -> str | None:
        return None if self.size is None else f"unpool size {self.size[0]} x {self.size[1]}"

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Unpool(self.size, self.kernel, self.stride)
