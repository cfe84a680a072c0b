"""DeepLab's Interp and DeepLab v1's Padding against transcriptions of the forks' C++.

Interp: ``InterpLayer::Reshape`` (DrSleep/deeplab-public-ver2, hszhao/PSPNet: the same code) for the size, and
``caffe_cpu_interp2`` (``src/caffe/util/interp.cpp``) for the values, with its float32 ratio and truncation.
Padding: ``PaddingLayer::Forward_cpu`` (DeepLab v1's ``padding_layer.cpp``). The validation cases run in the
DeepLab v1 fork (open-cv/deeplab-v1), whose Interp takes exactly one size specification.
"""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import assert_close, expect_error, forward, rand

FORK = "deeplab-v2"


def caffe_interp_size(hw, zoom=None, shrink=None, size=None, like=None, pad=(0, 0)) -> tuple[int, int]:
    """InterpLayer::Reshape, branch by branch (``like``: the second bottom's (H, W), a branch only some copies of
    the fork have, after all of these)."""
    eff = [n + pad[0] + pad[1] for n in hw]
    if shrink is not None and zoom is None:
        return tuple((n - 1) // shrink + 1 for n in eff)
    if zoom is not None and shrink is None:
        return tuple(n + (n - 1) * (zoom - 1) for n in eff)
    if size is not None:
        return size
    if zoom is not None and shrink is not None:
        shrunk = [(n - 1) // shrink + 1 for n in eff]
        return tuple(n + (n - 1) * (zoom - 1) for n in shrunk)
    return like


def _taps(n_in: int, n_out: int):
    """caffe_cpu_interp2 along one axis: ``r = float(in - 1) / (out - 1)``, source ``float(r * i)`` truncated,
    the next pixel unless at the edge, and the fraction."""
    ratio = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    src = (ratio * np.arange(n_out, dtype=np.float32)).astype(np.float32)
    first = src.astype(np.int64)
    return first, first + (first < n_in - 1), (src - first).astype(np.float64)


def caffe_interp2(x: np.ndarray, out_hw, pad=(0, 0)) -> np.ndarray:
    """The region ``[-pad_beg, H + pad_end)`` of each plane resized to ``out_hw``; equal sizes copy."""
    beg, end = pad
    x = x[..., -beg:x.shape[-2] + end, -beg:x.shape[-1] + end].astype(np.float64)
    if tuple(x.shape[-2:]) == tuple(out_hw):
        return x
    h0, h1, hl = _taps(x.shape[-2], out_hw[0])
    w0, w1, wl = _taps(x.shape[-1], out_hw[1])
    rows = (1 - hl)[:, None] * x[..., h0, :] + hl[:, None] * x[..., h1, :]
    return (1 - wl) * rows[..., w0] + wl * rows[..., w1]


@pytest.mark.parametrize("fields, shape, like, expected_hw", [
    pytest.param({"zoom_factor": 2}, (1, 2, 5, 7), None, (9, 13), id="zoom"),
    pytest.param({"zoom_factor": 3}, (2, 1, 4, 3), None, (10, 7), id="zoom-3"),
    pytest.param({"shrink_factor": 2}, (1, 2, 9, 8), None, (5, 4), id="shrink"),
    pytest.param({"zoom_factor": 2, "shrink_factor": 3}, (1, 1, 10, 11), None, (7, 7), id="shrink-then-zoom"),
    pytest.param({"shrink_factor": 3, "zoom_factor": 2}, (1, 1, 10, 11), None, (7, 7), id="either-order"),
    pytest.param({"height": 7, "width": 11}, (1, 2, 4, 5), None, (7, 11), id="height-width"),
    pytest.param({"height": 3, "width": 4}, (1, 1, 8, 9), None, (3, 4), id="height-width-down"),
    pytest.param({"height": 1, "width": 1}, (1, 1, 4, 5), None, (1, 1), id="to-one-pixel"),
    pytest.param({"height": 4, "width": 5}, (1, 1, 1, 3), None, (4, 5), id="from-one-row"),
    pytest.param({"height": 6, "width": 5}, (1, 2, 6, 5), None, (6, 5), id="same-size-copies"),
    pytest.param({"zoom_factor": 2, "height": 3, "width": 3}, (1, 1, 5, 5), None, (9, 9), id="zoom-before-size"),
    pytest.param({}, (1, 2, 4, 6), (1, 1, 6, 9), (6, 9), id="second-bottom"),
    pytest.param({"zoom_factor": 2, "pad_beg": -1, "pad_end": -2}, (1, 1, 9, 8), None, (11, 9), id="negative-pads"),
    pytest.param({"height": 5, "width": 5, "pad_end": -1}, (1, 1, 4, 4), None, (5, 5), id="pad-end-only"),
    pytest.param({"zoom_factor": 2, "shrink_factor": 2, "height": 7, "width": 6}, (1, 1, 9, 9), None, (7, 6),
                 id="size-before-shrink-and-zoom"),
])
def test_interp(fields: dict, shape, like, expected_hw) -> None:
    x = rand(*shape)
    inputs = {"x": x} if like is None else {"x": x, "like": rand(*like, seed=1)}
    params = " ".join(f"{k}: {v}" for k, v in fields.items())
    (y,) = forward("Interp", f"interp_param {{ {params} }}", inputs, fork=FORK)
    size = (fields["height"], fields["width"]) if "height" in fields else None
    pad = (fields.get("pad_beg", 0), fields.get("pad_end", 0))
    hw = caffe_interp_size(shape[2:], fields.get("zoom_factor"), fields.get("shrink_factor"), size,
                           None if like is None else like[2:], pad)
    assert hw == expected_hw  # the oracle's size rule, worked by hand
    assert_close(y, caffe_interp2(x, hw, pad))


def caffe_padding(x: np.ndarray, beg: int, end: int) -> np.ndarray:
    """PaddingLayer::Forward_cpu: both pads >= 0 zero-fill and copy at (beg, beg); both <= 0 copy from (-beg, -beg)."""
    n, c, h, w = x.shape
    out_h, out_w = h + beg + end, w + beg + end
    top = np.zeros((n, c, out_h, out_w), x.dtype)
    if beg >= 0 and end >= 0:
        for row in range(h):
            top[:, :, row + beg, beg:beg + w] = x[:, :, row]
    else:
        for row in range(out_h):
            top[:, :, row] = x[:, :, row - beg, -beg:-beg + out_w]
    return top


@pytest.mark.parametrize("beg, end", [(2, 1), (0, 3), (0, 0), (-1, -2), (-2, 0)])
def test_padding(beg: int, end: int) -> None:
    x = rand(2, 3, 5, 6)
    (y,) = forward("Padding", f"padding_param {{ pad_beg: {beg} pad_end: {end} }}", {"x": x}, fork="deeplab-v1")
    np.testing.assert_array_equal(y, caffe_padding(x, beg, end))


@pytest.mark.parametrize("type_, params, shape, error, match", [
    pytest.param("Interp", "interp_param { zoom_factor: 2 pad_beg: 1 }", (1, 1, 5, 5), LayerParamError,
                 "only crops", id="positive-pad"),
    pytest.param("Interp", "interp_param { height: 5 }", (1, 1, 5, 5), LayerParamError,
                 "give both height and width", id="height-alone"),
    pytest.param("Interp", "interp_param { height: 0 width: 5 }", (1, 1, 5, 5), LayerParamError, "must be positive",
                 id="zero-height"),
    pytest.param("Interp", "interp_param { zoom_factor: 0 }", (1, 1, 5, 5), LayerParamError, "must be >= 1",
                 id="zero-zoom"),
    pytest.param("Interp", "interp_param { }", (1, 1, 5, 5), LayerParamError, "needs zoom_factor", id="no-size"),
    pytest.param("Interp", "interp_param { zoom_factor: 2 pad_beg: -3 pad_end: -2 }", (1, 1, 5, 5), ShapeError,
                 "leave nothing", id="pads-eat-everything"),
    pytest.param("Interp", "interp_param { zoom_factor: 2 shrink_factor: 2 }", (1, 1, 5, 5), LayerParamError,
                 "exactly one of", id="v1-two-sizes"),
    pytest.param("Padding", "padding_param { pad_beg: -3 pad_end: -3 }", (1, 1, 5, 5), ShapeError,
                 "leave nothing", id="padding-eats-everything"),
    pytest.param("Padding", "padding_param { pad_beg: 2 pad_end: -1 }", (1, 1, 5, 5), LayerParamError, "alike",
                 id="padding-mixed-signs"),
])
def test_invalid(type_: str, params: str, shape, error, match: str) -> None:
    expect_error(error, match, type_, params, {"x": shape}, fork="deeplab-v1")
