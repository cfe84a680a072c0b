"""Convolution and Deconvolution against NumPy transcriptions of Caffe's im2col / col2im arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import assert_close, expect_error, forward, one_layer, rand


def taps(start: int, stride: int, count: int) -> slice:
    """The padded-plane positions one kernel tap meets: ``start``, then every ``stride``, ``count`` of them."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def caffe_conv(x, w, b, stride, pad, dilation, group):
    """ConvolutionLayer: per group, ``W (o x c*kh*kw) @ im2col(x)``, the columns read from the zero-padded input
    at ``i * stride - pad + ki * dilation``; output ``(H + 2p - (d (k - 1) + 1)) / s + 1``, floored."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        for i in range(kh):
            for j in range(kw):
                rows, cols = taps(i * dh, sh, oh), taps(j * dw, sw, ow)
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", xp[:, g * cg:(g + 1) * cg, rows, cols],
                                                         w[g * og:(g + 1) * og, :, i, j])
    return out + (0 if b is None else b[None, :, None, None])


def caffe_deconv(x, w, b, stride, pad, dilation, group):
    """DeconvolutionLayer: per group, ``col2im(W^T @ x)``: every input pixel adds its weighted kernel at
    ``i * stride - pad + ki * dilation``, what falls in the padding dropped; output
    ``(H - 1) * s - 2p + d (k - 1) + 1``."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    n, _, h, wd = x.shape
    cg, og, kh, kw = w.shape[0] // group, w.shape[1], w.shape[2], w.shape[3]
    oh, ow = (h - 1) * sh - 2 * ph + dh * (kh - 1) + 1, (wd - 1) * sw - 2 * pw + dw * (kw - 1) + 1
    full = np.zeros((n, og * group, oh + 2 * ph, ow + 2 * pw))
    for g in range(group):
        for i in range(kh):
            for j in range(kw):
                part = np.einsum("nchw,co->nohw", x[:, g * cg:(g + 1) * cg].astype(np.float64),
                                 w[g * cg:(g + 1) * cg, :, i, j])
                full[:, g * og:(g + 1) * og, taps(i * dh, sh, h), taps(j * dw, sw, wd)] += part
    out = full[:, :, ph:ph + oh, pw:pw + ow]
    return out + (0 if b is None else b[None, :, None, None])


#: (convolution_param, input shape, num_output, group, kernel, stride, pad, dilation, bias)
CASES = [
    pytest.param("kernel_size: 3", (2, 3, 7, 6), 4, 1, (3, 3), (1, 1), (0, 0), (1, 1), True, id="plain"),
    pytest.param("kernel_size: 3 stride: 2 pad: 1", (1, 3, 9, 8), 5, 1, (3, 3), (2, 2), (1, 1), (1, 1), True,
                 id="stride-pad"),
    pytest.param("kernel_size: 3 dilation: 2 pad: 2", (1, 2, 9, 10), 3, 1, (3, 3), (1, 1), (2, 2), (2, 2), True,
                 id="dilation"),
    pytest.param("kernel_size: 3 pad: 1 group: 2", (1, 4, 6, 6), 6, 2, (3, 3), (1, 1), (1, 1), (1, 1), True,
                 id="groups"),
    pytest.param("kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (1, 2, 7, 5), 3, 1, (3, 1),
                 (2, 1), (1, 0), (1, 1), True, id="h-w-fields"),
    pytest.param("kernel_size: [3, 2] stride: [1, 2] pad: [0, 1] dilation: [2, 1]", (1, 2, 8, 7), 2, 1, (3, 2),
                 (1, 2), (0, 1), (2, 1), True, id="repeated-h-w"),
    pytest.param("kernel_size: 1 bias_term: false", (2, 3, 4, 5), 2, 1, (1, 1), (1, 1), (0, 0), (1, 1), False,
                 id="no-bias"),
]

DECONV_CASES = [
    pytest.param("kernel_size: 4 stride: 2 pad: 1", (1, 3, 5, 4), 2, 1, (4, 4), (2, 2), (1, 1), (1, 1), True,
                 id="upsample-2x"),
    pytest.param("kernel_size: 4 stride: 2 group: 3 bias_term: false", (2, 3, 4, 4), 3, 3, (4, 4), (2, 2), (0, 0),
                 (1, 1), False, id="fcn-bilinear-groups"),
    pytest.param("kernel_size: 3 dilation: 2 pad: 1", (1, 2, 4, 5), 3, 1, (3, 3), (1, 1), (1, 1), (2, 2), True,
                 id="dilation"),
    pytest.param("kernel_h: 2 kernel_w: 3 stride_h: 3 stride_w: 1 pad_h: 0 pad_w: 1 group: 2", (1, 4, 3, 4), 4, 2,
                 (2, 3), (3, 1), (0, 1), (1, 1), True, id="h-w-fields-groups"),
]


def _blobs(transposed: bool, c: int, num_output: int, group: int, kernel, bias: bool):
    shape = (c, num_output // group, *kernel) if transposed else (num_output, c // group, *kernel)
    blobs = [rand(*shape, seed=1)]
    return blobs + [rand(num_output, seed=2)] if bias else blobs


@pytest.mark.parametrize("params, shape, num_output, group, kernel, stride, pad, dilation, bias", CASES)
def test_convolution(params, shape, num_output, group, kernel, stride, pad, dilation, bias) -> None:
    x = rand(*shape)
    blobs = _blobs(False, shape[1], num_output, group, kernel, bias)
    (y,) = forward("Convolution", f"convolution_param {{ num_output: {num_output} {params} }}", {"x": x}, blobs)
    assert_close(y, caffe_conv(x, blobs[0], blobs[1] if bias else None, stride, pad, dilation, group))


@pytest.mark.parametrize("params, shape, num_output, group, kernel, stride, pad, dilation, bias", DECONV_CASES)
def test_deconvolution(params, shape, num_output, group, kernel, stride, pad, dilation, bias) -> None:
    x = rand(*shape)
    blobs = _blobs(True, shape[1], num_output, group, kernel, bias)
    (y,) = forward("Deconvolution", f"convolution_param {{ num_output: {num_output} {params} }}", {"x": x}, blobs)
    assert_close(y, caffe_deconv(x, blobs[0], blobs[1] if bias else None, stride, pad, dilation, group))


def test_blob_shapes_follow_caffe_layouts() -> None:
    conv = one_layer("Convolution", "convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 group: 2 }",
                     {"x": (1, 4, 8, 8)}).layers[0]
    deconv = one_layer("Deconvolution", "convolution_param { num_output: 6 kernel_size: 4 group: 2 bias_term: false }",
                       {"x": (1, 4, 8, 8)}).layers[0]
    assert conv.blob_shapes == [(6, 2, 3, 2), (6,)] and deconv.blob_shapes == [(4, 3, 4, 4)]
    # FCN's fc6 stored as an InnerProduct weight loads into the convolution it became (not into a deconvolution)
    assert conv.converter.accepts(0, (6, 2, 3, 2), (6, 12)) and not deconv.converter.accepts(0, (4, 3, 4, 4), (4, 48))


@pytest.mark.parametrize("type_, params, shape, error, match", [
    pytest.param("Convolution", "num_output: 0 kernel_size: 3", (1, 1, 5, 5), LayerParamError, "num_output must be",
                 id="no-outputs"),
    pytest.param("Convolution", "num_output: 3 kernel_size: 3 group: 2", (1, 2, 5, 5), LayerParamError,
                 "not divisible by group 2", id="outputs-not-divisible"),
    pytest.param("Deconvolution", "num_output: 2 kernel_h: 3", (1, 1, 5, 5), LayerParamError,
                 "give both kernel_h and kernel_w", id="kernel-h-alone"),
    pytest.param("Convolution", "num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3", (1, 1, 5, 5),
                 LayerParamError, "only 2-D convolution", id="3-d-kernel"),
    pytest.param("Convolution", "num_output: 2 kernel_size: 3 stride: 0", (1, 1, 5, 5), LayerParamError,
                 "must be positive", id="zero-stride"),
    pytest.param("Convolution", "num_output: 2 kernel_size: 3 axis: 2", (1, 1, 5, 5), LayerParamError,
                 "axis 2 is not supported", id="axis"),
    pytest.param("Convolution", "num_output: 2 kernel_size: 3 group: 2", (1, 3, 5, 5), ShapeError,
                 "3 channels, not divisible by group 2", id="channels-not-divisible"),
    pytest.param("Convolution", "num_output: 2 kernel_size: 7", (1, 1, 5, 5), ShapeError, "input is too small",
                 id="input-too-small"),
])
def test_invalid(type_, params, shape, error, match) -> None:
    expect_error(error, match, type_, f"convolution_param {{ {params} }}", {"x": shape})
