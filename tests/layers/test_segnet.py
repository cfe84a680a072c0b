"""caffe-segnet's BN, Upsample and test-time Dropout against transcriptions of alexgkendall/caffe-segnet's
bn_layer.cpp, upsample_layer.cpp and dropout_layer.cpp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoseg.errors import LayerParamError, ShapeError
from protoseg.graph import to_graph
from tests.layers.helpers import (
    assert_close,
    build,
    expect_error,
    forward,
    inputs_text,
    layer_text,
    max_pool_mask,
    one_layer,
    rand,
    run,
    scatter,
)

FORK = "segnet"
SHAPE = (2, 3, 4, 5)
#: BN's fixed variance epsilon in caffe-segnet (``var_eps_``).
VAR_EPS = 1e-9
#: How many standard deviations a sampled statistic may stray from its expectation.
SIGMAS = 6


def caffe_segnet_bn(x, scale, shift, learn: bool):
    """INFERENCE: ``x * scale + shift``. LEARN: E[x] and E[x^2] over H x W then over N, ``var = E[x^2] - E[x]^2``,
    ``(x - mean) / sqrt(var + 1e-9) * scale + shift``; the statistics (1 x C x 1 x 1) are tops 2 and 3."""
    x = x.astype(np.float64)
    if not learn:
        return x * scale + shift, np.zeros_like(scale), np.zeros_like(scale)
    mean = x.mean(axis=(2, 3), keepdims=True).mean(axis=0, keepdims=True)
    var = (x * x).mean(axis=(2, 3), keepdims=True).mean(axis=0, keepdims=True) - mean * mean
    return (x - mean) / np.sqrt(var + VAR_EPS) * scale + shift, mean, var


@pytest.mark.parametrize("params, learn, tops", [
    pytest.param("bn_param { bn_mode: INFERENCE }", False, ("y",), id="inference"),
    pytest.param("bn_param { bn_mode: INFERENCE }", False, ("y", "mean", "var"), id="inference-zero-stat-tops"),
    pytest.param("", True, ("y",), id="learn-by-default"),
    pytest.param("bn_param { bn_mode: LEARN }", True, ("y", "mean", "var"), id="learn-stat-tops"),
])
def test_bn(params: str, learn: bool, tops) -> None:
    x = rand(*SHAPE)
    scale, shift = rand(1, 3, 1, 1, seed=1), rand(1, 3, 1, 1, seed=2)
    ys = forward("BN", params, {"x": x}, [scale, shift], tops=tops, fork=FORK)
    for y, want in zip(ys, caffe_segnet_bn(x, scale, shift, learn)[:len(tops)], strict=True):
        assert_close(y, want)


def upsample_net(shape, pool: str, upsample: str):
    """SegNet's pattern: a MAX Pooling with its mask top, and the Upsample that scatters by that mask."""
    text = (inputs_text({"x": shape}) +
            layer_text("Pooling", f"pooling_param {{ pool: MAX {pool} }}", ("x",), ("pool", "mask"), name="pool") +
            layer_text("Upsample", f"upsample_param {{ {upsample} }}", ("pool", "mask"), ("y",)))
    return build(text, FORK)


@pytest.mark.parametrize("shape, kernel, stride, upsample, out_hw", [
    pytest.param((2, 3, 8, 6), (2, 2), (2, 2), "scale: 2", (8, 6), id="scale"),
    pytest.param((1, 2, 6, 9), (2, 3), (2, 3), "scale_h: 2 scale_w: 3", (6, 9), id="scale-h-w"),
    pytest.param((1, 2, 9, 6), (3, 3), (3, 3), "scale: 3", (9, 6), id="scale-3"),
    pytest.param((1, 2, 7, 5), (2, 2), (2, 2), "upsample_h: 7 upsample_w: 5", (7, 5), id="explicit-size"),
    pytest.param((1, 2, 7, 5), (2, 2), (2, 2), "scale: 2 pad_out_h: true pad_out_w: true", (7, 5), id="pad-out"),
    pytest.param((1, 2, 7, 7), (2, 2), (2, 2), "scale: 2", (8, 8), id="odd-size-quirk"),
])
def test_upsample_scatters_by_the_pooling_mask(shape, kernel, stride, upsample: str, out_hw) -> None:
    x = rand(*shape)
    pool = f"kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} stride_w: {stride[1]}"
    net = upsample_net(shape, pool, upsample)
    assert net.layers[-1].shapes == [(*shape[:2], *out_hw)]
    y = run(net, {"x": x})["y"]
    np.testing.assert_array_equal(y, scatter(*max_pool_mask(x, kernel, stride), *out_hw))


def test_odd_size_quirk_keeps_flat_positions() -> None:
    """Pooling 7 -> 4 then ``scale: 2`` gives 8 x 8, but each value keeps its flat index in the 7 x 7 plane: the
    first 49 flat positions are the true unpooling's (``pad_out``), so every row after the first is shifted."""
    x = rand(1, 2, 7, 7)
    quirk = run(upsample_net(x.shape, "kernel_size: 2 stride: 2", "scale: 2"), {"x": x})["y"]
    true = run(upsample_net(x.shape, "kernel_size: 2 stride: 2", "scale: 2 pad_out_h: true pad_out_w: true"),
               {"x": x})["y"]
    assert quirk.shape == (1, 2, 8, 8) and true.shape == (1, 2, 7, 7)
    np.testing.assert_array_equal(quirk.reshape(1, 2, 64), np.pad(true.reshape(1, 2, 49), ((0, 0), (0, 0), (0, 15))))


def sampled(ratio: float, x: np.ndarray):
    """Bayesian SegNet's Dropout (``sample_weights_test``) as a graph, to run many times."""
    net = one_layer("Dropout", f"dropout_param {{ dropout_ratio: {ratio} sample_weights_test: true }}",
                    {"x": x.shape}, fork=FORK)
    return net, to_graph(net)


def test_sampled_dropout_statistics() -> None:
    """Each value kept with probability 1 - ratio and scaled by 1 / (1 - ratio): the mean over many samples (the
    batch axis, one draw each) is the input."""
    ratio, samples = 0.3, 10000
    x = np.broadcast_to(rand(1, 2, 8, 8), (samples, 2, 8, 8))
    net, gm = sampled(ratio, x)
    torch.manual_seed(0)
    y = run(net, {"x": x}, gm=gm)["y"]
    kept = y != 0
    assert abs(kept.mean() - (1 - ratio)) <= SIGMAS * np.sqrt(ratio * (1 - ratio) / kept.size)
    assert_close(y[kept], x[kept] / (1 - ratio))
    spread = np.abs(x[0]) * np.sqrt(ratio / (1 - ratio) / samples)
    assert np.all(np.abs(y.mean(axis=0) - x[0]) <= SIGMAS * spread)


def test_sampled_dropout_is_repeatable_under_a_seed() -> None:
    x = rand(2, 3, 6, 6)
    net, gm = sampled(0.5, x)
    draws = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        draws.append(run(net, {"x": x}, gm=gm)["y"])
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_dropout_without_sampling_is_the_identity() -> None:
    x = rand(*SHAPE)
    (y,) = forward("Dropout", "dropout_param { dropout_ratio: 0.5 }", {"x": x}, fork=FORK)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("type_, params, shapes, error, match", [
    pytest.param("Dropout", "dropout_param { dropout_ratio: 1 sample_weights_test: true }", {"x": SHAPE},
                 LayerParamError, "between 0 and 1", id="dropout-ratio"),
    pytest.param("Upsample", "upsample_param { upsample_h: 8 }", {"x": SHAPE, "m": SHAPE}, LayerParamError,
                 "give both upsample_h and upsample_w", id="upsample-h-alone"),
    pytest.param("Upsample", "upsample_param { scale_h: 2 }", {"x": SHAPE, "m": SHAPE}, LayerParamError,
                 "give both scale_h and scale_w", id="scale-h-alone"),
    pytest.param("Upsample", "upsample_param { scale: 2 scale_h: 2 scale_w: 2 }", {"x": SHAPE, "m": SHAPE},
                 LayerParamError, "not both", id="scale-and-scale-h-w"),
    pytest.param("Upsample", "upsample_param { scale: 1 }", {"x": SHAPE, "m": SHAPE}, LayerParamError,
                 "scale must be > 1", id="scale-1"),
    pytest.param("Upsample", "upsample_param { scale: 3 pad_out_h: true }", {"x": SHAPE, "m": SHAPE},
                 LayerParamError, "need scale 2", id="pad-out-scale-3"),
    pytest.param("Upsample", "upsample_param { upsample_h: 3 upsample_w: 4 }", {"x": SHAPE, "m": SHAPE},
                 ShapeError, "hold fewer positions", id="size-too-small"),
    pytest.param("Upsample", "", {"x": SHAPE, "m": (2, 3, 4, 4)}, ShapeError, "must have the shape of the input",
                 id="mask-shape"),
    pytest.param("BN", "", {"x": (2, 3)}, ShapeError, "expects an N x C x H x W bottom", id="bn-2-d"),
])
def test_invalid(type_: str, params: str, shapes: dict, error, match: str) -> None:
    expect_error(error, match, type_, params, shapes, fork=FORK)
