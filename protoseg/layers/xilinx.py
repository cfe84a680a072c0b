"""caffe-xilinx's ``DeephiResize`` (the Vitis AI model zoo's Caffe: its FPN and UNet decoders upsample with it).

Facts from Xilinx/Vitis-AI ``AI-Model-Zoo/caffe-xilinx/src/caffe/layers/deephi_resize_layer.cpp`` (no Caffe
fixture exists for it; its arithmetic is OpenCV's, so the tests check against a transcription of
``cv::resize`` and, where installed, ``cv::resize`` itself):

* Size: ``new_height x new_width`` when given, else ``H * scale_h x W * scale_w`` multiplied in float32 and
  truncated to int (``scale_h``/``scale_w`` default to 1). Both of a pair or neither, as the layer CHECKs.
* Each channel plane goes through ``cv::resize`` in a matrix whose rows are W and columns H, so OpenCV's
  horizontal pass runs along H and its vertical pass along W:

  - ``NEAREST`` (the default): source index ``min(floor(i * (1 / (out / in))), in - 1)`` per axis, in double.
  - ``BILINEAR``: per output index ``f = float((i + 0.5) * in / out - 0.5)``, ``s = floor(f)``, weights
    ``1 - (f - s)`` and ``f - s`` in float32. Along H a source index below 0 or at the last pixel takes that
    pixel alone; along W the two source rows are clipped to the plane and keep their weights. Blending is
    float32, H first. An exact 2x reduction of both axes is OpenCV's area average of each 2 x 2 block.
* ``use_dpu: true`` swaps in the DPU's fixed-point uint8 resize, a hardware emulation protoseg does not do.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register


def deephi_size(hw: tuple[int, int], size: tuple[int, int] | None, scale: tuple[float, float]) -> tuple[int, int]:
    """DeephiResizeLayer::Reshape: the given size, else each side times its scale in float32, truncated."""
    if size is not None:
        return size
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.float32(hw[0]) * np.float32(scale[0]), np.float32(hw[1]) * np.float32(scale[1])
    if not all(np.isfinite(s) and abs(s) < 2**31 for s in scaled):
        raise OverflowError(f"{hw[0]} x {hw[1]} scaled by {scale[0]:g} x {scale[1]:g} is beyond any blob")
    return int(scaled[0]), int(scaled[1])


def _nearest(size: int, out: int, device) -> torch.Tensor:
    step = 1.0 / (out / size)  # OpenCV's ifx = 1 / inv_scale_x, in double
    index = torch.floor(torch.arange(out, dtype=torch.float64, device=device) * step).long()
    return index.clamp(max=size - 1)


def _linear(size: int, out: int, device, edges_exact: bool):
    """Source indices and float32 weights along one axis: OpenCV's horizontal pass (``edges_exact``: outside
    the plane the edge pixel alone) or its vertical one (rows clipped, weights kept)."""
    pos = ((torch.arange(out, dtype=torch.float64, device=device) + 0.5) * (1.0 / (out / size)) - 0.5).float()
    first = torch.floor(pos)
    frac = pos - first
    first = first.long()
    if edges_exact:
        outside = (first < 0) | (first >= size - 1)
        frac = torch.where(outside, 0.0, frac)
        first = first.clamp(0, size - 1)
    lo, hi = first.clamp(0, size - 1), (first + 1).clamp(0, size - 1)
    return lo, hi, 1.0 - frac, frac


class DeephiResize(nn.Module):
    def __init__(self, bilinear: bool, size: tuple[int, int] | None, scale: tuple[float, float]):
        super().__init__()
        self.bilinear, self.size, self.scale = bilinear, size, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        out_h, out_w = deephi_size((h, w), self.size, self.scale)
        if not self.bilinear:
            return x.index_select(2, _nearest(h, out_h, x.device)).index_select(3, _nearest(w, out_w, x.device))
        if (h, w) == (2 * out_h, 2 * out_w):  # OpenCV's INTER_AREA shortcut for an exact halving
            return F.avg_pool2d(x, 2)
        lo, hi, a0, a1 = _linear(h, out_h, x.device, edges_exact=True)
        along_h = x.index_select(2, lo) * a0.to(x.dtype)[:, None] + x.index_select(2, hi) * a1.to(x.dtype)[:, None]
        lo, hi, b0, b1 = _linear(w, out_w, x.device, edges_exact=False)
        return along_h.index_select(3, lo) * b0.to(x.dtype) + along_h.index_select(3, hi) * b1.to(x.dtype)

    def extra_repr(self) -> str:
        how = "bilinear" if self.bilinear else "nearest"
        return f"{how}, size={self.size}" if self.size else f"{how}, scale={self.scale}"


@register("DeephiResize", fork="xilinx")
class DeephiResizeConverter(Converter):
    """caffe-xilinx's DeephiResize: OpenCV's nearest or bilinear resize to a given or scaled size."""

    def setup(self) -> None:
        p = self.param.deephi_resize_param
        if p.HasField("new_height") != p.HasField("new_width"):
            raise self.error("give both new_height and new_width (caffe-xilinx's check)")
        if p.HasField("scale_h") != p.HasField("scale_w"):
            raise self.error("give both scale_h and scale_w (caffe-xilinx's check)")
        if p.use_dpu:
            raise self.error("use_dpu: true runs the DPU's fixed-point uint8 resize, which protoseg does not "
                             "emulate; set use_dpu: false for the float model's resize")
        self.bilinear = type(p).ResizeType.Name(p.resize_type) == "BILINEAR"
        self.size = (int(p.new_height), int(p.new_width)) if p.HasField("new_height") else None
        self.scale = (float(p.scale_h), float(p.scale_w))
        if self.size is None and not all(np.isfinite(s) and s > 0 for s in self.scale):
            raise self.error(f"scale_h and scale_w must be positive, got {self.scale[0]:g} and {self.scale[1]:g}")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        x = shapes[0]
        if len(x) != 4:
            raise self.shape_error(f"expects an N x C x H x W bottom, got {x}")
        try:
            size = deephi_size(x[2:], self.size, self.scale)
        except OverflowError as e:
            raise self.shape_error(str(e)) from None
        if min(size) <= 0:
            raise self.shape_error(f"resizes {x[2]} x {x[3]} to {size[0]} x {size[1]}; give a larger input or scale")
        return [(*x[:2], *size)]

    def fixed_size(self) -> str | None:
        return f"new_height/new_width {self.size[0]} x {self.size[1]}" if self.size is not None else None

    def coord_map(self, shapes: Bottoms):
        if not self.bilinear:
            return None  # floor(i * in / out): no affine map
        (_, _, h, w), (_, _, oh, ow) = shapes[0], self.infer(shapes)[0]
        steps = Fraction(h, oh), Fraction(w, ow)
        return tuple((s, (s - 1) / 2) for s in steps)  # pixel centres: x_in = s * (x_out + 1/2) - 1/2

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return DeephiResize(self.bilinear, self.size, self.scale)
