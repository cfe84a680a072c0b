"""Eltwise, Concat, Slice and Split against transcriptions of BVLC's eltwise_layer.cpp, concat_layer.cpp,
slice_layer.cpp and split_layer.cpp."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import assert_close, expect_error, forward, rand

SHAPE = (2, 3, 4, 5)


def caffe_eltwise(xs, op: str, coeffs=None):
    """EltwiseLayer::Forward_cpu: PROD multiplies in bottom order, SUM adds ``coeff[i] * x_i`` (1 by default),
    MAX keeps the largest."""
    coeffs = coeffs or [1.0] * len(xs)
    out = xs[0].astype(np.float64) * (coeffs[0] if op == "SUM" else 1)
    for coeff, x in zip(coeffs[1:], xs[1:]):
        if op == "PROD":
            out = out * x
        elif op == "SUM":
            out = out + coeff * x.astype(np.float64)
        else:
            out = np.where(x > out, x, out)
    return out


@pytest.mark.parametrize("op, coeffs, count, shape", [
    pytest.param("SUM", None, 2, SHAPE, id="sum"),
    pytest.param("SUM", [0.5, -1.0, 2.0], 3, SHAPE, id="sum-coeff"),
    pytest.param("PROD", None, 3, SHAPE, id="prod"),
    pytest.param("MAX", None, 3, SHAPE, id="max"),
    pytest.param("MAX", None, 2, (4, 7), id="max-2-d"),
    pytest.param("MAX", [3.0, -2.0], 2, SHAPE, id="max-ignores-coeff"),
])
def test_eltwise(op: str, coeffs, count: int, shape) -> None:
    xs = [rand(*shape, seed=i) for i in range(count)]
    params = f"eltwise_param {{ operation: {op} {' '.join(f'coeff: {c}' for c in coeffs or [])} }}"
    (y,) = forward("Eltwise", params, {f"x{i}": x for i, x in enumerate(xs)})
    assert_close(y, caffe_eltwise(xs, op, coeffs))


def test_eltwise_defaults_to_sum() -> None:
    a, b = rand(*SHAPE), rand(*SHAPE, seed=1)
    (y,) = forward("Eltwise", "", {"a": a, "b": b})
    assert_close(y, caffe_eltwise([a, b], "SUM"))


def caffe_concat(xs, axis: int):
    """ConcatLayer::Forward_cpu: each bottom viewed as (outer, size on axis, inner) copied at a running offset."""
    axis %= xs[0].ndim
    outer, inner = int(np.prod(xs[0].shape[:axis])), int(np.prod(xs[0].shape[axis + 1:]))
    total = sum(x.shape[axis] for x in xs)
    top = np.empty((outer, total, inner), np.float32)
    offset = 0
    for x in xs:
        top[:, offset:offset + x.shape[axis]] = x.reshape(outer, x.shape[axis], inner)
        offset += x.shape[axis]
    return top.reshape(xs[0].shape[:axis] + (total,) + xs[0].shape[axis + 1:])


@pytest.mark.parametrize("params, axis, shapes", [
    pytest.param("", 1, [(2, 3, 4, 5), (2, 1, 4, 5), (2, 2, 4, 5)], id="channels"),
    pytest.param("concat_param { axis: 0 }", 0, [(1, 3, 2, 2), (2, 3, 2, 2)], id="batch"),
    pytest.param("concat_param { axis: -1 }", -1, [(1, 2, 3, 4), (1, 2, 3, 1)], id="negative-axis"),
    pytest.param("concat_param { concat_dim: 2 }", 2, [(1, 2, 3, 4), (1, 2, 5, 4)], id="legacy-concat-dim"),
    pytest.param("", 1, [(2, 3, 4, 5)], id="one-bottom"),
])
def test_concat(params: str, axis: int, shapes) -> None:
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    (y,) = forward("Concat", params, {f"x{i}": x for i, x in enumerate(xs)})
    np.testing.assert_array_equal(y, caffe_concat(xs, axis))


def caffe_slice(x, axis: int, points, tops: int):
    """SliceLayer: cut at ``slice_point``s, or into ``tops`` parts of ``size / tops``."""
    axis %= x.ndim
    size = x.shape[axis]
    bounds = [0, *points, size] if points else list(range(0, size + 1, size // tops))
    return [np.take(x, range(a, b), axis=axis) for a, b in pairwise(bounds)]


@pytest.mark.parametrize("params, axis, points, tops, shape", [
    pytest.param("slice_param { slice_point: 1 slice_point: 3 }", 1, [1, 3], 3, (2, 5, 3, 3), id="points"),
    pytest.param("slice_param { axis: 0 slice_point: 1 }", 0, [1], 2, (3, 2, 2, 2), id="batch"),
    pytest.param("slice_param { slice_dim: 2 }", 2, [], 2, (1, 2, 6, 3), id="legacy-slice-dim-equal-parts"),
    pytest.param("slice_param { axis: -1 }", -1, [], 3, (1, 2, 3, 9), id="negative-axis-equal-parts"),
    pytest.param("", 1, [], 1, (1, 4, 2, 2), id="one-top"),
])
def test_slice(params: str, axis: int, points, tops: int, shape) -> None:
    x = rand(*shape)
    names = [f"y{i}" for i in range(tops)]
    ys = forward("Slice", params, {"x": x}, tops=names)
    want = caffe_slice(x, axis, points, tops)
    assert len(ys) == len(want)
    for y, w in zip(ys, want):
        np.testing.assert_array_equal(y, w)


def test_split_copies_the_bottom_to_every_top() -> None:
    x = rand(*SHAPE)
    for y in forward("Split", "", {"x": x}, tops=("a", "b", "c")):
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("type_, params, shapes, tops, error, match", [
    pytest.param("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 2 }", [SHAPE] * 2, 1, LayerParamError,
                 "PROD takes no coeff", id="coeff-with-prod"),
    pytest.param("Eltwise", "eltwise_param { coeff: 1 }", [SHAPE] * 2, 1, LayerParamError,
                 "one value per bottom \\(2\\)", id="coeff-count"),
    pytest.param("Eltwise", "", [SHAPE], 1, LayerParamError, "takes 2 or more bottom", id="one-bottom"),
    pytest.param("Eltwise", "", [SHAPE, (2, 3, 4, 4)], 1, ShapeError, "bottoms must have one shape",
                 id="eltwise-shapes"),
    pytest.param("Concat", "", [SHAPE, (2, 3, 4, 4)], 1, ShapeError, "differ outside the concat axis 1",
                 id="concat-shapes"),
    pytest.param("Slice", "slice_param { slice_point: 1 }", [SHAPE], 3, LayerParamError, "give 2",
                 id="points-count"),
    pytest.param("Slice", "slice_param { slice_point: 2 slice_point: 1 }", [SHAPE], 3, LayerParamError,
                 "strictly increasing", id="points-order"),
    pytest.param("Slice", "slice_param { slice_point: 3 }", [SHAPE], 2, ShapeError, "outside \\(0, 3\\)",
                 id="point-at-the-end"),
    pytest.param("Slice", "slice_param { axis: 3 }", [SHAPE], 2, ShapeError, "does not split into 2 equal parts",
                 id="unequal-parts"),
])
def test_invalid(type_: str, params: str, shapes, tops: int, error, match: str) -> None:
    expect_error(error, match, type_, params, {f"x{i}": s for i, s in enumerate(shapes)},
                 tops=[f"y{i}" for i in range(tops)])
