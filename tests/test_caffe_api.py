"""The pycaffe-shaped façade: the idioms of FCN's infer.py and DeepLab's test scripts, against Caffe and
against ``protoseg.load``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import protoseg.loader
from protoseg.io.weights import read_weights
from protoseg import caffe
from protoseg.errors import ProtosegError
from protoseg.run.demo import DEMO_DIR
from tests.conftest import FIXTURES, need

DEMO = (DEMO_DIR / "demo.prototxt", DEMO_DIR / "demo.caffemodel")


def _layer_case(name: str) -> tuple[Path, Path, dict, dict[str, np.ndarray]]:
    case_dir = need(FIXTURES / "layers" / name)
    case = json.loads((case_dir / "case.json").read_text())
    ref = np.load(case_dir / case["reference"])
    return case_dir / case["prototxt"], case_dir / case["weights"], case, {k: ref[k] for k in ref.files}


@pytest.mark.parametrize("name", ["deconv", "shared_params_msc", "crop"])
def test_pycaffe_idiom_matches_caffe(name: str) -> None:
    prototxt, weights, case, ref = _layer_case(name)
    net = caffe.Net(str(prototxt), str(weights), caffe.TEST)
    for i in net.inputs:
        net.blobs[i].reshape(*ref[i].shape)
        net.blobs[i].data[...] = ref[i]
    out = net.forward()
    assert set(out) == set(net.outputs)
    for blob in case["compared"]:
        got, want = net.blobs[blob].data, ref[blob]
        assert got.shape == want.shape, blob
        assert np.abs(got - want).max() <= case["rtol"] * np.abs(want).max(), blob


def test_demo_net_matches_protoseg_load() -> None:
    rs = np.random.RandomState(0)
    x = rs.uniform(-2, 2, (2, 3, 36, 44)).astype(np.float32)
    gm = protoseg.loader.load(*DEMO)
    with torch.no_grad():
        expected = gm(torch.from_numpy(x)).numpy()
    net = caffe.Net(str(DEMO[0]), caffe.TEST, weights=str(DEMO[1]))
    net.blobs["data"].reshape(*x.shape)
    net.blobs["data"].data[...] = x
    net.forward()
    assert np.array_equal(net.blobs["score"].data, expected)
    # the keyword form, on another size: outputs come back, every top is there
    out = net.forward(data=x[:1, :, :20, :24])
    assert list(out) == ["score"] and out["score"].shape == (1, 4, 20, 24)
    assert {"conv1_1", "pool1", "pool2", "score_fr", "upscore", "score", "label"} <= set(net.blobs)
    assert net.blobs["pool1"].data.shape == (1, 16, 10, 12)
    assert net.blobs["upscore"].shape == (1, 4, 24, 28)


def test_in_place_blob_shows_its_last_value() -> None:
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]))  # phase defaults to TEST
    net.forward(data=np.random.RandomState(1).standard_normal((1, 3, 16, 16)).astype(np.float32))
    assert net.blobs["conv1_1"].data.min() >= 0  # after relu1_1, as pycaffe shows it


def test_params_are_the_weights() -> None:
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]), caffe.TEST)
    stored = read_weights(DEMO[1])
    assert list(net.params) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3", "conv4", "score_fr", "upscore"]
    assert np.array_equal(net.params["conv1_1"][0].data, stored["conv1_1"][0])
    assert len(net.params["upscore"]) == 1  # bias_term: false
    x = np.ones((1, 3, 12, 12), np.float32)
    net.params["score_fr"][1].data[...] += 100.0  # pycaffe-style surgery reaches the graph
    shifted = net.forward(data=x)["score"].copy()
    net.params["score_fr"][1].data[...] -= 100.0
    plain = net.forward(data=x)["score"]
    assert not np.allclose(shifted, plain)


def test_without_weights_parameters_are_zero_then_copy_from() -> None:
    net = caffe.Net(str(DEMO[0]), caffe.TEST)
    assert all(np.all(b.data == 0) for blobs in net.params.values() for b in blobs)
    assert np.all(net.forward(data=np.ones((1, 3, 8, 8), np.float32))["score"] == 0)
    net.copy_from(str(DEMO[1]))
    assert np.abs(net.forward(data=np.ones((1, 3, 8, 8), np.float32))["score"]).max() > 0


def test_save_round_trip(tmp_path: Path) -> None:
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]), caffe.TEST)
    net.save(str(tmp_path / "copy.caffemodel"))
    again = caffe.Net(str(DEMO[0]), str(tmp_path / "copy.caffemodel"), caffe.TEST)
    for name, blobs in net.params.items():
        for a, b in zip(blobs, again.params[name]):
            assert np.array_equal(a.data, b.data)


def test_reshape_propagates_shapes() -> None:
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]), caffe.TEST)
    net.blobs["data"].reshape(2, 3, 32, 40)
    net.reshape()
    assert net.blobs["pool2"].shape == (2, 32, 8, 10)
    assert net.blobs["score"].shape == (2, 4, 32, 40)
    b = net.blobs["score"]
    assert (b.num, b.channels, b.height, b.width, b.count) == (2, 4, 32, 40, 2 * 4 * 32 * 40)


def test_forward_end_and_extra_blobs() -> None:
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]), caffe.TEST)
    out = net.forward(end="pool1", blobs=["score_fr"], data=np.zeros((1, 3, 8, 8), np.float32))
    assert set(out) == {"pool1", "score_fr"}


@pytest.mark.parametrize("call, match", [
    (lambda n: n.forward(label=np.zeros(1)), "not an input"),
    (lambda n: n.forward(start="conv1_1"), "start="),
    (lambda n: n.forward(end="nope"), "no such layer"),
    (lambda n: n.backward(), "inference only"),
])
def test_forward_errors(call, match: str) -> None:
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]), caffe.TEST)
    with pytest.raises(ProtosegError, match=match):
        call(net)


def test_constructor_forms_and_phase() -> None:
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)
    with pytest.raises(ProtosegError, match="phase must be"):
        caffe.Net(str(DEMO[0]), 7)
    with pytest.raises(TypeError, match="weights given twice"):
        caffe.Net(str(DEMO[0]), str(DEMO[1]), weights=str(DEMO[1]))
    with pytest.raises(TypeError):
        caffe.Net(str(DEMO[0]), 1.5)
    net = caffe.Net(str(DEMO[0]), caffe.TRAIN, weights=str(DEMO[1]))
    assert net.inputs == ["data"] and net.outputs == ["score"]


def test_mode_shims() -> None:
    caffe.set_device(0)
    if torch.cuda.is_available():
        caffe.set_mode_gpu()
    else:
        with pytest.warns(UserWarning, match="no CUDA device"):
            caffe.set_mode_gpu()
    caffe.set_mode_cpu()
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]), caffe.TEST)
    assert net.forward(data=np.zeros((1, 3, 8, 8), np.float32))["score"].shape == (1, 4, 8, 8)


def test_forward_all_batches_like_pycaffe() -> None:
    """ENet's and Dilation's scripts: forward_all(**{net.inputs[0]: images}) in the net's batch size."""
    rs = np.random.RandomState(1)
    x = rs.uniform(-2, 2, (5, 3, 24, 28)).astype(np.float32)
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]), caffe.TEST)
    net.blobs["data"].reshape(2, 3, 24, 28)
    out = net.forward_all(**{net.inputs[0]: x})
    gm = protoseg.loader.load(*DEMO)
    with torch.no_grad():
        expected = gm(torch.from_numpy(x)).numpy()
    assert list(out) == ["score"] and out["score"].shape == (5, 4, 24, 28)
    np.testing.assert_allclose(out["score"], expected, rtol=1e-5, atol=1e-5)


def test_layers_and_layer_names_as_pycaffe_lists_them() -> None:
    net = caffe.Net(str(DEMO[0]), str(DEMO[1]), caffe.TEST)
    assert net._layer_names[0] == "data" and "conv1_1" in net._layer_names
    types = {name: layer.type for name, layer in zip(net._layer_names, net.layers)}
    assert types["data"] == "MemoryData" and types["conv1_1"] == "Convolution"
    conv = net.layers[net._layer_names.index("conv1_1")]
    assert conv.blobs[0] is net.params["conv1_1"][0]


def test_caffe_io_transformer_as_pycaffe_scripts_use_it(tmp_path: Path) -> None:
    image_path = next((DEMO_DIR / "images").glob("*.png"))
    image = caffe.io.load_image(str(image_path))
    assert image.dtype == np.float32 and image.shape[2] == 3 and 0 <= image.min() and image.max() <= 1
    t = caffe.io.Transformer({"data": (1, 3, 32, 40)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    blob = t.preprocess("data", image)
    assert blob.shape == (3, 32, 40)
    resized = caffe.io.resize_image(image, (32, 40))
    np.testing.assert_allclose(blob[0], resized[:, :, 2] * 255 - 104.0, rtol=1e-5, atol=1e-3)  # B first
    np.testing.assert_allclose(t.deprocess("data", blob), resized, rtol=1e-5, atol=1e-5)
    with pytest.raises(ProtosegError, match="not one of the inputs"):
        t.preprocess("label", image)


def test_blobproto_round_trip_and_schema_for_scripts() -> None:
    from google.protobuf import text_format

    from protoseg.caffe.proto import caffe_pb2

    arr = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(arr)), arr)
    msg = caffe_pb2.NetParameter()
    text_format.Merge('layer { name: "bn" type: "BN" bn_param { bn_mode: INFERENCE } }', msg)  # a fork's field
    assert msg.layer[0].bn_param.bn_mode == caffe_pb2.BNParameter.INFERENCE
