"""Element-wise layers against their Caffe formulas (relu_layer.cpp, prelu_layer.cpp, sigmoid/tanh/absval,
power_layer.cpp; dropout_layer.cpp at TEST is a copy)."""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import assert_close, expect_error, forward, one_layer, rand

SHAPE = (2, 3, 4, 5)


@pytest.mark.parametrize("type_, params, formula, low", [
    pytest.param("ReLU", "", lambda x: np.maximum(x, 0), -2, id="relu"),
    pytest.param("ReLU", "relu_param { negative_slope: 0.1 }", lambda x: np.maximum(x, 0) + 0.1 * np.minimum(x, 0),
                 -2, id="leaky-relu"),
    pytest.param("Sigmoid", "", lambda x: 1 / (1 + np.exp(-x)), -2, id="sigmoid"),
    pytest.param("TanH", "", np.tanh, -2, id="tanh"),
    pytest.param("AbsVal", "", np.abs, -2, id="absval"),
    pytest.param("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", lambda x: (1 + 0.5 * x) ** 2, -2,
                 id="power-square"),
    pytest.param("Power", "", lambda x: x, -2, id="power-defaults"),
    pytest.param("Power", "power_param { power: 0.5 scale: 2 }", lambda x: np.sqrt(2 * x), 0.1, id="power-sqrt"),
    pytest.param("Power", "power_param { power: 3 shift: -0.5 }", lambda x: (x - 0.5) ** 3, -2, id="power-cube"),
    pytest.param("Power", "power_param { power: -1 scale: -1 shift: 5 }", lambda x: 1 / (5 - x), -2,
                 id="power-inverse"),
    pytest.param("Power", "power_param { power: 2 scale: 0 shift: 3 }", lambda x: np.full_like(x, 9.0), -2,
                 id="power-constant"),
    pytest.param("Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda x: x, -2, id="dropout-identity"),
])
def test_elementwise(type_: str, params: str, formula, low: float) -> None:
    x = rand(*SHAPE, low=low)
    (y,) = forward(type_, params, {"x": x})
    assert_close(y, formula(x.astype(np.float64)))


def caffe_prelu(x, slope):
    """PReLULayer::Forward_cpu: ``max(x, 0) + a[c] * min(x, 0)``, c = (i / dim) % channels, or one shared a."""
    x = x.astype(np.float64)
    a = np.broadcast_to(slope, (x.shape[1],)).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.maximum(x, 0) + a * np.minimum(x, 0)


@pytest.mark.parametrize("params, shape, slope", [
    pytest.param("", SHAPE, rand(3, seed=1), id="per-channel"),
    pytest.param("", (4, 3), rand(3, seed=1), id="per-channel-2-d"),
    pytest.param("prelu_param { channel_shared: true }", SHAPE, np.float32(0.25), id="shared-0-d"),
])
def test_prelu(params: str, shape, slope) -> None:
    x = rand(*shape)
    (y,) = forward("PReLU", params, {"x": x}, [np.asarray(slope)])
    assert_close(y, caffe_prelu(x, slope))


def test_prelu_shared_slope_is_a_0_d_blob_and_takes_an_old_1_vector() -> None:
    layer = one_layer("PReLU", "prelu_param { channel_shared: true }", {"x": SHAPE}).layers[0]
    assert layer.blob_shapes == [()]
    assert layer.converter.accepts(0, (), (1,)) and layer.converter.accepts(0, (), (1, 1, 1, 1))
    assert not layer.converter.accepts(0, (), (3,))


@pytest.mark.parametrize("type_, params, shapes, error, match", [
    pytest.param("PReLU", "", {"x": (5,)}, ShapeError, "needs a bottom with a channel axis", id="prelu-1-d"),
    pytest.param("ReLU", "", {"x": SHAPE, "z": SHAPE}, LayerParamError, "takes 1 bottom", id="relu-two-bottoms"),
])
def test_invalid(type_: str, params: str, shapes: dict, error, match: str) -> None:
    expect_error(error, match, type_, params, shapes)
