"""BVLC Caffe's Crop: cut bottom 0 to bottom 1's size from ``axis`` on, at the given offsets.

``offset`` holds nothing (0 everywhere), one value for every cropped axis, or one per cropped axis. The 2016
FCN files (and HED's, CRF-as-RNN's, DeconvNet's) give no ``crop_param`` at all: the Caffe of that time inferred
the offsets from the coordinate mapping between the two bottoms; :func:`protoseg.coordmap.crop_offsets` does
that from the bottoms' lineages. Where they descend from different roots (two independent inputs), the offset
is 0, as in BVLC Caffe.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import torch
from torch import nn

from protoseg.coordmap import crop_offsets
from protoseg.errors import ProtosegWarning, quote
from protoseg.layers.base import Bottoms, Converter, Shape, register

#: The forks whose Caffe has ``crop_param`` (read in their caffe.proto). There a Crop without one may mean BVLC
#: Caffe 1.0's offsets of 0 or early 2016's inferred ones, so protoseg says which it took; HED's and CRF-as-RNN's
#: Caffe only ever inferred them.
CROP_PARAM_FORKS = frozenset({"bvlc", "nvcaffe", "xilinx"})


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
    """Crop to the second bottom's size; parameterless Crops infer offsets from the coordinate mapping."""

    bottoms = (2, 2)

    def setup(self) -> None:
        p = self.param.crop_param
        self.raw_axis = p.axis
        self.raw_offsets = list(p.offset)
        #: 2016-era files give no crop_param: offsets then come from the coordinate mapping (H, W).
        self.parameterless = not self.param.HasField("crop_param")

    def resolve(self, shapes: Bottoms) -> tuple[int, tuple[int, ...]]:
        """(first cropped axis, offset per cropped axis) for these bottoms."""
        big, ref = shapes
        if len(big) != len(ref):
            raise self.shape_error(f"bottoms have different ranks: {big} and {ref}")
        ndim = len(big)
        if self.parameterless:
            inferred = crop_offsets(shapes.lineage(0), shapes.lineage(1))
            if inferred is not None and ndim == 4:
                return 2, tuple(inferred)
        axis = self.axis(self.raw_axis, ndim)
        count = ndim - axis
        given = self.raw_offsets
        if len(given) == 0:
            return axis, (0,) * count
        if len(given) == 1:
            return axis, tuple(given) * count
        if len(given) != count:
            raise self.error(f"gives {len(given)} offsets for {count} cropped axes (from axis {axis}); "
                             f"give 1 or {count}")
        return axis, tuple(given)

    def infer(self, shapes: Bottoms) -> list[Shape]:
        big, ref = shapes
        axis, offsets = self.resolve(shapes)
        if self.parameterless and any(offsets) and self.fork in CROP_PARAM_FORKS:
            warnings.warn(
                f"{self.where + ': ' if self.where else ''}layer {quote(self.name)} (Crop) has no crop_param: "
                f"offsets {list(offsets)} (H, W) inferred from the coordinate mapping, as the Caffe of 2016 did; "
                "write crop_param { axis: 2 offset: ... } to silence this", ProtosegWarning, stacklevel=2)
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

    def coord_map(self, shapes: Bottoms):
        axis, offsets = self.resolve(shapes)
        spatial = dict(zip(range(axis, axis + len(offsets)), offsets))
        return tuple((Fraction(1), Fraction(spatial.get(d, 0))) for d in (2, 3))

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Crop(*self.resolve(shapes))
