"""The GraphModule reads like the prototxt: one line per Caffe layer, Caffe names, metadata, shared weights."""

from __future__ import annotations

import warnings

import torch

from protoseg.graph import to_graph
from protoseg.io.prototxt import parse_prototxt
from protoseg.io.upgrade import load_net, upgrade_net
from protoseg.ir import build_net
from tests.conftest import FIXTURES, PUBLISHED, need

DEFINES = {"NET_ID": "largefov", "EXP": "voc12", "DATA_ROOT": "/d", "TEST_SET": "val", "FEATURE_DIR": "/f",
           "NUM_LABELS": "21"}


def test_largefov_code_is_one_line_per_layer() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = build_net(load_net(need(PUBLISHED / "deeplab_v1/largefov/test.prototxt"), DEFINES),
                        {"data": (1, 3, 41, 41)})
    gm = to_graph(net)
    lines = [line.strip() for line in gm.code.splitlines() if "self." in line]
    assert len(lines) == len(net.layers)
    for line, layer in zip(lines, net.layers):
        assert f"self.{layer.name}(" in line, line
    assert lines[0].startswith("conv1_1__1 = self.conv1_1(data)")
    assert lines[1].startswith("conv1_1 = self.relu1_1(conv1_1__1)")
    assert lines[-1].startswith("fc8_interp = self.fc8_interp(fc8_voc12)")
    node = next(n for n in gm.graph.nodes if n.name == "fc6__1")
    assert node.meta["caffe_layer"] == "fc6" and node.meta["caffe_type"] == "Convolution"
    assert node.meta["caffe_blob"] == "fc6"


def test_shared_params_are_one_tensor() -> None:
    net = build_net(load_net(need(FIXTURES / "layers/shared_params_msc/net.prototxt")))
    gm = to_graph(net)
    assert gm.conv.weight is gm.conv_s.weight and gm.conv.bias is gm.conv_s.bias
    assert net.num_params == 4 * 3 * 9 + 4


def test_graph_runs_at_any_size_and_names_ssa_blobs() -> None:
    text = """input: "data" input_shape { dim: 1 dim: 2 dim: 9 dim: 9 }
    layer { name: "c" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 2 kernel_size: 3 } }
    layer { name: "r" type: "ReLU" bottom: "x" top: "x" }
    layer { name: "s" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
    layer { name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 2 } }
    """
    net = build_net(upgrade_net(parse_prototxt(text)))
    assert [layer.tops for layer in net.layers] == [["x__1"], ["x__2"], ["x"], ["p"]]
    gm = to_graph(net)
    for size in (9, 14, 23):
        out = gm(torch.randn(1, 2, size, size))
        assert out.shape[-1] == net.layers[-1].converter.infer([(1, 2, size - 2, size - 2)])[0][-1]
