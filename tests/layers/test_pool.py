"""Caffe's pooling arithmetic against an independent NumPy transcription of PoolingLayer::Forward_cpu."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protoseg.layers.pool import Pool2d, caffe_pool_size


def caffe_pool(x: np.ndarray, mode: str, k: int, s: int, p: int) -> np.ndarray:
    """Caffe's loops, literally: window clipped to [0, H) for MAX, divisor clipped to H + pad for AVE."""
    n, c, h, w = x.shape
    oh, ow = caffe_pool_size(h, k, p, s), caffe_pool_size(w, k, p, s)
    out = np.empty((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            if mode == "MAX":
                out[:, :, i, j] = window.max(axis=(2, 3)) if window.size else -np.finfo(np.float32).max
            else:
                out[:, :, i, j] = window.sum(axis=(2, 3)) / size
    return out


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("k, s, p", [(3, 2, 1), (2, 2, 0), (3, 2, 2), (1, 3, 0), (5, 3, 2), (4, 4, 3), (3, 1, 1)])
@pytest.mark.parametrize("size", [(7, 7), (12, 9), (21, 18)])
def test_pool_matches_caffe_loops(mode: str, k: int, s: int, p: int, size: tuple[int, int]) -> None:
    x = np.random.default_rng(k * 100 + s * 10 + p).standard_normal((1, 2, *size)).astype(np.float32)
    exact = 2 * p <= k and (p > 0 or s <= k)
    for torch_exact in ([True, False] if exact else [False]):
        y = Pool2d(mode, (k, k), (s, s), (p, p), torch_exact)(torch.from_numpy(x)).numpy()
        ref = caffe_pool(x, mode, k, s, p)
        assert y.shape == ref.shape
        # Degenerate windows (stride > kernel) give Caffe its 0 / 0: NaN on both sides.
        assert np.allclose(y, ref, rtol=1e-6, atol=1e-6, equal_nan=True), (torch_exact, np.abs(y - ref).max())


def test_output_size_rule() -> None:
    # ceil rounding, then the last window dropped when it would start in the right padding
    assert caffe_pool_size(21, 3, 1, 2) == 11
    assert caffe_pool_size(4, 3, 2, 2) == 3 != math.ceil((4 + 4 - 3) / 2) + 1
    assert caffe_pool_size(5, 1, 0, 3) == 3  # no drop without padding, even if the window starts outside
