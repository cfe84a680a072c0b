"""DeepLab's Interp (bilinear resize, align-corners mapping) and DeepLab v1's Padding.

Interp's output size follows the fork's InterpLayer::Reshape, in this precedence: shrink only, zoom only,
explicit height + width, shrink then zoom (whatever order the prototxt writes them in), then a second bottom's
size (DeepLab v1's fork takes exactly one of them); :func:`interp_size` is that rule, used by shape inference and by the module alike. ``pad_beg`` and
``pad_end`` (never positive in the fork) crop the input before resizing. The sampling is
``src = dst * (in - 1) / (out - 1)``, i.e. ``align_corners=True`` in torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register


def interp_size(in_hw, like_hw, zoom: int | None, shrink: int | None, size: tuple[int, int] | None,
                pad: tuple[int, int]):
    """The fork's InterpLayer::Reshape: output (H, W) for an input of ``in_hw`` (before the pads crop it) and
    a second bottom of ``like_hw`` (or None). Shape inference and the module both size with this."""
    h, w = in_hw[0] + pad[0] + pad[1], in_hw[1] + pad[0] + pad[1]
    if (zoom is None) != (shrink is None) or (zoom is not None and size is None):
        if shrink is not None:
            h, w = (h - 1) // shrink + 1, (w - 1) // shrink + 1
        if zoom is not None:
            h, w = h + (h - 1) * (zoom - 1), w + (w - 1) * (zoom - 1)
        return h, w
    if size is not None:  # before shrink + zoom together, as the fork's if-chain has it
        return size
    return like_hw[0], like_hw[1]


class Interp(nn.Module):
    def __init__(self, zoom: int | None, shrink: int | None, size: tuple[int, int] | None, pad: tuple[int, int]):
        super().__init__()
        self.zoom, self.shrink, self.size, self.pad = zoom, shrink, size, pad

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        out = interp_size(x.shape[-2:], None if like is None else like.shape[-2:], self.zoom, self.shrink,
                          self.size, self.pad)
        beg, end = self.pad
        if beg or end:
            x = x[..., -beg : x.shape[-2] + end, -beg : x.shape[-1] + end]
        return F.interpolate(x, size=out, mode="bilinear", align_corners=True)

    def extra_repr(self) -> str:
        return f"zoom={self.zoom}, shrink={self.shrink}, size={self.size}, pad={self.pad}"


@register("Interp", fork=("deeplab-v1", "deeplab-v2"))
class InterpConverter(Converter):
    """DeepLab's Interp: align-corners bilinear resize by zoom, shrink, size or a second bottom."""

    bottoms = (1, 2)

    def setup(self) -> None:
        p = self.param.interp_param
        self.zoom = p.zoom_factor if p.HasField("zoom_factor") else None
        self.shrink = p.shrink_factor if p.HasField("shrink_factor") else None
        if p.HasField("height") != p.HasField("width"):
            raise self.error("give both height and width")
        has_size = p.HasField("height") and p.HasField("width")
        if has_size and (p.height <= 0 or p.width <= 0):
            raise self.error(f"height {p.height} and width {p.width} must be positive")
        self.size = (p.height, p.width) if has_size else None
        specs = (self.zoom is not None) + (self.shrink is not None) + has_size + (len(self.param.bottom) == 2)
        if self.fork == "deeplab-v1" and specs > 1:
            raise self.error("DeepLab v1's Interp takes exactly one of zoom_factor, shrink_factor, height + width")
        self.pad = (p.pad_beg, p.pad_end)
        if p.pad_beg > 0 or p.pad_end > 0:
            raise self.error(f"pad_beg {p.pad_beg} / pad_end {p.pad_end}: DeepLab's Interp only crops (pads <= 0)")
        if (self.zoom is not None and self.zoom < 1) or (self.shrink is not None and self.shrink < 1):
            raise self.error("zoom_factor and shrink_factor must be >= 1")
        if self.zoom is None and self.shrink is None and self.size is None and len(self.param.bottom) < 2:
            raise self.error("needs zoom_factor, shrink_factor, height and width, or a second bottom to match")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        if len(shapes[0]) != 4 or any(len(s) != 4 for s in shapes[1:]):
            raise self.shape_error(f"bottoms must be N x C x H x W, got {list(shapes)}")
        n, c, h, w = shapes[0]
        if h + self.pad[0] + self.pad[1] <= 0 or w + self.pad[0] + self.pad[1] <= 0:
            raise self.shape_error(f"pads {self.pad} leave nothing of a {h} x {w} input")
        out = interp_size((h, w), shapes[1][2:] if len(shapes) == 2 else None, self.zoom, self.shrink, self.size,
                          self.pad)
        if min(out) <= 0:
            raise self.shape_error(f"output size {out[0]} x {out[1]} from a {h} x {w} input")
        return [(n, c, *out)]

    def fixed_size(self) -> str | None:
        if self.size is not None and (self.zoom is None) == (self.shrink is None):
            return f"height/width {self.size[0]} x {self.size[1]}"
        return None

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
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


@register("Padding", fork="deeplab-v1")
class Padding(Converter):
    """DeepLab v1's PADDING layer: base DeepLab crops its upsampled scores back with negative pads."""

    def setup(self) -> None:
        p = self.param.padding_param
        self.beg, self.end = p.pad_beg, p.pad_end
        if self.beg * self.end < 0:
            raise self.error(f"pad_beg {self.beg} and pad_end {self.end} must pad (>= 0) or crop (<= 0) alike, "
                             "as DeepLab v1's Padding checks")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        if len(shapes[0]) != 4:
            raise self.shape_error(f"expects an N x C x H x W bottom, got {shapes[0]}")
        n, c, h, w = shapes[0]
        out = (h + self.beg + self.end, w + self.beg + self.end)
        if min(out) <= 0:
            raise self.shape_error(f"pads ({self.beg}, {self.end}) leave nothing of a {h} x {w} input")
        return [(n, c, *out)]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Pad2d(self.beg, self.end)
