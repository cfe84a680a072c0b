"""DeconvNet's Unpooling (MAX) against a transcription of HyeonwooNoh/caffe's unpooling_layer.cpp."""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import expect_error, forward, max_pool_mask, rand, scatter

FORK = "deconvnet"


def caffe_unpool(x, mask, out_hw, stride):
    """UnpoolingLayer::Forward_cpu, MAX, pad 0: each value to the position its mask holds, or without a mask to
    ``(h * stride, w * stride)`` clamped into the plane."""
    if mask is not None:
        return scatter(x, mask, *out_hw)
    h, w = x.shape[2:]
    rows = np.minimum(np.arange(h) * stride[0], out_hw[0] - 1)
    cols = np.minimum(np.arange(w) * stride[1], out_hw[1] - 1)
    return scatter(x, np.broadcast_to(rows[:, None] * out_hw[1] + cols[None, :], x.shape), *out_hw)


def default_size(hw, kernel, stride):
    """Reshape without unpool_size: ``max((H - 1) * s + k, H * s + 1)`` (LayerSetUp's CHECK never lets Caffe get
    here; protoseg documents it as the size of a layer without one)."""
    return tuple(max((n - 1) * s + k, n * s + 1) for n, k, s in zip(hw, kernel, stride))


@pytest.mark.parametrize("shape, kernel, stride, size_params, out_hw", [
    pytest.param((2, 3, 8, 8), (2, 2), (2, 2), "unpool_size: 8", (8, 8), id="unpool-size"),
    pytest.param((1, 2, 7, 5), (2, 2), (2, 2), "unpool_h: 7 unpool_w: 5", (7, 5), id="unpool-h-w"),
    pytest.param((1, 2, 6, 9), (2, 3), (2, 3), "unpool_h: 6 unpool_w: 9", (6, 9), id="kernel-stride-h-w"),
])
def test_unpooling_with_mask(shape, kernel, stride, size_params: str, out_hw) -> None:
    pooled, mask = max_pool_mask(rand(*shape), kernel, stride)
    params = (f"unpooling_param {{ unpool: MAX kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} "
              f"stride_w: {stride[1]} {size_params} }}")
    (y,) = forward("Unpooling", params, {"x": pooled, "mask": mask}, fork=FORK)
    np.testing.assert_array_equal(y, caffe_unpool(pooled, mask, out_hw, stride))


@pytest.mark.parametrize("shape, size_params, out_hw", [
    pytest.param((1, 2, 4, 3), "unpool_size: 8", (8, 8), id="unpool-size"),
    pytest.param((2, 1, 3, 4), "", default_size((3, 4), (2, 2), (2, 2)), id="default-size"),
    pytest.param((1, 1, 3, 3), "unpool_size: 4", (4, 4), id="clamped-to-the-plane"),
])
def test_unpooling_without_mask(shape, size_params: str, out_hw) -> None:
    x = rand(*shape)
    (y,) = forward("Unpooling", f"unpooling_param {{ kernel_size: 2 stride: 2 {size_params} }}", {"x": x}, fork=FORK)
    np.testing.assert_array_equal(y, caffe_unpool(x, None, out_hw, (2, 2)))


@pytest.mark.parametrize("params, shapes, error, match", [
    pytest.param("unpool: AVE kernel_size: 2", {"x": (1, 1, 2, 2)}, LayerParamError, "AVE is not supported",
                 id="ave"),
    pytest.param("kernel_size: 2 pad: 1", {"x": (1, 1, 2, 2)}, LayerParamError, "pad \\(1, 1\\) 0", id="pad"),
    pytest.param("stride: 2", {"x": (1, 1, 2, 2)}, LayerParamError, "kernel_size is required", id="no-kernel"),
    pytest.param("kernel_size: 2 unpool_h: 4", {"x": (1, 1, 2, 2)}, LayerParamError, "give both unpool_h",
                 id="unpool-h-alone"),
    pytest.param("kernel_size: 2", {"x": (1, 1, 2, 2), "mask": (1, 1, 2, 3)}, ShapeError, "a mask of its shape",
                 id="mask-shape"),
])
def test_invalid(params: str, shapes: dict, error, match: str) -> None:
    expect_error(error, match, "Unpooling", f"unpooling_param {{ {params} }}", shapes, fork=FORK)
