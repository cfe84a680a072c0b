"""caffe-segnet's layers (SegNet, Bayesian SegNet, and ENet, whose Caffe copies them; DeconvNet's BN is the same
code): ``BN``, ``Upsample`` and Dropout that samples at test time (its ``DenseImageData`` reader is a data
layer, in :mod:`protoseg.layers.data`).

Facts from alexgkendall/caffe-segnet ``src/caffe/layers/{bn,upsample,dropout}_layer.cpp``, confirmed by the
``segnet_bn`` and ``segnet_upsample`` fixtures:

* ``BN``: blobs [scale, shift], each 1 x C x 1 x 1. ``bn_mode: INFERENCE``: ``y = x * scale + shift`` (SegNet's
  scripts fold the statistics into the two blobs). ``LEARN``, the default, uses the batch's own statistics at
  any phase: ``y = (x - E[x]) / sqrt(E[x^2] - E[x]^2 + 1e-9) * scale + shift`` over N, H and W; optional tops 2
  and 3 are that mean and variance (1 x C x 1 x 1; INFERENCE leaves them zero).
* ``Upsample``: output ``upsample_h x upsample_w`` when given, else ``H * scale_h - pad_out_h`` (``scale``
  for both axes unless ``scale_h``/``scale_w``); then :func:`~protoseg.layers.pool.scatter_by_mask`. The mask
  index is not re-mapped to the output width, so ``scale: 2`` after pooling an odd size misplaces rows exactly
  as Caffe does.
* Dropout with ``sample_weights_test: true`` (Bayesian SegNet) keeps dropping at test time: each value is kept
  with probability ``1 - ratio`` and scaled by ``1 / (1 - ratio)``. Draws use torch's generator, so
  ``torch.manual_seed`` makes them repeatable; ``protoseg run --samples N`` averages N passes.

In the TRAIN phase (:mod:`protoseg.train`) ``BN`` computes as at test time (LEARN normalises with the batch in
both phases and keeps no running statistics; its backward is the gradient of that forward) and Dropout drops.
"""

from __future__ import annotations

import torch
from torch import nn

from protoseg.coordmap import IDENTITY
from protoseg.layers.activation import dropout
from protoseg.layers.base import Bottoms, Converter, Shape, register
from protoseg.layers.pool import scatter_by_mask

#: caffe-segnet's fixed variance epsilon.
SEGNET_BN_EPS = 1e-9


class SegNetBN(nn.Module):
    def __init__(self, learn: bool, stats: int):
        super().__init__()
        self.learn, self.stats = learn, stats
        self.scale: nn.Parameter | None = None
        self.shift: nn.Parameter | None = None

    def forward(self, x: torch.Tensor):
        if not self.learn:
            y = x * self.scale + self.shift
            zeros = self.scale.new_zeros(self.scale.shape)
            return (y, *[zeros] * self.stats) if self.stats else y
        mean = x.mean(dim=(2, 3), keepdim=True).mean(dim=0, keepdim=True)  # spatial, then batch, as Caffe
        square = (x * x).mean(dim=(2, 3), keepdim=True).mean(dim=0, keepdim=True)
        var = square - mean * mean
        y = (x - mean) / torch.sqrt(var + SEGNET_BN_EPS) * self.scale + self.shift
        return (y, mean, var)[: 1 + self.stats] if self.stats else y

    def channel_affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(scale, shift)`` in INFERENCE mode without statistics tops, for folding (:mod:`protoseg.optimize`)."""
        if self.learn or self.stats:
            return None
        return self.scale.double().flatten(), self.shift.double().flatten()

    def extra_repr(self) -> str:
        return ("LEARN (batch statistics)" if self.learn else "INFERENCE") + (", with statistics tops" if self.stats
                                                                              else "")


@register("BN", fork=("segnet", "deconvnet"))
class SegNetBNConverter(Converter):
    """caffe-segnet's BN: ``x * scale + shift`` (INFERENCE) or batch statistics (LEARN), two blobs."""

    tops = (1, 3)
    stored_blobs = (2,)

    def setup(self) -> None:
        p = self.param.bn_param
        self.learn = type(p).BNMode.Name(p.bn_mode) == "LEARN"

    def infer(self, shapes: Bottoms) -> list[Shape]:
        if len(shapes[0]) != 4:
            raise self.shape_error(f"expects an N x C x H x W bottom, got {shapes[0]}")
        stats = (1, shapes[0][1], 1, 1)
        return [shapes[0]] + [stats] * (len(self.param.top) - 1)

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        return [(1, shapes[0][1], 1, 1)] * 2

    def coord_map(self, shapes: Bottoms):
        return IDENTITY

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = SegNetBN(self.learn, len(self.param.top) - 1)
        m.scale, m.shift = blobs
        return m


def upsample_size(in_hw, size: tuple[int, int] | None, scale: tuple[int, int], pad_out: tuple[int, int]):
    """caffe-segnet's UpsampleLayer::Reshape: the explicit size, else ``H * scale - pad_out`` per axis."""
    if size is not None:
        return size
    return in_hw[0] * scale[0] - pad_out[0], in_hw[1] * scale[1] - pad_out[1]


class Upsample(nn.Module):
    def __init__(self, size: tuple[int, int] | None, scale: tuple[int, int], pad_out: tuple[int, int]):
        super().__init__()
        self.size, self.scale, self.pad_out = size, scale, pad_out

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out_h, out_w = upsample_size(x.shape[-2:], self.size, self.scale, self.pad_out)
        return scatter_by_mask(x, mask, out_h, out_w)

    def extra_repr(self) -> str:
        return f"size={self.size}" if self.size else f"scale={self.scale}, pad_out={self.pad_out}"


@register("Upsample", fork="segnet")
class UpsampleConverter(Converter):
    """caffe-segnet's Upsample: scatter by a pooling mask into an explicit or scaled size."""

    bottoms = (2, 2)

    def setup(self) -> None:
        p = self.param.upsample_param
        if p.HasField("upsample_h") != p.HasField("upsample_w"):
            raise self.error("give both upsample_h and upsample_w")
        if p.HasField("scale_h") != p.HasField("scale_w"):
            raise self.error("give both scale_h and scale_w")
        self.size = (p.upsample_h, p.upsample_w) if p.HasField("upsample_h") else None
        if self.size is not None and min(self.size) <= 1:
            raise self.error(f"upsample_h and upsample_w must be > 1, got {self.size}")
        self.scale = (p.scale_h, p.scale_w) if p.HasField("scale_h") else (p.scale, p.scale)
        self.pad_out = (int(p.pad_out_h), int(p.pad_out_w))
        if self.size is None:
            if p.HasField("scale") and p.HasField("scale_h"):
                raise self.error("give scale, or scale_h and scale_w, not both (caffe-segnet's check)")
            if min(self.scale) <= 1:
                raise self.error(f"scale must be > 1, got {self.scale}")
            if any(pad and s != 2 for pad, s in zip(self.pad_out, self.scale)):
                raise self.error("pad_out_h / pad_out_w need scale 2 on that axis (caffe-segnet's check)")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        x, mask = shapes
        if len(x) != 4 or tuple(mask) != tuple(x):
            hint = "" if self.size is not None else ("; the poolings before it must divide the input size evenly: "
                                                     "give an input size they do with --input NAME=N,C,H,W")
            raise self.shape_error(f"the mask {mask} must have the shape of the input {x} (N x C x H x W){hint}")
        if self.size is not None and x[2] * x[3] > self.size[0] * self.size[1]:
            raise self.shape_error(f"upsample_h/upsample_w {self.size} hold fewer positions than the {x[2]} x {x[3]} "
                                   "input; give the input size this net was built for with --input")
        out = upsample_size(x[2:], self.size, self.scale, self.pad_out)
        if min(out) <= 0:
            raise self.shape_error(f"output size {out} from a {x[2]} x {x[3]} input")
        return [(x[0], x[1], *out)]

    def fixed_size(self) -> str | None:
        return None if self.size is None else f"upsample_h/upsample_w {self.size[0]} x {self.size[1]}"

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Upsample(self.size, self.scale, self.pad_out)


@register("Dropout", fork="segnet")
class SegNetDropout(Converter):
    """caffe-segnet's Dropout: the identity at test time, unless ``sample_weights_test`` samples it."""

    preserves_coords = True

    def setup(self) -> None:
        p = self.param.dropout_param
        self.sample = p.sample_weights_test
        self.ratio = p.dropout_ratio
        if self.sample and not 0 < self.ratio < 1:
            raise self.error(f"dropout_ratio {self.ratio} must be between 0 and 1")

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return dropout(self, self.ratio, self.sample)
