"""Sliding-window inference against NumPy oracles written from the releases' own evaluation code: PSPNet's
window grid and probability averaging (evaluation/scale_process.m), Dilation's reflected tiles
(predict.py, with OpenCV's BORDER_REFLECT_101) and its ``util.interp_map`` zoom."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protoseg.errors import ProtosegError
from protoseg.run.tiling import tiled_scores
from protoseg.zoo import Tiling

cv2 = pytest.importorskip("cv2")


def _net(kernel: np.ndarray, pool: int = 1, crop: int = 0):
    """A small nonlinear 'net': a fixed 3x3 conv to ``len(kernel)`` channels, tanh, a ``crop`` border dropped
    and ``pool`` x ``pool`` average pooling; returns the torch forward and a NumPy twin for the oracles."""
    weight = torch.from_numpy(kernel)

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(torch.nn.functional.conv2d(x, weight, padding=1))
        if crop:
            y = y[:, :, crop:-crop, crop:-crop]
        return torch.nn.functional.avg_pool2d(y, pool) if pool > 1 else y

    def numpy(x: np.ndarray) -> np.ndarray:
        return forward(torch.from_numpy(x)[None])[0].numpy()

    return forward, numpy


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def _pspnet_oracle(numpy, image: np.ndarray, crop: int, stride: int) -> np.ndarray:
    """scale_process.m: pad to the crop where smaller, windows every stride clamped to the far edge, each
    softmax(logits + flipped logits of the mirrored window), averaged by count, cropped to the image."""
    c, h, w = image.shape
    padded = np.zeros((c, max(h, crop), max(w, crop)), np.float32)
    padded[:, :h, :w] = image
    ph, pw = padded.shape[1:]
    total, count = None, np.zeros((ph, pw))
    for gy in range(int(math.ceil((ph - crop) / stride)) + 1):
        for gx in range(int(math.ceil((pw - crop) / stride)) + 1):
            ey, ex = min(gy * stride + crop, ph), min(gx * stride + crop, pw)
            sy, sx = ey - crop, ex - crop
            win = padded[:, sy:ey, sx:ex]
            logits = numpy(win) + numpy(np.ascontiguousarray(win[:, :, ::-1]))[:, :, ::-1]
            prob = _softmax(logits)
            if total is None:
                total = np.zeros((prob.shape[0], ph, pw))
            total[:, sy:ey, sx:ex] += prob
            count[sy:ey, sx:ex] += 1
    return (total / count)[:, :h, :w]


def _interp_map(prob: np.ndarray, zoom: int, width: int, height: int) -> np.ndarray:
    """fyu/dilation util.interp_map's arithmetic, with its last row/column repeated past the map."""
    out = np.zeros((prob.shape[0], height, width), np.float64)
    for y in range(height):
        for x in range(width):
            r0, c0 = y // zoom, x // zoom
            r1, c1 = min(r0 + 1, prob.shape[1] - 1), min(c0 + 1, prob.shape[2] - 1)
            rt, ct = y / zoom - r0, x / zoom - c0
            v0 = rt * prob[:, r1, c0] + (1 - rt) * prob[:, r0, c0]
            v1 = rt * prob[:, r1, c1] + (1 - rt) * prob[:, r0, c1]
            out[:, y, x] = (1 - ct) * v0 + ct * v1
    return out


def _dilation_oracle(numpy, image: np.ndarray, window: int, margin: int, zoom: int) -> np.ndarray:
    """predict.py: reflect-101 by the margin, tiles of window - 2 margin, each reflected again to the window."""
    h, w = image.shape[1:]
    out_size = window - 2 * margin
    hwc = image.transpose(1, 2, 0)
    padded = cv2.copyMakeBorder(hwc, margin, margin, margin, margin, cv2.BORDER_REFLECT_101)
    rows = []
    for ty in range(-(-h // out_size)):
        cols = []
        for tx in range(-(-w // out_size)):
            tile = padded[ty * out_size:ty * out_size + window, tx * out_size:tx * out_size + window]
            tile = cv2.copyMakeBorder(tile, 0, window - tile.shape[0], 0, window - tile.shape[1],
                                      cv2.BORDER_REFLECT_101)
            cols.append(numpy(np.ascontiguousarray(tile.transpose(2, 0, 1))))
        rows.append(np.concatenate(cols, axis=2))
    prob = np.concatenate(rows, axis=1)
    return _interp_map(prob, zoom, w, h) if zoom > 1 else prob[:, :h, :w]


@pytest.fixture
def kernel() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5


@pytest.mark.parametrize("size", [(20, 20), (13, 17), (45, 31), (29, 60)])
def test_overlapping_windows_match_pspnet(kernel: np.ndarray, size: tuple[int, int]) -> None:
    forward, numpy = _net(kernel)
    image = np.random.default_rng(1).standard_normal((3, *size)).astype(np.float32) * 2
    got = tiled_scores(forward, torch.from_numpy(image)[None], (20, 20), Tiling(stride=14, flip=True, softmax=True))
    want = _pspnet_oracle(numpy, image, crop=20, stride=14)
    assert got.shape == (1, 4, *size)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(24, 24), (10, 7), (37, 50), (48, 48)])
@pytest.mark.parametrize("zoom", [1, 4])
def test_reflected_tiles_match_dilation(kernel: np.ndarray, size: tuple[int, int], zoom: int) -> None:
    margin, window = 6, 36  # each window labels 24 x 24 pixels
    forward, numpy = _net(kernel, pool=zoom, crop=margin)
    image = np.random.default_rng(2).standard_normal((3, *size)).astype(np.float32) * 2
    got = tiled_scores(forward, torch.from_numpy(image)[None], (window, window), Tiling(stride=24, margin=margin))
    want = _dilation_oracle(numpy, image, window, margin, zoom)
    assert got.shape == (1, 4, *size)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-5, atol=1e-6)


def test_reflected_tiles_put_every_pixel_back_where_it_was() -> None:
    """A net that returns its window's labelled centre reassembles the image exactly: offsets are right."""
    image = torch.arange(3 * 41 * 29, dtype=torch.float32).reshape(1, 3, 41, 29)
    got = tiled_scores(lambda w: w[:, :, 5:-5, 5:-5], image, (20, 20), Tiling(stride=10, margin=5))
    assert torch.equal(got, image)


def test_bad_tilings_are_clear_errors(kernel: np.ndarray) -> None:
    forward, _ = _net(kernel)
    x = torch.zeros(1, 3, 30, 30)
    with pytest.raises(ProtosegError, match="stride must be"):
        tiled_scores(forward, x, (20, 20), Tiling(stride=7, margin=5))
    with pytest.raises(ProtosegError, match="outputs at window size"):
        tiled_scores(lambda w: w[:, :, ::2, ::2], x, (20, 20), Tiling(stride=10))
    with pytest.raises(ProtosegError, match="one image at a time"):
        tiled_scores(forward, torch.zeros(2, 3, 30, 30), (20, 20), Tiling(stride=10))
