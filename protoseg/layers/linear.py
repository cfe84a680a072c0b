"""InnerProduct, Softmax, ArgMax, Flatten and Reshape: the layers that change a blob's rank or read it whole.

InnerProduct flattens from ``axis`` and multiplies by its (num_output, K) weight. FCN turned VGG's fc6/fc7 into
convolutions with the same numbers in another shape; the weight loader reshapes between the two forms, so a
prototxt written either way loads either caffemodel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, product, register, same_rows


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
    """InnerProduct: flatten from ``axis`` and multiply; FCN's reshaped fc6/fc7 weights fit."""

    def setup(self) -> None:
        p = self.param.inner_product_param
        self.num_output, self.bias_term, self.transpose, self.raw_axis = p.num_output, p.bias_term, p.transpose, p.axis
        if self.num_output <= 0:
            raise self.error("num_output must be positive")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        axis = self.axis(self.raw_axis, len(shapes[0]))
        return [tuple(shapes[0][:axis]) + (self.num_output,)]

    def accepts(self, index: int, want: Shape, have: Shape) -> bool:
        return super().accepts(index, want, have) or (index == 0 and not self.transpose and same_rows(want, have))

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        axis = self.axis(self.raw_axis, len(shapes[0]))
        k = product(shapes[0][axis:])
        weight = (k, self.num_output) if self.transpose else (self.num_output, k)
        return [weight, (self.num_output,)] if self.bias_term else [weight]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = InnerProduct(self.axis(self.raw_axis, len(shapes[0])), self.transpose)
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
    """Softmax over ``axis``."""

    def infer(self, shapes: Bottoms) -> list[Shape]:
        self.axis(self.param.softmax_param.axis, len(shapes[0]))
        return [shapes[0]]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Softmax(self.axis(self.param.softmax_param.axis, len(shapes[0])))


def caffe_topk(x: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest values along ``dim`` and their indices, ordered as Caffe's ``partial_sort`` of
    (value, index) pairs orders them: among equal values the larger index comes first."""
    size = x.shape[dim]
    values, flipped = torch.sort(x.flip(dim), dim=dim, descending=True, stable=True)
    return values.narrow(dim, 0, k), (size - 1 - flipped).narrow(dim, 0, k)


class ArgMax(nn.Module):
    """Caffe's ArgMax: indices (as floats) of the ``top_k`` largest values, optionally with the values.

    Without ``axis`` Caffe flattens each item and returns N x (1 or 2) x top_k, padded with 1s to the bottom's
    number of axes.
    """

    def __init__(self, axis: int | None, top_k: int, out_max_val: bool, ndim: int = 3):
        super().__init__()
        self.axis, self.top_k, self.out_max_val, self.ndim = axis, top_k, out_max_val, ndim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            values, indices = caffe_topk(x.flatten(1), self.top_k, 1)
            out = torch.stack([indices.to(x.dtype), values], 1) if self.out_max_val else indices.to(x.dtype)[:, None]
            return out.reshape(*out.shape, *[1] * (self.ndim - 3))
        values, indices = caffe_topk(x, self.top_k, self.axis)
        return values if self.out_max_val else indices.to(x.dtype)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, top_k={self.top_k}, out_max_val={self.out_max_val}"


@register("ArgMax")
class ArgMaxConverter(Converter):
    """ArgMax: indices (as floats) of the ``top_k`` largest values, optionally with them."""

    def setup(self) -> None:
        p = self.param.argmax_param
        self.top_k, self.out_max_val = p.top_k, p.out_max_val
        self.raw_axis = p.axis if p.HasField("axis") else None
        if self.top_k < 1:
            raise self.error(f"top_k {self.top_k} must be at least 1")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        shape = shapes[0]
        if self.raw_axis is None:
            if self.top_k > product(shape[1:]):
                raise self.shape_error(f"top_k {self.top_k} exceeds the {product(shape[1:])} values per item")
            return [(shape[0], 2 if self.out_max_val else 1, self.top_k) + (1,) * (len(shape) - 3)]
        axis = self.axis(self.raw_axis, len(shape))
        if self.top_k > shape[axis]:
            raise self.shape_error(f"top_k {self.top_k} exceeds axis {axis} of size {shape[axis]}")
        return [shape[:axis] + (self.top_k,) + shape[axis + 1 :]]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        axis = None if self.raw_axis is None else self.axis(self.raw_axis, len(shapes[0]))
        return ArgMax(axis, self.top_k, self.out_max_val, max(len(shapes[0]), 3))


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
    """Flatten axes ``[axis, end_axis]`` into one."""

    def _axes(self, shape: Shape) -> tuple[int, int]:
        p = self.param.flatten_param
        start = self.axis(p.axis, len(shape))
        end = self.axis(p.end_axis, len(shape), "end_axis") + 1
        if end <= start:
            raise self.shape_error(f"end_axis {p.end_axis} comes before axis {p.axis} for a {len(shape)}-D bottom")
        return start, end

    def infer(self, shapes: Bottoms) -> list[Shape]:
        shape = shapes[0]
        start, end = self._axes(shape)
        return [shape[:start] + (product(shape[start:end]),) + shape[end:]]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Reshape(*self._axes(shapes[0]), (-1,))


@register("Reshape")
class ReshapeConverter(Converter):
    """Reshape with Caffe's 0 (copy) and -1 (infer) dims."""

    def setup(self) -> None:
        p = self.param.reshape_param
        self.dims = tuple(p.shape.dim)
        if sum(d == -1 for d in self.dims) > 1 or any(d < -1 for d in self.dims):
            raise self.error(f"shape {list(self.dims)}: dims are sizes, 0 (copy) or one -1 (infer)")
        self.raw_axis, self.num_axes = p.axis, p.num_axes

    def _plan(self, shape: Shape) -> tuple[Shape, tuple[int, int | None]]:
        """The output shape and the axes ``[start, end)`` the dims replace."""
        # Caffe counts a negative axis from just past the last one: -1 appends.
        start = self.raw_axis if self.raw_axis >= 0 else len(shape) + 1 + self.raw_axis
        end = len(shape) if self.num_axes == -1 else start + self.num_axes
        if not 0 <= start <= end <= len(shape):
            raise self.shape_error(f"axis {self.raw_axis} / num_axes {self.num_axes} do not fit a "
                                   f"{len(shape)}-D bottom")
        if any(d == 0 and start + i >= len(shape) for i, d in enumerate(self.dims)):
            raise self.shape_error(f"shape {list(self.dims)} copies (0) an axis a {len(shape)}-D bottom lacks")
        new = [shape[start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        if -1 in new:
            known = product(d for d in new if d != -1) * product(shape[:start]) * product(shape[end:])
            if known == 0 or product(shape) % known:
                raise self.shape_error(f"cannot reshape {shape} to {self.dims}")
            new[new.index(-1)] = product(shape) // known
        out = shape[:start] + tuple(new) + shape[end:]
        if product(out) != product(shape):
            raise self.shape_error(f"cannot reshape {shape} ({product(shape)} values) to {out}")
        return out, (start, None if self.num_axes == -1 else end)

    def infer(self, shapes: Bottoms) -> list[Shape]:
        return [self._plan(shapes[0])[0]]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        start, end = self._plan(shapes[0])[1]
        return Reshape(start, end, self.dims)
