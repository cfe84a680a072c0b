"""CRF-as-RNN's MultiStageMeanfield: the iteration arithmetic transcribed from torrvision/caffe's
multi_stage_meanfield.cpp and meanfield_iteration.cpp in NumPy. The Gaussian filtering itself is
:class:`protoseg.crf.Lattice`, which tests/test_crf.py checks against DeepLab's C++ lattice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoseg.crf import Lattice
from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import assert_close, expect_error, forward, rand

FORK = "crfasrnn"


def gaussian(features: np.ndarray):
    """Filter (pixels x classes) values with the lattice of ``features``, times the per-pixel normaliser
    ``1 / (filter(ones) + 1e-20)`` the layer computes once per lattice."""
    lattice = Lattice(torch.from_numpy(features.astype(np.float32)))

    def apply(values: np.ndarray) -> np.ndarray:
        return lattice.filter(torch.from_numpy(values.astype(np.float32))).double().numpy()

    norm = 1.0 / (apply(np.ones((len(features), 1))) + 1e-20)
    return lambda values: apply(values) * norm


def caffe_meanfield(unary, logits, image, ws, wb, compat, iterations: int, alpha: float, beta: float, gamma: float):
    """Per image: spatial features ``(p % W, p / W) / theta_gamma``, bilateral ``(p % W, p / W) / theta_alpha`` and
    the image's 3 channels ``/ theta_beta`` (float32 as the layer writes them). Each iteration: Q = softmax over the
    channels of the previous output (the logits at first), S and B the normalised filterings of Q, and
    ``U - M (Ws S + Wb B)`` (C x C matrices on the C x pixels blobs)."""
    n, c, h, w = unary.shape
    p = np.arange(h * w)
    xs, ys = (p % w).astype(np.float32), (p // w).astype(np.float32)
    spatial = gaussian(np.stack([xs / np.float32(gamma), ys / np.float32(gamma)], 1))
    ws, wb, compat = (b.reshape(c, c).astype(np.float64) for b in (ws, wb, compat))
    out = np.empty(unary.shape)
    for b in range(n):
        colour = [image[b, k].ravel() / np.float32(beta) for k in range(3)]
        bilateral = gaussian(np.stack([xs / np.float32(alpha), ys / np.float32(alpha), *colour], 1))
        u, q = unary[b].reshape(c, -1).astype(np.float64), logits[b].reshape(c, -1).astype(np.float64)
        for _ in range(iterations):
            e = np.exp(q - q.max(axis=0))
            prob = e / e.sum(axis=0)
            message = ws @ spatial(prob.T).T + wb @ bilateral(prob.T).T
            q = u - compat @ message
        out[b] = q.reshape(c, h, w)
    return out


@pytest.mark.parametrize("iterations, thetas, shape", [
    pytest.param(2, (5.0, 20.0, 3.0), (1, 3, 5, 6), id="two-iterations"),
    pytest.param(5, (4.0, 30.0, 2.0), (2, 4, 4, 7), id="five-iterations-batch-of-two"),
    pytest.param(3, (10.0, 10.0, 10.0), (1, 2, 6, 6), id="default-thetas"),
])
def test_meanfield(iterations: int, thetas, shape) -> None:
    n, c, h, w = shape
    unary, logits = rand(*shape, seed=1), rand(*shape, seed=2)
    image = rand(n, 3, h, w, seed=3, low=-120, high=130)
    blobs = [rand(1, 1, c, c, seed=4), rand(1, 1, c, c, seed=5), rand(1, 1, c, c, seed=6) - np.eye(c, dtype=np.float32)]
    explicit = "" if thetas == (10.0, 10.0, 10.0) else "theta_alpha: {} theta_beta: {} theta_gamma: {}".format(*thetas)
    params = f"multi_stage_meanfield_param {{ num_iterations: {iterations} {explicit} }}"
    (y,) = forward("MultiStageMeanfield", params, {"unary": unary, "logits": logits, "image": image}, blobs,
                   fork=FORK)
    assert_close(y, caffe_meanfield(unary, logits, image, *blobs, iterations, *thetas))


@pytest.mark.parametrize("params, shapes, error, match", [
    pytest.param("num_iterations: 1", None, LayerParamError, "must be greater than 1", id="one-iteration"),
    pytest.param("num_iterations: 2147483647", None, LayerParamError, "more than 1,000", id="billions-of-iterations"),
    pytest.param("num_iterations: 2 theta_alpha: 0", None, LayerParamError, "must be > 0", id="zero-theta"),
    pytest.param("num_iterations: 2", {"image": (1, 1, 4, 4)}, ShapeError, "must be N x 3 x H x W",
                 id="grey-image"),
    pytest.param("num_iterations: 2", {"logits": (1, 3, 4, 5)}, ShapeError, "must be one N x C x H x W shape",
                 id="logits-shape"),
])
def test_invalid(params: str, shapes, error, match: str) -> None:
    bottoms = {"unary": (1, 3, 4, 4), "logits": (1, 3, 4, 4), "image": (1, 3, 4, 4), **(shapes or {})}
    expect_error(error, match, "MultiStageMeanfield", f"multi_stage_meanfield_param {{ {params} }}", bottoms,
                 fork=FORK)
