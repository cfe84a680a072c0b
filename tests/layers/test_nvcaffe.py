"""NVCaffe's BatchNorm through the weight loader, against NVIDIA/caffe 0.17: ``Net::CopyTrainedLayersFrom``
(the 0.15 / DIGITS blob order put right, 3-blob statistics divided by their factor) then
``BatchNormLayer::Forward_cpu`` at TEST (``eps`` at least 1e-5, then scale and bias when the layer has them)."""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.graph import to_graph
from protoseg.params import match_weights
from tests.layers.helpers import assert_close, one_layer, rand, run

FORK = "nvcaffe"
SHAPE = (2, 3, 4, 5)
#: cuDNN's smallest batch-norm epsilon, NVCaffe's floor for ``eps``.
MIN_EPS = 1e-5


def nvcaffe_load(stored: list[np.ndarray]) -> list[np.ndarray]:
    """CopyTrainedLayersFrom for BatchNorm: 5 blobs with a 1-value last one are the legacy order (scale, bias,
    mean, var, reserved), swapped to (mean, var, reserved, scale, bias); 3 blobs are BVLC's, divided by blob 2."""
    blobs = [b.astype(np.float64) for b in stored]
    if len(blobs) == 5 and blobs[4].size == 1:
        blobs[0], blobs[2] = blobs[2], blobs[0]
        blobs[1], blobs[3] = blobs[3], blobs[1]
        blobs[2], blobs[4] = blobs[4], blobs[2]
        blobs[3], blobs[4] = blobs[4], blobs[3]
    if len(blobs) == 3:
        factor = 0.0 if blobs[2][0] == 0 else 1.0 / blobs[2][0]
        blobs = [blobs[0] * factor, blobs[1] * factor, np.ones(1)]
    return blobs


def nvcaffe_forward(x, blobs, eps: float):
    """TEST phase: ``(x - mean) * (var + eps)^-0.5`` from blobs 0 and 1 (blob 2 unread), then ``* scale + bias``."""
    shape = (1, -1, 1, 1)
    y = (x - blobs[0].reshape(shape)) / np.sqrt(blobs[1].reshape(shape) + max(eps, MIN_EPS))
    return y * blobs[3].reshape(shape) + blobs[4].reshape(shape) if len(blobs) == 5 else y


def loaded_forward(params: str, stored: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The layer's output with ``stored`` blobs read as protoseg reads a caffemodel's (match_weights)."""
    net = one_layer("BatchNorm", f"batch_norm_param {{ {params} }}", {"x": x.shape}, fork=FORK)
    report = match_weights(net, {"L": stored})
    assert report.ok, report.problems
    return run(net, {"x": x}, gm=to_graph(net, report.blobs))["y"]


MEAN, VAR = rand(3, seed=1), rand(3, seed=2, low=1e-3, high=2)
SCALE, BIAS = rand(3, seed=3), rand(3, seed=4)
ONE, ZERO = np.float32([1]), np.float32([0])


@pytest.mark.parametrize("params, stored, eps", [
    pytest.param("", [MEAN * 2, VAR * 2, np.float32([2])], 1e-5, id="3-blobs-scale-factor"),
    pytest.param("", [MEAN, VAR, ZERO], 1e-5, id="3-blobs-zero-factor"),
    pytest.param("scale_bias: true", [MEAN, VAR, ONE, SCALE, BIAS], 1e-5, id="5-blobs"),
    pytest.param('scale_filler { type: "constant" value: 1 }', [MEAN, VAR, ONE, SCALE, BIAS], 1e-5,
                 id="5-blobs-implied-by-a-filler"),
    pytest.param("scale_bias: true", [SCALE, BIAS, MEAN, VAR, ONE], 1e-5, id="digits-order"),
    pytest.param("scale_bias: true", [SCALE, BIAS, MEAN, VAR, ZERO], 1e-5, id="digits-order-reserved-0"),
    pytest.param("eps: 1e-9", [MEAN, VAR, ONE], 1e-9, id="eps-clamped"),
    pytest.param("eps: 0.01", [MEAN, VAR, ONE], 0.01, id="eps-kept"),
])
def test_batch_norm(params: str, stored: list[np.ndarray], eps: float) -> None:
    x = rand(*SHAPE)
    assert_close(loaded_forward(params, stored, x), nvcaffe_forward(x, nvcaffe_load(stored), eps))


def test_blob_count_follows_scale_bias() -> None:
    plain = one_layer("BatchNorm", "", {"x": SHAPE}, fork=FORK).layers[0]
    affine = one_layer("BatchNorm", "batch_norm_param { scale_bias: true }", {"x": SHAPE}, fork=FORK).layers[0]
    assert plain.blob_shapes == [(3,), (3,), (1,)]
    assert affine.blob_shapes == [(3,), (3,), (1,), (3,), (3,)]


def test_new_order_is_left_alone() -> None:
    stored = [MEAN, VAR, np.float32([7]), SCALE, BIAS]
    layer = one_layer("BatchNorm", "batch_norm_param { scale_bias: true }", {"x": SHAPE}, fork=FORK).layers[0]
    arranged = layer.converter.arrange(stored)
    assert all(arranged[i] is stored[i] for i in (0, 1, 3, 4)) and arranged[2] == 1  # blob 2 is never read


def test_use_global_stats_false_normalises_by_the_batch() -> None:
    """As NVCaffe 0.15 and the DIGITS-era builds compute it (0.16+ ignore the flag at test time)."""
    x = rand(*SHAPE)
    got = loaded_forward("use_global_stats: false scale_bias: true", [MEAN, VAR, ONE, SCALE, BIAS], x)
    mean = x.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * SCALE[None, :, None, None] + BIAS[None, :, None, None]
    assert_close(got, want)
