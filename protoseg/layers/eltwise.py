"""Blob plumbing with several bottoms or tops: Eltwise (SUM with coefficients, PROD, MAX), Concat, Slice, Split."""

from __future__ import annotations

import torch
from torch import nn

from protoseg.layers.base import Bottoms, Converter, Shape, register


class Eltwise(nn.Module):
    def __init__(self, op: str, coeffs: tuple[float, ...]):
        super().__init__()
        self.op, self.coeffs = op, coeffs

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.op == "PROD":
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return y
        if self.op == "MAX":
            y = xs[0]
            for x in xs[1:]:
                y = torch.maximum(y, x)
            return y
        if all(c == 1.0 for c in self.coeffs):
            y = xs[0]
            for x in xs[1:]:
                y = y + x
            return y
        y = xs[0] * self.coeffs[0]
        for c, x in zip(self.coeffs[1:], xs[1:]):
            y = y + x * c
        return y

    def extra_repr(self) -> str:
        return f"{self.op}" + (f", coeffs={self.coeffs}" if self.op == "SUM" else "")


@register("Eltwise")
class EltwiseConverter(Converter):
    """Eltwise SUM (with coefficients), PROD and MAX over any number of bottoms."""

    preserves_coords = True
    bottoms = (2, None)

    def setup(self) -> None:
        p = self.param.eltwise_param
        self.op = type(p).EltwiseOp.Name(p.operation)
        n = len(self.param.bottom)
        # Caffe's two checks: PROD takes no coeff, and coeff gives one value per bottom (MAX ignores them)
        if p.coeff and self.op == "PROD":
            raise self.error("operation PROD takes no coeff (Caffe refuses them)")
        if p.coeff and len(p.coeff) != n:
            raise self.error(f"coeff needs one value per bottom ({n}); got {len(p.coeff)}")
        self.coeffs = tuple(p.coeff) if p.coeff else (1.0,) * n

    def infer(self, shapes: Bottoms) -> list[Shape]:
        if any(s != shapes[0] for s in shapes[1:]):
            raise self.shape_error(f"bottoms must have one shape, got {', '.join(map(str, shapes))}")
        return [shapes[0]]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Eltwise(self.op, self.coeffs)


class Concat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


@register("Concat")
class ConcatConverter(Converter):
    """Concat along ``axis`` (or the old ``concat_dim``)."""

    preserves_coords = True
    bottoms = (1, None)

    def setup(self) -> None:
        p = self.param.concat_param
        self.raw_axis = p.concat_dim if p.HasField("concat_dim") else p.axis

    def infer(self, shapes: Bottoms) -> list[Shape]:
        axis = self.axis(self.raw_axis, len(shapes[0]))
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
                raise self.shape_error(f"bottoms {', '.join(map(str, shapes))} differ outside the concat axis {axis}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return [tuple(out)]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Concat(self.axis(self.raw_axis, len(shapes[0])))


class Slice(nn.Module):
    """Cut along ``axis`` at ``points``; with no points, into equal parts (one per top)."""

    def __init__(self, axis: int, points: tuple[int, ...], parts: int):
        super().__init__()
        self.axis, self.points, self.parts = axis, points, parts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.points:
            bounds = (0,) + self.points + (x.shape[self.axis],)
            return tuple(x.narrow(self.axis, a, b - a) for a, b in zip(bounds[:-1], bounds[1:]))
        return tuple(torch.chunk(x, self.parts, dim=self.axis))

    def extra_repr(self) -> str:
        return f"axis={self.axis}, points={self.points}"


@register("Slice")
class SliceConverter(Converter):
    """Slice at ``slice_point``s, or into equal parts."""

    tops = (1, None)
    multi_output = True  # the module returns a tuple, even of one

    def setup(self) -> None:
        p = self.param.slice_param
        self.raw_axis = p.slice_dim if p.HasField("slice_dim") else p.axis
        self.points = tuple(p.slice_point)
        n = len(self.param.top)
        if self.points and len(self.points) != n - 1:
            raise self.error(f"{len(self.points)} slice_point values for {n} tops; give {n - 1}")
        if list(self.points) != sorted(set(self.points)):
            raise self.error(f"slice_point {list(self.points)} must be strictly increasing")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        shape = shapes[0]
        axis = self.axis(self.raw_axis, len(shape))
        size, n = shape[axis], len(self.param.top)
        if self.points:
            if self.points[0] <= 0 or self.points[-1] >= size:
                raise self.shape_error(f"slice_point {list(self.points)} outside (0, {size}) on axis {axis}")
            bounds = (0,) + self.points + (size,)
            sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            if size % n:
                raise self.shape_error(f"axis {axis} of size {size} does not split into {n} equal parts")
            sizes = [size // n] * n
        return [shape[:axis] + (s,) + shape[axis + 1 :] for s in sizes]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Slice(self.axis(self.raw_axis, len(shapes[0])), self.points, len(self.param.top))


class Split(nn.Module):
    """Caffe's Split copies its bottom to every top; in torch the tops are the same tensor."""

    def __init__(self, parts: int):
        super().__init__()
        self.parts = parts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.parts


@register("Split")
class SplitConverter(Converter):
    """Split: every top is the bottom."""

    preserves_coords = True
    tops = (1, None)
    multi_output = True  # the module returns a tuple, even of one

    def infer(self, shapes: Bottoms) -> list[Shape]:
        return [shapes[0]] * len(self.param.top)

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Split(len(self.param.top))
