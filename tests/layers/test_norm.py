"""BVLC's BatchNorm, Scale and LRN against NumPy transcriptions of batch_norm_layer.cpp, scale_layer.cpp and
lrn_layer.cpp (WITHIN_CHANNEL as Caffe builds it: square, AVE pooling with Caffe's divisor, power, product)."""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import assert_close, expect_error, forward, rand


def caffe_batch_norm(x, mean, var, factor, eps, global_stats=True):
    """Stored statistics times ``1 / factor`` (0 when the factor is 0), or this batch's biased ones."""
    x = x.astype(np.float64)
    shape, axes = (1, -1) + (1,) * (x.ndim - 2), (0,) + tuple(range(2, x.ndim))
    if global_stats:
        scale = 0.0 if factor[0] == 0 else 1.0 / factor[0]
        mean, var = mean * scale, var * scale
    else:
        mean = x.mean(axis=axes)
        var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)


@pytest.mark.parametrize("params, shape, factor, global_stats", [
    pytest.param("", (2, 3, 4, 5), 2.5, True, id="scale-factor"),
    pytest.param("eps: 0.001 use_global_stats: true", (1, 4, 3, 3), 1.0, True, id="eps"),
    pytest.param("", (1, 3, 2, 2), 0.0, True, id="zero-factor-zero-stats"),
    pytest.param("", (5, 4), 3.0, True, id="2-d"),
    pytest.param("use_global_stats: false", (2, 3, 4, 5), 7.0, False, id="batch-stats"),
])
def test_batch_norm(params: str, shape, factor: float, global_stats: bool) -> None:
    x = rand(*shape)
    blobs = [rand(shape[1], seed=1), rand(shape[1], seed=2, low=0.5, high=3), np.float32([factor])]
    (y,) = forward("BatchNorm", f"batch_norm_param {{ {params} }}", {"x": x}, blobs)
    eps = 0.001 if "eps" in params else 1e-5
    assert_close(y, caffe_batch_norm(x, *blobs, eps, global_stats))


def caffe_scale(x, scale, bias, axis: int):
    """ScaleLayer::Forward_cpu: x as (outer, scale_dim, inner), ``y = x * scale[d] (+ bias[d])``."""
    axis %= x.ndim
    outer = int(np.prod(x.shape[:axis]))
    view = x.astype(np.float64).reshape(outer, scale.size, -1)
    y = view * scale.reshape(1, -1, 1) + (0 if bias is None else bias.reshape(1, -1, 1))
    return y.reshape(x.shape)


@pytest.mark.parametrize("params, shape, blob_shape, axis", [
    pytest.param("", (2, 3, 4, 5), (3,), 1, id="per-channel"),
    pytest.param("bias_term: true", (2, 3, 4, 5), (3,), 1, id="per-channel-bias"),
    pytest.param("axis: 0 num_axes: -1 bias_term: true", (2, 3, 2, 2), (2, 3, 2, 2), 0, id="whole-blob"),
    pytest.param("num_axes: 0", (2, 3, 2, 2), (), 1, id="scalar"),
    pytest.param("axis: -2 num_axes: 2", (1, 2, 3, 4), (3, 4), 2, id="negative-axis-h-w"),
    pytest.param("axis: 1 num_axes: 2 bias_term: true", (2, 3, 4, 2), (3, 4), 1, id="c-h"),
])
def test_scale_with_learned_blob(params: str, shape, blob_shape, axis: int) -> None:
    x = rand(*shape)
    blobs = [rand(*blob_shape, seed=1)] + ([rand(*blob_shape, seed=2)] if "bias_term" in params else [])
    (y,) = forward("Scale", f"scale_param {{ {params} }}", {"x": x}, blobs)
    assert_close(y, caffe_scale(x, blobs[0], blobs[1] if len(blobs) == 2 else None, axis))


@pytest.mark.parametrize("params, shape, scale_shape, axis", [
    pytest.param("", (2, 3, 4, 5), (3,), 1, id="per-channel"),
    pytest.param("axis: 0 bias_term: true", (2, 3, 4, 5), (2, 3), 0, id="per-item-and-channel-bias"),
    pytest.param("axis: 1 bias_term: true", (2, 3, 4, 5), (3, 4, 5), 1, id="c-h-w-bias"),
])
def test_scale_with_second_bottom(params: str, shape, scale_shape, axis: int) -> None:
    x, scale = rand(*shape), rand(*scale_shape, seed=1)
    blobs = [rand(*scale_shape, seed=2)] if "bias_term" in params else []
    (y,) = forward("Scale", f"scale_param {{ {params} }}", {"x": x, "s": scale}, blobs)
    assert_close(y, caffe_scale(x, scale, blobs[0] if blobs else None, axis))


def caffe_lrn(x, size: int, alpha: float, beta: float, k: float, within: bool):
    """ACROSS_CHANNELS: ``k + alpha / size * sum of squares`` over channels ``[c - pre, c - pre + size)`` (zero
    outside). WITHIN_CHANNEL: ``1 + alpha * AVE-pool(x^2)``, kernel ``size``, stride 1, pad ``pre``, Caffe's
    divisor (the window clipped to ``H + pad``). Then ``x * scale^-beta``."""
    x = x.astype(np.float64)
    _, c, h, w = x.shape
    pre = (size - 1) // 2
    square = x * x
    scale = np.empty_like(x)
    if not within:
        for ch in range(c):
            lo, hi = max(ch - pre, 0), min(ch - pre + size, c)
            scale[:, ch] = k + alpha / size * square[:, lo:hi].sum(axis=1)
        return x * scale ** -beta
    for i in range(h):
        for j in range(w):
            hs, ws = i - pre, j - pre
            he, we = min(hs + size, h + pre), min(ws + size, w + pre)
            divisor = (he - hs) * (we - ws)
            window = square[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            scale[:, :, i, j] = 1 + alpha * window.sum(axis=(2, 3)) / divisor
    return x * scale ** -beta


@pytest.mark.parametrize("size, alpha, beta, k, within, shape", [
    pytest.param(5, 1e-4, 0.75, 1.0, False, (2, 7, 3, 4), id="across-alexnet"),
    pytest.param(3, 2.0, 0.5, 2.0, False, (1, 4, 3, 3), id="across-strong"),
    pytest.param(3, 0.5, 0.75, 1.0, True, (1, 2, 5, 6), id="within-3"),
    pytest.param(5, 1.5, 0.6, 1.0, True, (2, 2, 4, 3), id="within-window-past-the-map"),
    pytest.param(9, 3.0, 0.75, 1.0, False, (1, 3, 2, 2), id="across-window-past-all-channels"),
    pytest.param(2**31 - 1, 1e9, 0.75, 1.0, False, (1, 3, 2, 2), id="across-window-of-2^31"),
])
def test_lrn(size: int, alpha: float, beta: float, k: float, within: bool, shape) -> None:
    x = rand(*shape)
    region = "WITHIN_CHANNEL" if within else "ACROSS_CHANNELS"
    params = f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} norm_region: {region} }}"
    (y,) = forward("LRN", params, {"x": x})
    assert_close(y, caffe_lrn(x, size, alpha, beta, k, within))


@pytest.mark.parametrize("type_, params, shapes, error, match", [
    pytest.param("LRN", "lrn_param { local_size: 4 }", {"x": (1, 3, 4, 4)}, LayerParamError, "must be odd",
                 id="lrn-even-size"),
    pytest.param("Scale", "scale_param { num_axes: -2 }", {"x": (1, 3, 4, 4)}, LayerParamError,
                 "must be -1 or more", id="scale-num-axes"),
    pytest.param("Scale", "scale_param { axis: 2 num_axes: 3 }", {"x": (1, 3, 4, 4)}, ShapeError,
                 "exceeds the bottom's 4 axes", id="scale-too-many-axes"),
    pytest.param("Scale", "scale_param { axis: 4 }", {"x": (1, 3, 4, 4)}, ShapeError, "axis 4 is out of range",
                 id="scale-axis"),
    pytest.param("Scale", "", {"x": (1, 3, 4, 4), "s": (4,)}, ShapeError, "does not match", id="scale-bottom-shape"),
])
def test_invalid(type_: str, params: str, shapes: dict, error, match: str) -> None:
    expect_error(error, match, type_, params, shapes)
