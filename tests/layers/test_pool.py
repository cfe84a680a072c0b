"""Caffe's pooling arithmetic against an independent NumPy transcription of PoolingLayer::Reshape/Forward_cpu."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protoseg.layers.pool import Pool2d, caffe_pool_size, torch_exact


def caffe_pool(x: np.ndarray, mode: str, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int]) -> np.ndarray:
    """Caffe's loops, literally: float ceil sizing, the clip when pad_h || pad_w, window clipped to [0, H)
    for MAX, divisor clipped to H + pad for AVE."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    oh = int(math.ceil((h + 2 * ph - kh) / sh)) + 1
    ow = int(math.ceil((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    out = np.empty((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            if mode == "MAX":
                out[:, :, i, j] = window.max(axis=(2, 3)) if window.size else -np.finfo(np.float32).max
            else:
                out[:, :, i, j] = window.sum(axis=(2, 3)) / size
    return out


def _check(x: np.ndarray, mode: str, k, s, p) -> None:
    clip = any(p)
    exact = all(torch_exact(*a, clip) for a in zip(k, s, p))
    for use_torch in ([True, False] if exact else [False]):
        y = Pool2d(mode, k, s, p, use_torch)(torch.from_numpy(x)).numpy()
        ref = caffe_pool(x, mode, k, s, p)
        assert y.shape == ref.shape, (use_torch, y.shape, ref.shape)
        # Degenerate windows (stride > kernel) give Caffe its 0 / 0: NaN on both sides.
        assert np.allclose(y, ref, rtol=1e-6, atol=1e-6, equal_nan=True), (use_torch, np.abs(y - ref).max())


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("k, s, p", [(3, 2, 1), (2, 2, 0), (3, 2, 2), (1, 3, 0), (5, 3, 2), (4, 4, 3), (3, 1, 1)])
@pytest.mark.parametrize("size", [(7, 7), (12, 9), (21, 18)])
def test_pool_matches_caffe_loops(mode: str, k: int, s: int, p: int, size: tuple[int, int]) -> None:
    x = np.random.default_rng(k * 100 + s * 10 + p).standard_normal((1, 2, *size)).astype(np.float32)
    _check(x, mode, (k, k), (s, s), (p, p))


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("k, s, p", [((1, 3), (3, 1), (0, 1)), ((3, 1), (1, 3), (1, 0)), ((2, 3), (4, 2), (0, 1)),
                                     ((3, 2), (2, 2), (1, 0))])
def test_padding_on_one_axis_clips_both(mode: str, k, s, p) -> None:
    """Caffe's Reshape drops the last window on every axis once the layer pads on any axis."""
    x = np.random.default_rng(7).standard_normal((1, 2, 5, 10)).astype(np.float32)
    _check(x, mode, k, s, p)


def test_output_size_rule() -> None:
    # ceil rounding, then the last window dropped when it would start in the right padding
    assert caffe_pool_size(21, 3, 1, 2, True) == 11
    assert caffe_pool_size(4, 3, 2, 2, True) == 3 != math.ceil((4 + 4 - 3) / 2) + 1
    assert caffe_pool_size(5, 1, 0, 3, False) == 3  # no drop without padding, even if the window starts outside
    assert caffe_pool_size(5, 1, 0, 3, True) == 2  # ... but dropped when the other axis pads


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mask_stays_exact_in_half_precision(dtype: torch.dtype) -> None:
    """A 64 x 64 plane has indices up to 4095, past what bf16 (256) or fp16 (2048) hold exactly."""
    x = torch.zeros(1, 1, 64, 64)
    x[..., 1::2, 1::2] = 1.0  # each window's maximum at its bottom right
    for use_torch in (True, False):
        y, mask = Pool2d("MAX", (2, 2), (2, 2), (0, 0), use_torch, with_mask=True)(x.to(dtype))
        assert mask.dtype == torch.float32
        expected = (torch.arange(32)[:, None] * 2 + 1) * 64 + torch.arange(32)[None, :] * 2 + 1
        assert torch.equal(mask[0, 0], expected.float())
