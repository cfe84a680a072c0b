"""Convolution and Deconvolution, as Caffe's ConvolutionLayer / DeconvolutionLayer compute them.

Caffe stores convolution weights as (num_output, channels / group, kh, kw) and deconvolution weights as
(channels, num_output / group, kh, kw): exactly torch's ``conv2d`` / ``conv_transpose2d`` layouts, so blobs load
as they are. DeepLab v1's ``hole`` arrives here already upgraded to ``dilation``.
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register, same_rows


class Conv2d(nn.Module):
    """``y = conv2d(x, weight) + bias`` with Caffe's (floor) output size; parameters attached by the builder."""

    def __init__(self, stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}"


class ConvTranspose2d(Conv2d):
    """Caffe's Deconvolution: output (H - 1) * stride - 2 * pad + dilation * (kernel - 1) + 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, 0, self.groups, self.dilation)

    def fast(self, nonnegative: bool = False) -> nn.Module:
        """The module the fast graph runs instead (:mod:`protoseg.optimize`): the same values (whatever the sign
        of the input)."""
        (kh, kw), s = self.weight.shape[2:], self.stride[0]
        if (self.groups == 1 and self.dilation == (1, 1) and self.stride == (s, s) and s > 1
                and kh % s == 0 and kw % s == 0):
            return SubPixelDeconv(self.weight.detach(), None if self.bias is None else self.bias.detach(), s,
                                  self.padding)
        return self


class SubPixelDeconv(nn.Module):
    """A Deconvolution whose kernel is a whole number of strides (FCN's 4/2, 16/8, 32/16, 64/32) as a convolution
    giving each output pixel's s x s phase as channels, then a pixel shuffle: output phase (a, b) of input
    pixel (i, j) sums kernel taps (u * s + a, v * s + b) of the inputs (i - u, j - v). The same products as
    torch's transposed convolution, summed in another order, but as one ordinary convolution that oneDNN runs
    1.5-9x faster than its transposed one (FCN-8s's 16 x 16 upscore8 on two cores: 34 -> 4 ms in bf16)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: tuple[int, int]):
        super().__init__()
        cin, cout, kh, kw = weight.shape
        qh, qw = kh // stride, kw // stride
        phases = weight.reshape(cin, cout, qh, stride, qw, stride).permute(1, 3, 5, 0, 2, 4).flip(4, 5)
        self.register_buffer("weight", phases.reshape(cout * stride * stride, cin, qh, qw).contiguous())
        self.register_buffer("bias", None if bias is None else bias.repeat_interleave(stride * stride))
        self.stride, self.padding, self.taps = stride, padding, (qh, qw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (qh, qw), (ph, pw) = self.taps, self.padding
        y = F.pixel_shuffle(F.conv2d(x, self.weight, self.bias, 1, (qh - 1, qw - 1)), self.stride)
        return y[:, :, ph:y.shape[2] - ph, pw:y.shape[3] - pw] if ph or pw else y

    def extra_repr(self) -> str:
        return f"stride={self.stride}, padding={self.padding}, sub-pixel convolution of {self.taps} taps"


@register("Convolution", "Deconvolution")
class Convolution(Converter):
    """Convolution and Deconvolution (one ``convolution_param``): dilation (DeepLab v1's hole), groups, h/w."""

    def setup(self) -> None:
        p = self.param.convolution_param
        if len(p.kernel_size) > 2 or len(p.pad) > 2 or len(p.stride) > 2 or len(p.dilation) > 2:
            raise self.error("only 2-D convolution is supported (kernel_size/pad/stride/dilation have > 2 values)")
        if p.axis != 1:
            raise self.error(f"axis {p.axis} is not supported: protoseg convolves N x C x H x W blobs (axis 1)")
        self.kernel = self.hw(p, "kernel_size")
        self.pad = self.hw(p, "pad", 0)
        self.stride = self.hw(p, "stride", 1)
        self.dilation = self.hw(p, "dilation", 1)
        self.group = p.group
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        if self.num_output <= 0:
            raise self.error("num_output must be positive")
        if min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise self.error(f"kernel {self.kernel}, stride {self.stride} and dilation {self.dilation} "
                             "must be positive")
        if self.group <= 0 or self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} is not divisible by group {self.group}")

    @property
    def transposed(self) -> bool:
        return self.type == "Deconvolution"

    def _channels(self, shapes: Bottoms) -> int:
        shape = shapes[0]
        if len(shape) != 4:
            raise self.shape_error(f"expects a 4-D N x C x H x W bottom, got {shape}")
        if shape[1] % self.group:
            raise self.shape_error(f"bottom has {shape[1]} channels, not divisible by group {self.group}")
        return shape[1]

    def infer(self, shapes: Bottoms) -> list[Shape]:
        self._channels(shapes)
        n, _, *spatial = shapes[0]
        out = []
        for size, k, p, s, d in zip(spatial, self.kernel, self.pad, self.stride, self.dilation):
            extent = d * (k - 1) + 1
            o = (size - 1) * s - 2 * p + extent if self.transposed else (size + 2 * p - extent) // s + 1
            if o <= 0:
                raise self.shape_error(
                    f"output size {o} from input {size} (kernel {k}, pad {p}, stride {s}, dilation {d}); "
                    "the input is too small for this net"
                )
            out.append(o)
        return [(n, self.num_output, *out)]

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        c = self._channels(shapes)
        if self.transposed:
            weight = (c, self.num_output // self.group, *self.kernel)
        else:
            weight = (self.num_output, c // self.group, *self.kernel)
        return [weight, (self.num_output,)] if self.bias_term else [weight]

    def accepts(self, index: int, want: Shape, have: Shape) -> bool:
        return super().accepts(index, want, have) or (index == 0 and not self.transposed and same_rows(want, have))

    def coord_map(self, shapes: Bottoms):
        maps = []
        for k, p, s, d in zip(self.kernel, self.pad, self.stride, self.dilation):
            a, b = Fraction(s), Fraction(d * (k - 1), 2) - p
            maps.append((1 / a, -b / a) if self.transposed else (a, b))
        return tuple(maps)

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        cls = ConvTranspose2d if self.transposed else Conv2d
        m = cls(self.stride, self.pad, self.dilation, self.group)
        m.weight = blobs[0]
        m.bias = blobs[1] if self.bias_term else None
        return m
