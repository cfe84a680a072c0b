"""InnerProduct, Softmax, ArgMax, Flatten and Reshape against transcriptions of BVLC's inner_product_layer.cpp,
softmax_layer.cpp, argmax_layer.cpp, flatten_layer.cpp and reshape_layer.cpp."""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import assert_close, expect_error, forward, rand

SHAPE = (2, 3, 4, 5)


def caffe_inner_product(x, w, b, axis: int, transpose: bool):
    """``(M x K) @ W^T`` (W stored N x K), or ``@ W`` when ``transpose`` (stored K x N); M = count(0, axis)."""
    axis %= x.ndim
    m = int(np.prod(x.shape[:axis]))
    flat = x.reshape(m, -1).astype(np.float64)
    y = flat @ (w if transpose else w.T) + (0 if b is None else b)
    return y.reshape(x.shape[:axis] + (y.shape[1],))


@pytest.mark.parametrize("params, shape, axis, transpose, bias", [
    pytest.param("", SHAPE, 1, False, True, id="flatten-from-channels"),
    pytest.param("axis: 2", SHAPE, 2, False, True, id="per-row"),
    pytest.param("axis: -1 transpose: true", SHAPE, -1, True, True, id="negative-axis-transpose"),
    pytest.param("transpose: true bias_term: false", (4, 6), 1, True, False, id="2-d-transpose-no-bias"),
])
def test_inner_product(params: str, shape, axis: int, transpose: bool, bias: bool) -> None:
    x = rand(*shape)
    k = int(np.prod(shape[axis % len(shape):]))
    blobs = [rand(*((k, 7) if transpose else (7, k)), seed=1)] + ([rand(7, seed=2)] if bias else [])
    (y,) = forward("InnerProduct", f"inner_product_param {{ num_output: 7 {params} }}", {"x": x}, blobs)
    assert_close(y, caffe_inner_product(x, blobs[0], blobs[1] if bias else None, axis, transpose))


@pytest.mark.parametrize("axis", [1, 0, -1, 2])
def test_softmax(axis: int) -> None:
    x = rand(*SHAPE, low=-10, high=10)
    (y,) = forward("Softmax", f"softmax_param {{ axis: {axis} }}", {"x": x})
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    assert_close(y, e / e.sum(axis=axis, keepdims=True))


def caffe_argmax(x, axis, top_k: int, out_max_val: bool):
    """ArgMaxLayer: ``partial_sort`` of (value, index) pairs by ``std::greater`` (equal values: the larger index
    first). With an axis: ``top_k`` indices, or values, along it. Without: per item over ``count(1)``, a blob of
    ``max(ndim, 3)`` axes ``(N, 1 or 2, top_k, 1...)`` of indices, then values."""
    if axis is not None:
        moved = np.moveaxis(x, axis, -1)
        flat = moved.reshape(-1, moved.shape[-1])
    else:
        flat = x.reshape(x.shape[0], -1)
    best = [sorted(zip(row, range(len(row))), reverse=True)[:top_k] for row in flat]
    values, indices = np.array([[v for v, _ in b] for b in best]), np.array([[i for _, i in b] for b in best])
    if axis is not None:
        top = (values if out_max_val else indices).reshape(moved.shape[:-1] + (top_k,))
        return np.moveaxis(top, -1, axis).astype(np.float32)
    shape = [x.shape[0], 2 if out_max_val else 1, top_k] + [1] * (x.ndim - 3)
    top = np.stack([indices, values], 1) if out_max_val else indices[:, None]
    return top.reshape(shape).astype(np.float32)




@pytest.mark.parametrize("params, shape, axis, top_k, out_max_val, ties", [
    pytest.param("axis: 1", SHAPE, 1, 1, False, False, id="labels"),
    pytest.param("axis: 1 top_k: 2", SHAPE, 1, 2, False, False, id="top-2"),
    pytest.param("axis: 1 out_max_val: true", SHAPE, 1, 1, True, False, id="max-values"),
    pytest.param("axis: -1 top_k: 3", SHAPE, -1, 3, False, False, id="negative-axis"),
    pytest.param("top_k: 3", (2, 3, 4), None, 3, False, False, id="no-axis-3-d"),
    pytest.param("top_k: 2 out_max_val: true", (3, 6), None, 2, True, False, id="no-axis-2-d-with-values"),
    pytest.param("top_k: 2", SHAPE, None, 2, False, False, id="no-axis-4-d"),
    pytest.param("axis: 1", SHAPE, 1, 1, False, True, id="ties"),
])
def test_argmax(params: str, shape, axis, top_k: int, out_max_val: bool, ties: bool) -> None:
    x = np.random.default_rng(0).integers(0, 2, shape).astype(np.float32) if ties else rand(*shape)
    (y,) = forward("ArgMax", f"argmax_param {{ {params} }}", {"x": x})
    want = caffe_argmax(x, axis, top_k, out_max_val)
    assert y.shape == want.shape
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("params, shape, want", [
    pytest.param("", SHAPE, (2, 60), id="default"),
    pytest.param("flatten_param { axis: 2 }", SHAPE, (2, 3, 20), id="from-h"),
    pytest.param("flatten_param { end_axis: 2 }", SHAPE, (2, 12, 5), id="to-h"),
    pytest.param("flatten_param { axis: -3 end_axis: -2 }", SHAPE, (2, 12, 5), id="negative-axes"),
])
def test_flatten(params: str, shape, want) -> None:
    x = rand(*shape)
    (y,) = forward("Flatten", params, {"x": x})
    np.testing.assert_array_equal(y, x.reshape(want))


def caffe_reshape_shape(shape, dims, axis: int = 0, num_axes: int = -1):
    """ReshapeLayer::Reshape: ``dims`` replace ``[start, end)``; 0 copies the bottom's axis, -1 takes the rest."""
    start = axis if axis >= 0 else len(shape) + axis + 1
    end = len(shape) if num_axes == -1 else start + num_axes
    new = [shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
    top = list(shape[:start]) + new + list(shape[end:])
    if -1 in top:
        top[top.index(-1)] = int(np.prod(shape)) // -int(np.prod(top))
    return tuple(top)


@pytest.mark.parametrize("dims, axis, num_axes, shape, want", [
    pytest.param([0, -1], 0, -1, SHAPE, (2, 60), id="copy-and-infer"),
    pytest.param([0, 0, -1], 0, -1, SHAPE, (2, 3, 20), id="copy-two"),
    pytest.param([-1, 6], 0, -1, SHAPE, (20, 6), id="infer-first"),
    pytest.param([6, 0, -1], 0, -1, (2, 3, 4, 6), (6, 3, 8), id="copy-in-the-middle"),
    pytest.param([-1], 1, 2, SHAPE, (2, 12, 5), id="merge-c-h"),
    pytest.param([1], -1, 0, SHAPE, (2, 3, 4, 5, 1), id="append-an-axis"),
    pytest.param([2, 2], 2, 1, SHAPE, (2, 3, 2, 2, 5), id="split-h"),
])
def test_reshape(dims, axis: int, num_axes: int, shape, want) -> None:
    x = rand(*shape)
    params = f"reshape_param {{ axis: {axis} num_axes: {num_axes} shape {{ {' '.join(f'dim: {d}' for d in dims)} }} }}"
    (y,) = forward("Reshape", params, {"x": x})
    assert caffe_reshape_shape(shape, dims, axis, num_axes) == want
    np.testing.assert_array_equal(y, x.reshape(want))


@pytest.mark.parametrize("type_, params, error, match", [
    pytest.param("InnerProduct", "inner_product_param { num_output: 0 }", LayerParamError, "num_output must be",
                 id="ip-no-outputs"),
    pytest.param("InnerProduct", "inner_product_param { num_output: 2 axis: 4 }", ShapeError,
                 "axis 4 is out of range", id="ip-axis"),
    pytest.param("Softmax", "softmax_param { axis: -5 }", ShapeError, "axis -5 is out of range", id="softmax-axis"),
    pytest.param("ArgMax", "argmax_param { axis: 1 top_k: 4 }", ShapeError, "top_k 4 exceeds axis 1 of size 3",
                 id="argmax-top-k"),
    pytest.param("ArgMax", "argmax_param { top_k: 61 }", ShapeError, "exceeds the 60 values", id="argmax-top-k-flat"),
    pytest.param("ArgMax", "argmax_param { axis: 1 top_k: 0 }", LayerParamError, "top_k", id="argmax-top-k-0"),
    pytest.param("Flatten", "flatten_param { axis: 2 end_axis: 1 }", ShapeError, "comes before axis 2",
                 id="flatten-axes"),
    pytest.param("Reshape", "reshape_param { shape { dim: -1 dim: -1 } }", LayerParamError, "one -1",
                 id="reshape-two-infers"),
    pytest.param("Reshape", "reshape_param { shape { dim: 7 dim: -1 } }", ShapeError, "cannot reshape",
                 id="reshape-indivisible"),
    pytest.param("Reshape", "reshape_param { axis: 3 shape { dim: 0 dim: 0 } }", ShapeError,
                 "copies \\(0\\) an axis", id="reshape-copies-past-the-end"),
])
def test_invalid(type_: str, params: str, error, match: str) -> None:
    expect_error(error, match, type_, params, {"x": SHAPE})
