"""InnerProduct, Softmax, ArgMax, Flatten and Reshape: the layers that change a blob's rank or read it whole.

InnerProduct flattens from ``axis`` and multiplies by its (num_output, K) weight. FCN turned VGG's fc6/fc7 into
convolutions with the same numbers in another shape; the weight loader reshapes between the two forms, so a
prototxt written either way loads either caffemodel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Converter, Shape, product, register


class InnerProduct(nn.Module):
    def __init__(self, axis: int, transpose: bool):
        super().__init__()
        self.axis, self.transpose = axis, transpose
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(self.axis)
        w = self.weight.t() if self.transpose else self.weight
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"axis={self.axis}" + (", transpose" if self.transpose else "")


@register("InnerProduct")
class InnerProductConverter(Converter):
    def setup(self) -> None:
        p = self.param.inner_product_param
        self.num_output, self.bias_term, self.transpose, self.raw_axis = p.num_output, p.bias_term, p.transpose, p.axis
        if self.num_output <= 0:
            raise self.error("num_output must be positive")

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        axis = self.resolved = self.axis(self.raw_axis, len(shapes[0]))
        return [tuple(shapes[0][:axis]) + (self.num_output,)]

    def blob_shapes(self, shapes: list[Shape]) -> list[Shape]:
        axis = self.axis(self.raw_axis, len(shapes[0]))
        k = product(shapes[0][axis:])
        weight = (k, self.num_output) if self.transpose else (self.num_output, k)
        return [weight, (self.num_output,)] if self.bias_term else [weight]

    def module(self, blobs: list) -> nn.Module:
        m = InnerProduct(self.resolved, self.transpose)
        m.weight = blobs[0]
        m.bias = blobs[1] if self.bias_term else None
        return m


class Softmax(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


@register("Softmax")
class SoftmaxConverter(Converter):
    def infer(self, shapes: list[Shape]) -> list[Shape]:
        self.resolved = self.axis(self.param.softmax_param.axis, len(shapes[0]))
        return [shapes[0]]

    def module(self, blobs: list) -> nn.Module:
        return Softmax(self.resolved)


class ArgMax(nn.Module):
    """Caffe's ArgMax: indices (as floats) of the ``top_k`` largest values, optionally with the values.

    Without ``axis`` Caffe flattens each item and returns N x (1 or 2) x top_k.
    """

    def __init__(self, axis: int | None, top_k: int, out_max_val: bool):
        super().__init__()
        self.axis, self.top_k, self.out_max_val = axis, top_k, out_max_val

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            values, indices = torch.topk(x.flatten(1), self.top_k, dim=1)
            out = torch.stack([indices.to(x.dtype), values], 1) if self.out_max_val else indices.to(x.dtype)[:, None]
            return out
        values, indices = torch.topk(x, self.top_k, dim=self.axis)
        return values if self.out_max_val else indices.to(x.dtype)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, top_k={self.top_k}, out_max_val={self.out_max_val}"


@register("ArgMax")
class ArgMaxConverter(Converter):
    def setup(self) -> None:
        p = self.param.argmax_param
        self.top_k, self.out_max_val = p.top_k, p.out_max_val
        self.raw_axis = p.axis if p.HasField("axis") else None

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        if self.raw_axis is None:
            self.resolved = None
            if self.top_k > product(shape[1:]):
                raise self.shape_error(f"top_k {self.top_k} exceeds the {product(shape[1:])} values per item")
            return [(shape[0], 2 if self.out_max_val else 1, self.top_k)]
        axis = self.resolved = self.axis(self.raw_axis, len(shape))
        if self.top_k > shape[axis]:
            raise self.shape_error(f"top_k {self.top_k} exceeds axis {axis} of size {shape[axis]}")
        return [shape[:axis] + (self.top_k,) + shape[axis + 1 :]]

    def module(self, blobs: list) -> nn.Module:
        return ArgMax(self.resolved, self.top_k, self.out_max_val)


class Reshape(nn.Module):
    """Flatten and Reshape: replace axes ``[start, end)`` by ``dims`` (0 copies, -1 infers, as in Caffe)."""

    def __init__(self, start: int, end: int | None, dims: tuple[int, ...]):
        super().__init__()
        self.start, self.end, self.dims = start, end, dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        end = x.dim() if self.end is None else self.end
        new = [x.shape[self.start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        return x.reshape(list(x.shape[: self.start]) + new + list(x.shape[end:]))

    def extra_repr(self) -> str:
        return f"axes [{self.start}, {self.end}) -> {self.dims}"


@register("Flatten")
class FlattenConverter(Converter):
    def infer(self, shapes: list[Shape]) -> list[Shape]:
        p, shape = self.param.flatten_param, shapes[0]
        start = self.axis(p.axis, len(shape))
        end = self.axis(p.end_axis, len(shape), "end_axis") + 1
        self.resolved = (start, end, (-1,))
        return [shape[:start] + (product(shape[start:end]),) + shape[end:]]

    def module(self, blobs: list) -> nn.Module:
        start, end, dims = self.resolved
        return Reshape(start, end, dims)


@register("Reshape")
class ReshapeConverter(Converter):
    def setup(self) -> None:
        p = self.param.reshape_param
        self.dims = tuple(p.shape.dim)
        if sum(d == -1 for d in self.dims) > 1:
            raise self.error("at most one dim may be -1")
        self.raw_axis, self.num_axes = p.axis, p.num_axes

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        # Caffe counts a negative axis from just past the last one: -1 appends.
        start = self.raw_axis if self.raw_axis >= 0 else len(shape) + 1 + self.raw_axis
        end = len(shape) if self.num_axes == -1 else start + self.num_axes
        if not 0 <= start <= end <= len(shape):
            raise self.shape_error(f"axis {self.raw_axis} / num_axes {self.num_axes} do not fit a {len(shape)}-D bottom")
        new = [shape[start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        if -1 in new:
            known = product(d for d in new if d != -1) * product(shape[:start]) * product(shape[end:])
            if known == 0 or product(shape) % known:
                raise self.shape_error(f"cannot reshape {shape} to {self.dims}")
            new[new.index(-1)] = product(shape) // known
        out = shape[:start] + tuple(new) + shape[end:]
        if product(out) != product(shape):
            raise self.shape_error(f"cannot reshape {shape} ({product(shape)} values) to {out}")
        end_arg = None if self.num_axes == -1 else end
        self.resolved = (start, end_arg, self.dims)
        return [out]

    def module(self, blobs: list) -> nn.Module:
        return Reshape(*self.resolved)
