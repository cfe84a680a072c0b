"""Pooling with Caffe's arithmetic: ceil rounding, the last-window clip, and the AVE divisor.

Caffe sizes the output as ``ceil((H + 2p - k) / s) + 1``, then drops the last window when it would start in
the right padding (only when ``p > 0``). AVE divides by the window clipped to ``H + p`` (padding counts, the
overhang beyond it does not); MAX ignores padding. torch's ``ceil_mode=True`` pooling gives exactly this
when ``p <= k / 2`` and the dropped-window rule agrees; otherwise the general path pads explicitly and
divides by Caffe's divisor map, so any pad/kernel/stride Caffe accepts works.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Converter, Shape, register


def caffe_pool_size(size: int, kernel: int, pad: int, stride: int) -> int:
    """Caffe's PoolingLayer::Reshape output size along one axis."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class Pool2d(nn.Module):
    """MAX/AVE pooling of N x C x H x W with Caffe's output size and AVE divisor."""

    def __init__(self, mode: str, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
                 torch_exact: bool):
        super().__init__()
        self.mode, self.kernel, self.stride, self.pad, self.torch_exact = mode, kernel, stride, pad, torch_exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.torch_exact:
            if self.mode == "MAX":
                return F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True)
            return F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True, count_include_pad=True)
        return self._general(x)

    def _out(self, size: int, axis: int) -> int:
        k, p, s = self.kernel[axis], self.pad[axis], self.stride[axis]
        out = (size + 2 * p - k + s - 1) // s + 1
        if p > 0 and (out - 1) * s >= size + p:
            out = out - 1
        return out

    def _general(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        oh, ow = self._out(h, 0), self._out(w, 1)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        # Pad so every window lies inside: left by pad, right up to the end of the last window.
        right_h = max((oh - 1) * sh + kh - h - ph, 0)
        right_w = max((ow - 1) * sw + kw - w - pw, 0)
        if self.mode == "MAX":
            fill = torch.finfo(x.dtype).min  # Caffe starts every max at -FLT_MAX
            padded = F.pad(x, (pw, right_w, ph, right_h), value=fill)
            y = F.max_pool2d(padded, self.kernel, self.stride)
            return y[..., :oh, :ow]
        padded = F.pad(x, (pw, right_w, ph, right_h))
        sums = F.avg_pool2d(padded, self.kernel, self.stride, divisor_override=1)[..., :oh, :ow]
        return sums / (self._divisor(h, oh, 0, x)[:, None] * self._divisor(w, ow, 1, x)[None, :])

    def _divisor(self, size: int, out: int, axis: int, x: torch.Tensor) -> torch.Tensor:
        """Per output index, the window length Caffe divides by: clipped to [-pad, size + pad)."""
        k, p, s = self.kernel[axis], self.pad[axis], self.stride[axis]
        start = torch.arange(out, device=x.device) * s - p
        end = torch.clamp(start + k, max=size + p)
        return (end - start).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.mode}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}"


class GlobalPool2d(nn.Module):
    """``global_pooling``: one value per channel (Caffe forces pad 0, stride 1, kernel = H x W)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "MAX":
            return x.amax(dim=(2, 3), keepdim=True)
        return x.mean(dim=(2, 3), keepdim=True)

    def extra_repr(self) -> str:
        return f"{self.mode}, global"


@register("Pooling")
class Pooling(Converter):
    def setup(self) -> None:
        p = self.param.pooling_param
        method = type(p).PoolMethod.Name(p.pool)
        if method not in ("MAX", "AVE"):
            raise self.error(f"pool: {method} is not supported at inference; use MAX or AVE")
        self.mode = method
        self.global_pooling = p.global_pooling
        if self.global_pooling:
            if p.HasField("kernel_h") or p.HasField("kernel_w") or p.HasField("kernel_size"):
                raise self.error("global_pooling excludes kernel_size (Caffe refuses both)")
            return
        self.kernel = self.hw(p, "kernel_size", repeated=False)
        self.pad = self.hw(p, "pad", 0, repeated=False)
        self.stride = self.hw(p, "stride", 1, repeated=False)
        if min(self.kernel) <= 0 or min(self.stride) <= 0:
            raise self.error(f"kernel {self.kernel} and stride {self.stride} must be positive")
        if any(p_ >= k for p_, k in zip(self.pad, self.kernel)):
            raise self.error(f"pad {self.pad} must be smaller than kernel {self.kernel} (Caffe's check)")

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        if len(shape) != 4:
            raise self.shape_error(f"expects a 4-D bottom, got {shape}")
        n, c, h, w = shape
        if self.global_pooling:
            return [(n, c, 1, 1)]
        out = [caffe_pool_size(size, k, p, s) for size, k, p, s in zip((h, w), self.kernel, self.pad, self.stride)]
        if min(out) <= 0:
            raise self.shape_error(f"input {h} x {w} is smaller than the kernel {self.kernel}")
        return [(n, c, *out)]

    def _torch_exact(self) -> bool:
        """torch's ceil_mode pooling equals Caffe's when pad <= k/2 and the dropped-window rules agree."""
        return all(2 * p <= k and (p > 0 or s <= k) for k, p, s in zip(self.kernel, self.pad, self.stride))

    def coord_map(self):
        if self.global_pooling:
            return None
        return tuple((Fraction(s), Fraction(k - 1, 2) - p) for k, p, s in zip(self.kernel, self.pad, self.stride))

    def module(self, blobs: list) -> nn.Module:
        if self.global_pooling:
            return GlobalPool2d(self.mode)
        return Pool2d(self.mode, self.kernel, self.stride, self.pad, self._torch_exact())
