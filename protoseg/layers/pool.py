"""Pooling with Caffe's arithmetic: ceil rounding, the last-window clip, the AVE divisor, and the MAX mask top.

Caffe sizes the output as ``ceil((H + 2p - k) / s) + 1``, then drops the last window when it would start in
the right padding (only when the layer pads on either axis: Caffe tests ``pad_h || pad_w``). MAX takes the
largest input pixel of each window (windows are clipped to the input; one with no pixel gives the float type's
lowest value, ``-FLT_MAX`` in float32); AVE sums the window's input pixels and divides by the window clipped
to ``H + p`` (padding counts, the overhang beyond it does not; an empty window gives 0 / 0).
A MAX layer may have a second top, the mask: for each output the flat index ``h * W + w`` of its maximum in
the input plane, first maximum in raster order, as float (BVLC Caffe; SegNet's Upsample scatters by it). The
mask stays float32 (float64 beside float64 data) when the net runs in bf16 or fp16, which cannot hold indices
past 256 or 2048 exactly.

torch's ``ceil_mode`` pooling computes exactly this when ``p <= k / 2`` and the last-window rules agree; any
other kernel, stride and pad that Caffe accepts takes the general path: each axis in turn, a gather of every
window's pixels (clipped to the input, never padded out to the kernel, so a kernel or stride of a million
costs nothing) and a masked reduction. Both paths size their output with :func:`caffe_pool_size`, the rule
shape inference uses.
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register


def caffe_pool_size(size, kernel: int, pad: int, stride: int, clip: bool):
    """Caffe's PoolingLayer::Reshape output size along one axis (integer arithmetic: exact for any size).

    ``clip``: the layer pads on some axis, so Caffe drops a last window starting past ``size + pad``.
    """
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if clip and (out - 1) * stride >= size + pad:
        out = out - 1
    return out


def torch_exact(kernel: int, stride: int, pad: int, clip: bool) -> bool:
    """torch's ceil_mode pooling equals Caffe's when pad <= k/2 and the dropped-window rules agree (torch
    always drops a window starting past the padded input; Caffe only when ``clip``, and without it such a
    window can only arise when the stride exceeds the kernel)."""
    return 2 * pad <= kernel and (clip or stride <= kernel)


def mask_dtype(x: torch.Tensor) -> torch.dtype:
    """The mask's float type: exact for any index a Caffe blob can hold, whatever ``x`` runs in."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _windows(size, out, k: int, s: int, p: int, device):
    """Per output index along one axis: first input pixel, pixel count and Caffe's AVE divisor."""
    start = torch.arange(out, device=device) * s - p
    lo = start.clamp(min=0)
    count = ((start + k).clamp(max=size) - lo).clamp(min=0)
    divisor = (start + k).clamp(max=size + p) - start
    return lo, count, divisor


def _gather(x: torch.Tensor, dim: int, lo: torch.Tensor, count: torch.Tensor, k: int):
    """The pixels of every window along ``dim`` (moved last, ``width`` per window) and which of them exist."""
    size = x.shape[dim]
    width = torch.sym_min(k, size)
    offsets = torch.arange(width, device=x.device)
    index = (lo[:, None] + offsets[None, :]).clamp(max=size - 1)
    valid = offsets[None, :] < count[:, None]
    moved = x.movedim(dim, -1)
    return moved[..., index], valid  # (..., out, width)


def scatter_by_mask(x: torch.Tensor, mask: torch.Tensor, out_h, out_w) -> torch.Tensor:
    """The inverse of MAX pooling with a mask top (SegNet's Upsample, DeconvNet's Unpooling): a zero plane of
    ``out_h x out_w`` per (n, c) in which ``x``'s values land at the flat positions ``mask`` holds.

    As in Caffe's loop, where two values aim at one position the later one in raster order wins; an index
    outside the plane (where Caffe aborts or writes out of bounds) drops its value.
    """
    n, c = x.shape[0], x.shape[1]
    plane = out_h * out_w
    index = mask.flatten(2).to(torch.int64)
    index = torch.where((index >= 0) & (index < plane), index, plane)  # one spare slot for dropped values
    order = torch.arange(index.shape[-1], device=x.device).expand_as(index)
    winner = torch.full((n, c, plane + 1), -1, dtype=torch.int64, device=x.device)
    winner = winner.scatter_reduce(2, index, order, "amax")[..., :plane]
    values = x.flatten(2).gather(2, winner.clamp(min=0))
    return torch.where(winner >= 0, values, 0).reshape(n, c, out_h, out_w)


class Pool2d(nn.Module):
    """MAX/AVE pooling of N x C x H x W with Caffe's output size and AVE divisor; optionally the MAX mask."""

    def __init__(self, mode: str, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
                 torch_exact: bool, with_mask: bool = False):
        super().__init__()
        self.mode, self.kernel, self.stride, self.pad = mode, kernel, stride, pad
        self.torch_exact, self.with_mask = torch_exact, with_mask

    def forward(self, x: torch.Tensor):
        if self.torch_exact:
            if self.mode == "AVE":
                return F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True, count_include_pad=True)
            if self.with_mask:
                y, index = F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True, return_indices=True)
                return y, index.to(mask_dtype(x))
            return F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True)
        return self._general(x)

    def _general(self, x: torch.Tensor):
        h, w = x.shape[-2], x.shape[-1]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        clip = ph > 0 or pw > 0
        lo_h, n_h, div_h = _windows(h, caffe_pool_size(h, kh, ph, sh, clip), kh, sh, ph, x.device)
        lo_w, n_w, div_w = _windows(w, caffe_pool_size(w, kw, pw, sw, clip), kw, sw, pw, x.device)
        rows, valid_w = _gather(x, 3, lo_w, n_w, kw)  # N, C, H, out_w, width
        if self.mode == "AVE":
            sums = torch.where(valid_w, rows, 0).sum(-1)  # N, C, H, out_w
            cols, valid_h = _gather(sums, 2, lo_h, n_h, kh)  # N, C, out_w, out_h, width
            total = torch.where(valid_h, cols, 0).sum(-1).transpose(-1, -2)
            return total / (div_h[:, None] * div_w[None, :]).to(x.dtype)
        lowest = torch.finfo(x.dtype).min  # Caffe's -FLT_MAX (-DBL_MAX in a double net)
        row_max, col = torch.where(valid_w, rows, lowest).max(-1)  # first maximum of each row window
        cols, valid_h = _gather(row_max, 2, lo_h, n_h, kh)
        y, pick = torch.where(valid_h, cols, lowest).max(-1)  # first row holding the maximum
        y = y.transpose(-1, -2)
        if not self.with_mask:
            return y
        row = (lo_h[:, None] + pick.transpose(-1, -2)).clamp(max=h - 1)  # N, C, out_h, out_w
        col_in_row = (lo_w[None, :] + col.gather(2, row)).clamp(max=w - 1)
        empty = (n_h[:, None] == 0) | (n_w[None, :] == 0)
        mask = torch.where(empty, -1, row * w + col_in_row)  # Caffe leaves -1 where a window is empty
        return y, mask.to(mask_dtype(x))

    def fast(self, nonnegative: bool = False) -> nn.Module:
        """The module the fast graph runs instead (:mod:`protoseg.optimize`): the same values. ``nonnegative``:
        the input is known to hold no negative value (a ReLU's output)."""
        if self.mode == "MAX" and not self.with_mask and self.torch_exact:
            return SeparableMaxPool(self.kernel, self.stride, self.pad, nonnegative)
        return self

    def extra_repr(self) -> str:
        return f"{self.mode}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}" + (
            ", mask" if self.with_mask else "")


class SeparableMaxPool(nn.Module):
    """MAX pooling of channels_last activations as element-wise maxima over strided window views: the rows of
    each window, then its columns (2k comparisons per output instead of k * k, and no index plane: torch's CPU
    kernel writes an int64 index per output even when none is asked for).

    Where that is slower than torch's kernel (float compares on overlapping windows with stride > 1, a layout
    other than channels_last, a GPU) torch's kernel runs. A bf16 or fp16 input known to be non-negative is
    compared as int16: the bit patterns of non-negative floats are ordered as their values, and integer maxima
    skip the float conversions (LargeFOV's pool1 in bf16 on two cores of an AMX Xeon: 6.96 -> 2.96 ms). Values
    are the windowed maxima, as exact as torch's (NaN propagates; a NaN with its sign bit set, which no ReLU
    output holds, would lose the integer compare)."""

    #: Output rows are pooled a block at a time, so that the row pass's result for the block (about this many
    #: bytes) is still in cache when the column pass reads it (two cores of an AVX2 EPYC: LargeFOV's pool1 as
    #: int16 8.9 -> 5.5 ms, FCN's fp32 pool1 19 -> 16 ms). Much smaller blocks lose more to per-call overhead
    #: (each torch call starts the thread pool) than they save.
    BLOCK_BYTES = 1 << 22

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int], nonnegative: bool):
        super().__init__()
        self.kernel, self.stride, self.pad, self.nonnegative = kernel, stride, pad, nonnegative

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        as_int = self.nonnegative and x.dtype in (torch.bfloat16, torch.float16)
        tiles = self.kernel == self.stride and self.pad == (0, 0)
        if (x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last)
                or not (as_int or tiles or self.stride == (1, 1))):
            return F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        n, c, h, w = x.shape
        clip = ph > 0 or pw > 0
        out_h, out_w = caffe_pool_size(h, kh, ph, sh, clip), caffe_pool_size(w, kw, pw, sw, clip)
        nhwc = (x.view(torch.int16) if as_int else x).permute(0, 2, 3, 1)
        out = nhwc.new_empty((n, out_h, out_w, c))
        block = max(1, self.BLOCK_BYTES // (n * w * c * nhwc.element_size()))
        rows = nhwc.new_empty((n, min(block, out_h), w, c))
        for r in range(0, out_h, block):
            r_end = min(out_h, r + block)
            lo, hi = max(0, sh * r - ph), min(h, sh * (r_end - 1) - ph + kh)  # the input rows the block reads
            _window_max(nhwc.narrow(1, lo, hi - lo), 1, kh, sh, ph - sh * r + lo, rows[:, :r_end - r])
            _window_max(rows[:, :r_end - r], 2, kw, sw, pw, out[:, r:r_end])
        out = out.permute(0, 3, 1, 2)
        return out.view(x.dtype) if as_int else out

    def extra_repr(self) -> str:
        return (f"MAX, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, separable"
                + (", non-negative" if self.nonnegative else ""))


def _window_max(x: torch.Tensor, dim: int, k: int, s: int, p: int, y: torch.Tensor) -> None:
    """Writes into ``y`` the maxima of Caffe's pooling windows along ``dim`` of ``x`` (output i's window starts
    at s * i - p, clipped to ``x``; each holds a pixel, as torch-exact pooling guarantees). Outputs whose windows
    lie inside take element-wise maxima of the taps of a strided window view (vectorised along the contiguous
    channels); the few at the borders reduce their clipped windows."""
    size, out = x.shape[dim], y.shape[dim]
    first = min(out, -(-p // s))  # the first output whose window starts inside the input
    last = max(first, min(out, (size + p - k) // s + 1))  # one past the last whose window ends inside
    if last > first:
        windows = x.narrow(dim, s * first - p, s * (last - first - 1) + k).unfold(dim, k, s)
        inner = y.narrow(dim, first, last - first)
        if k == 1:
            inner.copy_(windows[..., 0])
        else:  # k - 1 element-wise maxima of the taps: faster than amax, which first fills its output
            torch.maximum(windows[..., 0], windows[..., 1], out=inner)
            for t in range(2, k):
                torch.maximum(inner, windows[..., t], out=inner)
    for i in [*range(first), *range(last, out)]:
        lo, hi = max(0, s * i - p), min(size, s * i - p + k)
        torch.amax(x.narrow(dim, lo, hi - lo), dim, keepdim=True, out=y.narrow(dim, i, 1))


class GlobalPool2d(nn.Module):
    """``global_pooling``: one value per channel (Caffe forces pad 0, stride 1, kernel = H x W)."""

    def __init__(self, mode: str, with_mask: bool = False):
        super().__init__()
        self.mode, self.with_mask = mode, with_mask

    def forward(self, x: torch.Tensor):
        if self.mode == "AVE":
            return x.mean(dim=(2, 3), keepdim=True)
        if not self.with_mask:
            return x.amax(dim=(2, 3), keepdim=True)
        y, index = x.flatten(2).max(-1, keepdim=True)
        return y[..., None], index[..., None].to(mask_dtype(x))

    def extra_repr(self) -> str:
        return f"{self.mode}, global" + (", mask" if self.with_mask else "")


@register("Pooling")
class Pooling(Converter):
    """MAX/AVE Pooling with Caffe's rounding, clip and divisor; the MAX mask as a second top."""

    tops = (1, 2)

    def setup(self) -> None:
        p = self.param.pooling_param
        method = type(p).PoolMethod.Name(p.pool)
        if method not in ("MAX", "AVE"):
            raise self.error(f"pool: {method} is not supported at inference; use MAX or AVE")
        self.mode = method
        self.with_mask = len(self.param.top) == 2
        if self.with_mask and method != "MAX":
            raise self.error("only MAX pooling has a second (mask) top, as in Caffe")
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

    def infer(self, shapes: Bottoms) -> list[Shape]:
        shape = shapes[0]
        if len(shape) != 4:
            raise self.shape_error(f"expects a 4-D bottom, got {shape}")
        n, c, h, w = shape
        if self.global_pooling:
            out = (n, c, 1, 1)
        else:
            clip = any(self.pad)
            size = [caffe_pool_size(s, k, p, st, clip) for s, k, p, st in zip((h, w), self.kernel, self.pad,
                                                                                self.stride)]
            if min(size) <= 0:
                raise self.shape_error(f"input {h} x {w} is smaller than the kernel {self.kernel}")
            out = (n, c, *size)
        return [out] * len(self.param.top)

    def index_of(self, top: int) -> int | None:
        return 0 if top == 1 else None

    def coord_map(self, shapes: Bottoms):
        if self.global_pooling:
            return None
        return tuple((Fraction(s), Fraction(k - 1, 2) - p) for k, p, s in zip(self.kernel, self.pad, self.stride))

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        if self.global_pooling:
            return GlobalPool2d(self.mode, self.with_mask)
        clip = any(self.pad)
        exact = all(torch_exact(k, s, p, clip) for k, s, p in zip(self.kernel, self.stride, self.pad))
        return Pool2d(self.mode, self.kernel, self.stride, self.pad, exact, self.with_mask)
