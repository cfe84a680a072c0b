"""Training converted nets with Caffe's TRAIN phase (protoseg.train), against NumPy transcriptions of the forks'
sources: BVLC ``batch_norm_layer.cpp`` and ``dropout_layer.cpp``, DeepLab v2's ``batch_norm_layer.cu``
(``update_global_stats``), NVCaffe's ``cudnn_batch_norm_layer.cu``, PSPNet's ``bn_layer.cpp``, and Caffe's
``Net::AppendParam`` for ``lr_mult``/``decay_mult``; then whole nets fine-tuned for a few SGD steps."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import protoseg
from protoseg.errors import LayerParamError, ProtosegError
from protoseg.graph import to_graph
from protoseg.io.weights import read_weights, write_weights
from protoseg.loader import open_net
from protoseg.run.demo import demo_files
from protoseg.to_caffe import write_caffe
from protoseg.train import param_groups, resolve_specs
from tests.conftest import PUBLISHED, ROOT, load_script, need
from tests.layers.helpers import assert_close, build, one_layer, rand

EPS = 1e-5  # Caffe's default BatchNorm / BN eps


def train_graph(type_: str, params: str, shape, blobs, fork: str = "bvlc"):
    """A trainable one-layer graph (layer ``L``) in train() mode."""
    gm = to_graph(one_layer(type_, params, {"x": shape}, fork=fork), {"L": [np.float32(b) for b in blobs]},
                  trainable=True)
    return gm.train()


def step(gm, x: np.ndarray, seed: int = 9):
    """One forward in the current mode and a backward of ``sum(y * g)``: (y, dL/dx, g)."""
    xt = torch.from_numpy(x).requires_grad_()
    y = gm(xt)
    g = rand(*y.shape, seed=seed)
    (y * torch.from_numpy(g)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), g


def blobs_of(gm, layer: str = "L") -> list[np.ndarray]:
    """The current values of ``layer``'s blobs, in Caffe's order (from ``gm.meta['owners']``)."""
    found = {i: gm.get_parameter(q).detach().numpy().copy() for q, (name, i) in gm.meta["owners"].items()
             if name == layer}
    return [found[i] for i in sorted(found)]


def axes_of(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def channel(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def normalise_grad(g, xhat, var, eps, axes):
    """BatchNormLayer::Backward_cpu: ``(dy - mean(dy) - mean(dy * y) * y) / sqrt(var + eps)``."""
    mean = lambda a: a.mean(axis=axes, keepdims=True)  # noqa: E731
    return (g - mean(g) - mean(g * xhat) * xhat) / np.sqrt(var + eps)


# -- BVLC BatchNorm ------------------------------------------------------------------------------------------


def bvlc_step(x, blobs, fraction, eps=EPS):
    """One TRAIN forward of BVLC's BatchNorm: output, batch variance, and the updated (mean, var, f) blobs."""
    x, axes = x.astype(np.float64), axes_of(x)
    mu = x.mean(axis=axes)
    var = ((x - channel(mu, x)) ** 2).mean(axis=axes)
    m = x.size // x.shape[1]
    mean_blob, var_blob, f = blobs
    updated = [fraction * mean_blob + mu, fraction * var_blob + m / (m - 1) * var, fraction * f + 1]
    return (x - channel(mu, x)) / np.sqrt(channel(var, x) + eps), var, updated


@pytest.mark.parametrize("shape, params, fraction", [
    pytest.param((2, 3, 4, 5), "", 0.999, id="nchw-default-fraction"),
    pytest.param((6, 4), "batch_norm_param { moving_average_fraction: 0.9 }", 0.9, id="2-d"),
    pytest.param((1, 2, 3, 3), "batch_norm_param { use_global_stats: false eps: 0.001 }", 0.999, id="explicit-false"),
])
def test_bvlc_batch_norm_updates_its_blobs_as_caffe(shape, params, fraction) -> None:
    c = shape[1]
    blobs = [rand(c, seed=1), rand(c, seed=2, low=0.5, high=3), np.float32([2.5])]
    gm = train_graph("BatchNorm", params, shape, blobs)
    eps = 0.001 if "eps" in params else EPS
    expected = [b.astype(np.float64) for b in blobs]
    for i in range(3):
        x = rand(*shape, seed=10 + i, low=-3, high=5)
        y, dx, g = step(gm, x)
        want, var, expected = bvlc_step(x, expected, fraction, eps)
        assert_close(y, want, rtol=1e-4, atol=1e-4)
        assert_close(dx, normalise_grad(g, want, channel(var, x), eps, axes_of(x)), rtol=1e-3, atol=1e-3)
        for got, exp in zip(blobs_of(gm), expected):
            assert_close(got, exp.astype(np.float32), rtol=1e-5, atol=1e-5)
    # eval() is the TEST phase: the updated blobs divided by the scale factor (unless use_global_stats: false)
    x = rand(*shape, seed=20)
    with torch.no_grad():
        y = gm.eval()(torch.from_numpy(x)).numpy()
    if "use_global_stats: false" in params:
        want = bvlc_step(x, expected, fraction, eps)[0]
    else:
        mean, var = expected[0] / expected[2][0], expected[1] / expected[2][0]
        want = (x - channel(mean, x)) / np.sqrt(channel(var, x) + eps)
    assert_close(y, want, rtol=1e-4, atol=1e-4)


def test_bvlc_batch_norm_with_use_global_stats_keeps_its_statistics() -> None:
    blobs = [rand(3, seed=1), rand(3, seed=2, low=0.5, high=3), np.float32([4.0])]
    gm = train_graph("BatchNorm", "batch_norm_param { use_global_stats: true }", (2, 3, 4, 4), blobs)
    x = rand(2, 3, 4, 4, seed=3)
    y, dx, g = step(gm, x)
    mean, var = blobs[0] / 4.0, blobs[1] / 4.0
    assert_close(y, (x - channel(mean, x)) / np.sqrt(channel(var, x) + EPS), rtol=1e-4, atol=1e-4)
    assert_close(dx, g / np.sqrt(channel(var, x) + EPS), rtol=1e-4, atol=1e-4)  # statistics are constants
    for got, before in zip(blobs_of(gm), blobs):
        np.testing.assert_array_equal(got, before)


def test_train_mode_without_trainable_is_the_inference_graph() -> None:
    net = one_layer("BatchNorm", "", {"x": (2, 3, 4, 4)})
    blobs = [rand(3, seed=1), rand(3, seed=2, low=0.5, high=3), np.float32([1.0])]
    gm = to_graph(net, {"L": blobs})
    x = torch.from_numpy(rand(2, 3, 4, 4, seed=3))
    with torch.no_grad():
        assert torch.equal(gm.train()(x), gm.eval()(x))
    assert not any(p.requires_grad for p in gm.parameters())
    with pytest.raises(ProtosegError, match="trainable=True"):
        param_groups(gm, 0.01, 0.0)


def test_batch_norm_statistics_cannot_be_learned() -> None:
    net = one_layer("BatchNorm", "param { lr_mult: 1 }", {"x": (1, 2, 3)})
    with pytest.raises(LayerParamError, match=r"^layer 'L' \(BatchNorm\): blob 0 .*lr_mult 1.*lr_mult: 0"):
        to_graph(net, trainable=True)


# -- DeepLab v2's BatchNorm ------------------------------------------------------------------------------------

FROZEN_SPECS = "param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }"


def deeplab_step(x, blobs, fraction, eps=EPS):
    """DeepLab v2's TRAIN forward with use_global_stats and update_global_stats: the stored mean, the batch's
    variance around it, and the blobs updated with the stored mean."""
    x, axes = x.astype(np.float64), axes_of(x)
    mean_blob, var_blob, f = blobs
    mu = mean_blob / f[0]
    var = ((x - channel(mu, x)) ** 2).mean(axis=axes)
    m = x.size // x.shape[1]
    updated = [fraction * mean_blob + mu, fraction * var_blob + m / (m - 1) * var, fraction * f + 1]
    return (x - channel(mu, x)) / np.sqrt(channel(var, x) + eps), var, updated


def test_deeplab_v2_batch_norm_updates_global_stats_as_its_caffe() -> None:
    params = f"batch_norm_param {{ use_global_stats: true update_global_stats: true }} {FROZEN_SPECS}"
    blobs = [rand(3, seed=1), rand(3, seed=2, low=0.5, high=3), np.float32([2.0])]
    gm = train_graph("BatchNorm", params, (2, 3, 4, 4), blobs, fork="deeplab-v2")
    expected = [b.astype(np.float64) for b in blobs]
    for i in range(2):
        x = rand(2, 3, 4, 4, seed=10 + i, low=-1, high=3)
        y, dx, g = step(gm, x)
        want, var, expected = deeplab_step(x, expected, 0.999)
        assert_close(y, want, rtol=1e-4, atol=1e-4)
        assert_close(dx, g / np.sqrt(channel(var, x) + EPS), rtol=1e-4, atol=1e-4)  # Caffe: top_diff / std
        for got, exp in zip(blobs_of(gm), expected):
            assert_close(got, exp.astype(np.float32))


@pytest.mark.parametrize("fork", ["deeplab-v2", "pspnet"])
def test_deeplab_v2_batch_norm_refuses_batch_statistics(fork: str) -> None:
    blobs = [rand(3, seed=1), rand(3, seed=2, low=0.5, high=3), np.float32([1.0])]
    gm = train_graph("BatchNorm", FROZEN_SPECS, (1, 3, 4, 4), blobs, fork=fork)
    x = torch.from_numpy(rand(1, 3, 4, 4))
    with pytest.raises(ProtosegError, match=r"^layer 'L' \(BatchNorm\): .*never computes the batch variance"):
        gm(x)
    with torch.no_grad():
        gm.eval()(x)  # the TEST phase is defined


def test_deeplab_v2_batch_norm_statistics_need_lr_mult_0() -> None:
    net = one_layer("BatchNorm", "batch_norm_param { use_global_stats: true }", {"x": (1, 2, 3, 3)},
                    fork="deeplab-v2")
    with pytest.raises(LayerParamError, match=r"^layer 'L' \(BatchNorm\): blob 0 .*decay the statistics"):
        to_graph(net, trainable=True)


# -- NVCaffe, PSPNet, caffe-segnet ---------------------------------------------------------------------------


def test_nvcaffe_batch_norm_trains_as_cudnn() -> None:
    # NVCaffe's LayerSetUp sets the scale's and bias's lr_mult to 1 whatever the file says
    params = "batch_norm_param { scale_bias: true moving_average_fraction: 0.9 } " + "param { lr_mult: 0 } " * 5
    blobs = [rand(3, seed=1), rand(3, seed=2, low=0.5, high=3), np.float32([1.0]), rand(3, seed=4, low=0.5),
             rand(3, seed=5)]
    gm = train_graph("BatchNorm", params, (2, 3, 4, 4), blobs, fork="nvcaffe")
    mean_blob, var_blob = blobs[0].astype(np.float64), blobs[1].astype(np.float64)
    for i, a in enumerate([1.0, 0.1]):  # the first TRAIN step replaces the statistics, then 1 - fraction
        x = rand(2, 3, 4, 4, seed=10 + i, low=-1, high=3).astype(np.float64)
        y, _, _ = step(gm, np.float32(x))
        mu, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        xhat = (x - channel(mu, x)) / np.sqrt(channel(var, x) + EPS)
        assert_close(y, xhat * channel(blobs[3], x) + channel(blobs[4], x), rtol=1e-4, atol=1e-4)
        mean_blob = (1 - a) * mean_blob + a * mu
        var_blob = (1 - a) * var_blob + a * var * 32 / 31
        got = blobs_of(gm)
        assert_close(got[0], np.float32(mean_blob))
        assert_close(got[1], np.float32(var_blob))
    groups = param_groups(gm, 0.1, 0.01)
    assert [(g["lr_mult"], g["decay_mult"], g["blobs"]) for g in groups] == [(1.0, 1.0, ["L/3", "L/4"])]


def test_nvcaffe_caffe_engine_has_no_train_phase_for_loaded_weights() -> None:
    blobs = [rand(3), rand(3, low=0.5, high=3), np.float32([1.0])]
    gm = train_graph("BatchNorm", "batch_norm_param { engine: CAFFE }", (1, 3, 2, 2), blobs, fork="nvcaffe")
    with pytest.raises(ProtosegError, match=r"^layer 'L' \(BatchNorm\): engine: CAFFE"):
        gm(torch.from_numpy(rand(1, 3, 2, 2)))


def test_pspnet_bn_moving_averages() -> None:
    blobs = [rand(1, 3, 1, 1, seed=s, low=0.5, high=2) for s in range(4)]
    gm = train_graph("BN", "bn_param { momentum: 0.8 eps: 0.0001 }", (2, 3, 4, 4), blobs, fork="pspnet")
    mean_blob, var_blob = blobs[2].astype(np.float64), blobs[3].astype(np.float64)
    for i in range(2):
        x = rand(2, 3, 4, 4, seed=10 + i).astype(np.float64)
        y, dx, g = step(gm, np.float32(x))
        mu, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
        xhat = (x - mu) / np.sqrt(var + 1e-4)
        assert_close(y, xhat * blobs[0] + blobs[1], rtol=1e-4, atol=1e-4)
        assert_close(dx, normalise_grad(g * blobs[0], xhat, var, 1e-4, (0, 2, 3)), rtol=1e-3, atol=1e-3)
        mean_blob, var_blob = 0.8 * mean_blob + 0.2 * mu, 0.8 * var_blob + 0.2 * var
        assert_close(blobs_of(gm)[2], np.float32(mean_blob))
        assert_close(blobs_of(gm)[3], np.float32(var_blob))
    assert [g["blobs"] for g in param_groups(gm, 0.1, 0.0)] == [["L/0", "L/1"]]


def test_pspnet_frozen_bn_is_a_fixed_affine_map() -> None:
    blobs = [rand(1, 3, 1, 1, seed=s, low=0.5, high=2) for s in range(4)]
    gm = train_graph("BN", "bn_param { frozen: true }", (2, 3, 4, 4), blobs, fork="pspnet")
    x = rand(2, 3, 4, 4, seed=3)
    y, _, _ = step(gm, x)
    assert_close(y, (x - blobs[2]) / np.sqrt(blobs[3] + EPS) * blobs[0] + blobs[1], rtol=1e-4, atol=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(blobs_of(gm), blobs))
    assert param_groups(gm, 0.1, 0.0) == [] and not any(p.requires_grad for p in gm.parameters())


def test_segnet_bn_learn_is_the_same_in_both_phases() -> None:
    blobs = [rand(1, 3, 1, 1, seed=1), rand(1, 3, 1, 1, seed=2)]
    gm = train_graph("BN", "", (2, 3, 4, 4), blobs, fork="segnet")
    x = rand(2, 3, 4, 4, seed=3).astype(np.float64)
    y, _, _ = step(gm, np.float32(x))
    mu, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    assert_close(y, (x - mu) / np.sqrt(var + 1e-9) * blobs[0] + blobs[1], rtol=1e-4, atol=1e-4)
    assert [g["blobs"] for g in param_groups(gm, 0.1, 0.0)] == [["L/0", "L/1"]]


# -- Dropout, CRFs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fork, params", [
    pytest.param("bvlc", "dropout_param { dropout_ratio: 0.3 }", id="bvlc"),
    pytest.param("segnet", "dropout_param { dropout_ratio: 0.3 }", id="segnet"),
])
def test_dropout_drops_and_scales_in_training_only(fork: str, params: str) -> None:
    net = one_layer("Dropout", params, {"x": (10, 10_000)}, fork=fork)
    gm = to_graph(net, trainable=True).train()
    x = torch.from_numpy(rand(10, 10_000, low=1, high=2)).requires_grad_()
    torch.manual_seed(0)
    y = gm(x)
    y.sum().backward()
    kept = (y != 0).numpy()
    assert abs(kept.mean() - 0.7) < 0.01  # each value kept with probability 1 - ratio (std 0.0015)
    assert_close(y.detach().numpy(), np.where(kept, x.detach().numpy() / 0.7, 0.0))
    assert_close(x.grad.numpy(), np.where(kept, 1 / 0.7, 0.0))  # the same mask and scale backwards
    with torch.no_grad():
        assert torch.equal(gm.eval()(x), x)


def test_dropout_ratio_1_cannot_train() -> None:
    gm = to_graph(one_layer("Dropout", "dropout_param { dropout_ratio: 1 }", {"x": (2, 3)}), trainable=True)
    x = torch.ones(2, 3)
    assert torch.equal(gm(x), x)
    with pytest.raises(ProtosegError, match=r"^layer 'L' \(Dropout\): dropout_ratio 1 must be in \[0, 1\)"):
        gm.train()(x)


CRF_NETS = {
    "DenseCRF": ("deeplab-v2", {"scores": (1, 3, 5, 6), "data_dim": (1, 1, 1, 2), "image": (1, 3, 5, 6)},
                 "dense_crf_param { max_iter: 2 pos_w: 3 pos_xy_std: 3 bi_w: 4 bi_xy_std: 10 bi_rgb_std: 10 }",
                 "no gradient"),
    "MultiStageMeanfield": ("crfasrnn", {"unary": (1, 3, 5, 6), "logits": (1, 3, 5, 6), "image": (1, 3, 5, 6)},
                            "multi_stage_meanfield_param { num_iterations: 2 theta_alpha: 5 theta_beta: 3 "
                            "theta_gamma: 3 }", "not differentiable in protoseg"),
}


@pytest.mark.parametrize("type_", list(CRF_NETS))
def test_crf_layers_refuse_training(type_: str) -> None:
    fork, shapes, params, reason = CRF_NETS[type_]
    gm = to_graph(one_layer(type_, params, shapes, fork=fork), trainable=True)
    inputs = [torch.from_numpy(rand(*s, seed=i, low=1, high=3)) for i, s in enumerate(shapes.values())]
    first = next(iter(shapes))
    with pytest.raises(ProtosegError, match=rf"^layer 'L' \({type_}\): .*{reason}.*outputs=\['{first}'\]"):
        gm.train()(*inputs)
    gm.eval()
    with pytest.raises(ProtosegError, match=reason):  # a gradient through it is refused in eval() too
        gm(inputs[0].clone().requires_grad_(), *inputs[1:])
    with torch.no_grad():
        assert gm(*inputs).shape == shapes[first]


# -- lr_mult and decay_mult ----------------------------------------------------------------------------------

SPECS_NET = """
input: "data" input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" param { lr_mult: 0 } param { lr_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "a" type: "Convolution" bottom: "conv2" top: "a" param { name: "w" lr_mult: 2 } param { name: "b" }
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "conv2" top: "b" param { name: "w" } param { name: "b" %s }
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "a" top: "bn" }
layer { name: "sc" type: "Scale" bottom: "bn" top: "sc" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "sc" bottom: "b" top: "sum" }
"""


def test_param_groups_follow_lr_mult_and_decay_mult() -> None:
    gm = to_graph(build(SPECS_NET % "lr_mult: 3 decay_mult: 0"), trainable=True)
    groups = param_groups(gm, base_lr=0.01, weight_decay=5e-4)
    got = {(g["lr_mult"], g["decay_mult"]): (g["lr"], g["weight_decay"], g["blobs"]) for g in groups}
    assert got == {
        (1.0, 1.0): (0.01, 5e-4, ["conv1/0", "sc/0", "sc/1"]),
        (2.0, 0.0): (0.02, 0.0, ["conv1/1"]),
        (2.0, 1.0): (0.02, 5e-4, ["a/0"]),  # the owner's lr_mult; the sharer left it unset
        (3.0, 0.0): (0.03, 0.0, ["a/1"]),  # the owner left both unset: the sharer's values count
    }
    assert sum(len(g["params"]) for g in groups) == len({id(p) for g in groups for p in g["params"]}) == 6
    assert gm.a.weight is gm.b.weight and gm.a.weight.requires_grad
    assert not gm.conv2.weight.requires_grad and not gm.bn.mean.requires_grad  # lr_mult 0 and statistics
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    before = gm.conv2.weight.detach().clone()
    gm.train()(torch.ones(1, 3, 6, 6)).sum().backward()
    optimizer.step()
    assert torch.equal(gm.conv2.weight, before)


def test_mismatched_shared_lr_mult_is_refused() -> None:
    net = build(SPECS_NET.replace('param { name: "w" }', 'param { name: "w" lr_mult: 5 }') % "")
    with pytest.raises(LayerParamError, match=r"^layer 'b' \(Convolution\): shares its blob 0 with layer 'a', "
                                              r"which has lr_mult 2, but gives lr_mult 5"):
        to_graph(net, trainable=True)


def test_deeplab_v2_resnet101_train_prototxt_specs() -> None:
    """DeepLab v2's published training net: three ResNet-101 trunks sharing every blob by name, BatchNorm and
    Scale frozen (lr_mult 0), the 104 convolutions learned, the four ASPP classifiers at lr_mult 10 / 20."""
    prototxt = need(PUBLISHED / "deeplab_v2" / "resnet101" / "train.prototxt")
    defines = dict(NET_ID="n", DATA_ROOT="/d", EXP="e", TRAIN_SET="t", NUM_LABELS="21")
    net = open_net(prototxt, defines=defines, input_shapes={"data": (1, 3, 65, 65), "label": (1, 1, 65, 65)}).net
    specs = resolve_specs(net)
    counts: dict[tuple[float, float], int] = {}
    for value in specs.values():
        counts[value] = counts.get(value, 0) + 1
    assert counts == {(0.0, 0.0): 104 * 3, (0.0, 1.0): 104 * 2, (1.0, 1.0): 104, (10.0, 1.0): 4, (20.0, 0.0): 4}
    assert sum(owner != (layer.name, i) for layer in net.layers for i, owner in enumerate(layer.owners)) == 2 * 632


def test_fast_graph_cannot_train() -> None:
    prototxt, weights, _, _ = demo_files()
    with pytest.raises(ProtosegError, match="faithful graph"):
        protoseg.load(prototxt, weights, fast=True, trainable=True)


# -- whole nets ----------------------------------------------------------------------------------------------

DEEPLAB_NET = """
name: "tiny-deeplab"
input: "data" input_shape { dim: 2 dim: 3 dim: 16 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" %(bn)s }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc8" type: "Convolution" bottom: "conv1" top: "fc8"
  param { lr_mult: 10 decay_mult: 1 } param { lr_mult: 20 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 } }
%(up)s
"""

NETS = {
    # DeepLab v2's Caffe, its ResNet BatchNorm with update_global_stats, bilinear Interp to the input size
    "deeplab-v2": dict(
        bn=f"batch_norm_param {{ use_global_stats: true update_global_stats: true }} {FROZEN_SPECS}",
        up='layer { name: "up" type: "Interp" bottom: "fc8" top: "up" interp_param { height: 16 width: 16 } }'),
    # BVLC: batch statistics, FCN's fixed bilinear Deconvolution (lr_mult 0)
    "bvlc": dict(bn="", up='layer { name: "up" type: "Deconvolution" bottom: "fc8" top: "up" param { lr_mult: 0 } '
                           "convolution_param { num_output: 4 group: 4 kernel_size: 4 stride: 2 pad: 1 "
                           "bias_term: false } }"),
}


def init_blobs(net) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    out = {layer.name: [np.float32(rng.normal(0, 0.3, s)) for s in layer.blob_shapes] for layer in net.layers}
    out["bn1"] = [rand(8, seed=1), rand(8, seed=2, low=0.5, high=2), np.float32([3.0])]
    out["scale1"] = [rand(8, seed=3, low=0.5, high=1.5), rand(8, seed=4, low=-0.1, high=0.1)]
    return out


@pytest.mark.parametrize("fork", list(NETS))
def test_small_net_trains_with_caffe_batch_norm(fork: str, tmp_path) -> None:
    """A net converted from Caffe files trains as its Caffe would, and is written back to Caffe files that
    read back with the trained blobs (DeepLab v2's fields kept)."""
    text = DEEPLAB_NET % NETS[fork]
    net = build(text, fork=fork)
    blobs = init_blobs(net)
    (tmp_path / "net.prototxt").write_text(text)
    write_weights(tmp_path / "net.caffemodel", blobs)
    gm = protoseg.load(tmp_path / "net.prototxt", tmp_path / "net.caffemodel", fork=fork, trainable=True).train()
    seen: list[np.ndarray] = []
    gm.bn1.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach().numpy().copy()))
    optimizer = torch.optim.SGD(param_groups(gm, 0.01, 5e-4), lr=0.01, momentum=0.9)
    x = torch.from_numpy(rand(2, 3, 16, 16, seed=5))
    labels = torch.from_numpy(np.random.default_rng(6).integers(0, 4, (2, 16, 16)))
    labels[:, :2] = 255
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = F.cross_entropy(gm(x), labels, ignore_index=255)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses

    expected = [b.astype(np.float64) for b in blobs["bn1"]]
    for bn_input in seen:
        expected = (deeplab_step if fork == "deeplab-v2" else bvlc_step)(bn_input, expected, 0.999)[2]
    for got, exp in zip(blobs_of(gm, "bn1"), expected):
        assert_close(got, np.float32(exp))
    if fork == "bvlc":
        np.testing.assert_array_equal(blobs_of(gm, "up")[0], blobs["up"][0])  # lr_mult 0: frozen
    assert not np.allclose(blobs_of(gm, "fc8")[0], blobs["fc8"][0])

    # eval() is the inference graph of the trained blobs
    trained = {layer.name: blobs_of(gm, layer.name) for layer in net.layers}
    with torch.no_grad():
        assert torch.equal(gm.eval()(x), to_graph(net, trained)(x))

    written = write_caffe(gm, None, tmp_path / "tuned.prototxt", tmp_path / "tuned.caffemodel")
    stored = read_weights(written[1])
    for name, arrays in trained.items():
        assert len(stored.get(name, [])) == len(arrays), name
        for got, want in zip(stored[name], arrays):
            np.testing.assert_array_equal(got, want)
    again = protoseg.load(*written)
    assert again.meta["caffe_source"]["fork"] == fork
    with torch.no_grad():
        assert torch.equal(again(x), gm(x))


def load_example():
    return load_script(ROOT / "examples" / "finetune.py", "finetune_example")


def test_finetune_example_improves_the_demo_fcn(tmp_path, capsys) -> None:
    prototxt, weights, images, labels_dir = demo_files()
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    example = load_example()
    losses = example.main(["--steps", "3", "--out", str(tmp_path / "tuned")])
    assert losses[2] < losses[1] < losses[0], losses
    assert "step 3: loss" in capsys.readouterr().out
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest  # trained copies, not the mapped file

    opened = open_net(prototxt, weights)
    x, labels = example.demo_batch(opened.netparam, prototxt, images, labels_dir)
    original = opened.graph()
    tuned = protoseg.load(tmp_path / "tuned.prototxt", tmp_path / "tuned.caffemodel")  # the Caffe files written
    with torch.no_grad():  # a trainable graph owns its parameters: training it leaves other graphs alone
        opened.graph(trainable=True).conv1_1.weight.add_(1.0)
        before = F.cross_entropy(original(x), labels, ignore_index=255).item()
        after = F.cross_entropy(tuned(x), labels, ignore_index=255).item()
    assert before == pytest.approx(losses[0], rel=1e-5) and after < losses[-1]
