"""BVLC Caffe's Crop: cut bottom 0 to bottom 1's size from ``axis`` on, at the given offsets.

``offset`` holds nothing (0 everywhere), one value for every cropped axis, or one per cropped axis. The 2016
FCN files give no ``crop_param`` at all: the Caffe of that time inferred the offsets from the coordinate mapping
between the two bottoms; :mod:`protoseg.coordmap` does that and fills ``offsets`` in before the graph is built.
"""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import nn

from protoseg.layers.base import Converter, Shape, register


class Crop(nn.Module):
    def __init__(self, axis: int, offsets: tuple[int, ...]):
        super().__init__()
        self.axis, self.offsets = axis, offsets

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        for i, off in enumerate(self.offsets):
            dim = self.axis + i
            x = x.narrow(dim, off, like.shape[dim])
        return x

    def extra_repr(self) -> str:
        return f"axis={self.axis}, offsets={self.offsets}"


@register("Crop")
class CropConverter(Converter):
    bottoms = (2, 2)

    def setup(self) -> None:
        p = self.param.crop_param
        self.raw_axis = p.axis
        self.raw_offsets = list(p.offset)
        #: 2016-era files give no crop_param: the IR infers offsets from the coordinate mapping (H, W).
        self.needs_coordmap = not self.param.HasField("crop_param")
        self.inferred: list[int] | None = None

    def offsets(self, ndim: int) -> tuple[int, tuple[int, ...]]:
        axis = self.axis(self.raw_axis, ndim)
        count = ndim - axis
        if self.inferred is not None:
            if axis != 2 or ndim != 4:
                raise self.error("offsets can be inferred only for 4-D blobs cropped from axis 2; give crop_param")
            return axis, tuple(self.inferred)
        given = self.raw_offsets
        if len(given) == 0:
            return axis, (0,) * count
        if len(given) == 1:
            return axis, tuple(given) * count
        if len(given) != count:
            raise self.error(f"gives {len(given)} offsets for {count} cropped axes (from axis {axis}); give 1 or {count}")
        return axis, tuple(given)

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        big, ref = shapes
        if len(big) != len(ref):
            raise self.shape_error(f"bottoms have different ranks: {big} and {ref}")
        axis, offsets = self.offsets(len(big))
        self.resolved = (axis, offsets)
        out = list(big)
        for i, off in enumerate(offsets):
            d = axis + i
            if off < 0 or off + ref[d] > big[d]:
                raise self.shape_error(
                    f"cannot crop {ref[d]} at offset {off} out of {big[d]} along axis {d} "
                    f"(bottoms {big} and {ref}); the input may be too small for this net"
                )
            out[d] = ref[d]
        return [tuple(out)]

    def coord_map(self):
        axis, offsets = self.resolved
        spatial = dict(zip(range(axis, axis + len(offsets)), offsets))
        return tuple((Fraction(1), Fraction(spatial.get(d, 0))) for d in (2, 3))

    def module(self, blobs: list) -> nn.Module:
        return Crop(*self.resolved)
