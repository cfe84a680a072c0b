"""PSPNet's BN (hszhao/PSPNet bn_layer.cpp at TEST): the stored mean and variance, ``eps`` under the root, then
the learned slope and bias; four 1 x C x 1 x 1 blobs in that order: slope, bias, mean, variance."""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from tests.layers.helpers import assert_close, expect_error, forward, one_layer, rand

FORK = "pspnet"


def caffe_bn(x, slope, bias, mean, var, eps: float):
    return slope * (x.astype(np.float64) - mean) / np.sqrt(var + eps) + bias


@pytest.mark.parametrize("params, eps", [
    pytest.param("", 1e-5, id="default-eps"),
    pytest.param("bn_param { eps: 0.01 frozen: true }", 0.01, id="eps"),
    pytest.param("bn_param { eps: 0 }", 0.0, id="no-eps"),
])
def test_bn(params: str, eps: float) -> None:
    x = rand(2, 3, 4, 5)
    slope, bias, mean = (rand(1, 3, 1, 1, seed=s) for s in (1, 2, 3))
    var = rand(1, 3, 1, 1, seed=4, low=0.5, high=2)
    (y,) = forward("BN", params, {"x": x}, [slope, bias, mean, var], fork=FORK)
    assert_close(y, caffe_bn(x, slope, bias, mean, var, eps))


def test_blobs_are_four_1_c_1_1() -> None:
    assert one_layer("BN", "", {"x": (2, 5, 3, 3)}, fork=FORK).layers[0].blob_shapes == [(1, 5, 1, 1)] * 4


@pytest.mark.parametrize("params, shape, error, match", [
    pytest.param("bn_param { eps: -1 }", (1, 2, 3, 3), LayerParamError, "eps -1.0 must be a number >= 0",
                 id="negative-eps"),
    pytest.param("bn_param { eps: nan }", (1, 2, 3, 3), LayerParamError, "must be a number", id="nan-eps"),
    pytest.param("", (4, 2), ShapeError, "expects an N x C x H x W bottom", id="2-d"),
])
def test_invalid(params: str, shape, error, match: str) -> None:
    expect_error(error, match, "BN", params, {"x": shape}, fork=FORK)
