"""DeepLab's Interp (bilinear resize, align-corners mapping) and DeepLab v1's Padding.

Interp's output size follows the fork's InterpLayer::Reshape, in this precedence: shrink only, zoom only,
shrink then zoom (whatever order the prototxt writes them in), explicit height + width, then a second bottom's
size. ``pad_beg``/``pad_end`` (never positive in the fork) crop the input before resizing. The sampling is
``src = dst * (in - 1) / (out - 1)``, i.e. ``align_corners=True`` in torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Converter, Shape, register


class Interp(nn.Module):
    def __init__(self, zoom: int | None, shrink: int | None, size: tuple[int, int] | None, pad: tuple[int, int]):
        super().__init__()
        self.zoom, self.shrink, self.size, self.pad = zoom, shrink, size, pad

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        if self.shrink is not None:
            h, w = (h - 1) // self.shrink + 1, (w - 1) // self.shrink + 1
        if self.zoom is not None:
            h, w = h + (h - 1) * (self.zoom - 1), w + (w - 1) * (self.zoom - 1)
        return h, w

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        beg, end = self.pad
        if beg or end:
            x = x[..., -beg : x.shape[-2] + end, -beg : x.shape[-1] + end]
        if self.size is not None:
            size = self.size
        elif like is not None:
            size = (like.shape[-2], like.shape[-1])
        else:
            size = self.out_size(x.shape[-2], x.shape[-1])
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def extra_repr(self) -> str:
        return f"zoom={self.zoom}, shrink={self.shrink}, size={self.size}, pad={self.pad}"


@register("Interp")
class InterpConverter(Converter):
    bottoms = (1, 2)

    def setup(self) -> None:
        p = self.param.interp_param
        self.zoom = p.zoom_factor if p.HasField("zoom_factor") else None
        self.shrink = p.shrink_factor if p.HasField("shrink_factor") else None
        has_size = p.HasField("height") and p.HasField("width")
        if p.HasField("height") != p.HasField("width"):
            raise self.error("give both height and width")
        self.size = (p.height, p.width) if has_size and self.zoom is None and self.shrink is None else None
        self.pad = (p.pad_beg, p.pad_end)
        if p.pad_beg > 0 or p.pad_end > 0:
            raise self.error(f"pad_beg {p.pad_beg} / pad_end {p.pad_end}: DeepLab's Interp only crops (pads <= 0)")
        if (self.zoom is not None and self.zoom < 1) or (self.shrink is not None and self.shrink < 1):
            raise self.error("zoom_factor and shrink_factor must be >= 1")
        if self.zoom is None and self.shrink is None and self.size is None and len(self.param.bottom) < 2:
            raise self.error("needs zoom_factor, shrink_factor, height and width, or a second bottom to match")

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        n, c, h, w = shapes[0]
        h, w = h + self.pad[0] + self.pad[1], w + self.pad[0] + self.pad[1]
        if h <= 0 or w <= 0:
            raise self.shape_error(f"pads {self.pad} leave nothing of a {shapes[0][2]} x {shapes[0][3]} input")
        if self.zoom is not None or self.shrink is not None:
            h, w = self.module([]).out_size(h, w)
        elif self.size is not None:
            h, w = self.size
        else:
            h, w = shapes[1][2], shapes[1][3]
        return [(n, c, h, w)]

    def module(self, blobs: list) -> nn.Module:
        return Interp(self.zoom, self.shrink, self.size, self.pad)


class Pad2d(nn.Module):
    """Zero-pad (positive) or crop (negative) H and W by ``beg`` before and ``end`` after."""

    def __init__(self, beg: int, end: int):
        super().__init__()
        self.beg, self.end = beg, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (self.beg, self.end, self.beg, self.end))

    def extra_repr(self) -> str:
        return f"beg={self.beg}, end={self.end}"


@register("Padding")
class Padding(Converter):
    """DeepLab v1's PADDING layer: base DeepLab crops its upsampled scores back with negative pads."""

    def setup(self) -> None:
        p = self.param.padding_param
        self.beg, self.end = p.pad_beg, p.pad_end

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        n, c, h, w = shapes[0]
        out = (h + self.beg + self.end, w + self.beg + self.end)
        if min(out) <= 0:
            raise self.shape_error(f"pads ({self.beg}, {self.end}) leave nothing of a {h} x {w} input")
        return [(n, c, *out)]

    def module(self, blobs: list) -> nn.Module:
        return Pad2d(self.beg, self.end)
