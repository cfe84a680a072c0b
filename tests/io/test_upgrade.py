"""The V0/V1 → V2 upgrade and phase filtering, checked against Caffe's rules and the published nets."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from protoseg.errors import LayerParamError, ParseError, ProtosegError, ProtosegWarning
from protoseg.io.prototxt import parse_prototxt
from protoseg.io.upgrade import V1_TYPE_NAMES, filter_net, load_net, upgrade_net
from protoseg.proto import caffe_pb2
from tests.conftest import FIXTURES, PUBLISHED, need

#: Values for every ``${NAME}`` the published DeepLab prototxts use (case.json gives the test-time ones).
DEFINES = {
    "NET_ID": "largefov", "EXP": "voc12", "DATA_ROOT": "/d", "TEST_SET": "val", "FEATURE_DIR": "/f",
    "NUM_LABELS": "21", "TRAIN_SET": "train_aug", "TEST_SET_POSTFIX": "",
}
PUBLISHED_FILES = sorted(p.relative_to(PUBLISHED).as_posix() for p in PUBLISHED.rglob("*.prototxt")) \
    if PUBLISHED.exists() else ["<absent>"]


def upgrade(text: str) -> caffe_pb2.NetParameter:
    return upgrade_net(parse_prototxt(text))


def by_name(net: caffe_pb2.NetParameter) -> dict[str, caffe_pb2.LayerParameter]:
    return {layer.name: layer for layer in net.layer}


# ------------------------------------------------------------------------------------------ published nets


@pytest.mark.parametrize("name", PUBLISHED_FILES)
@pytest.mark.parametrize("phase", ["TEST", "TRAIN"])
def test_published_net_loads(name: str, phase: str) -> None:
    path = need(PUBLISHED / name)
    net = load_net(path, DEFINES, phase=phase)
    assert len(net.layer) > 0
    assert not net.layers and not net.input and not net.input_dim and not net.input_shape
    for layer in net.layer:
        assert layer.type, layer.name
        assert "${" not in layer.name
        conv = layer.convolution_param
        assert not (conv.HasField("hole") or conv.HasField("hole_h") or conv.HasField("hole_w")), layer.name
        wanted = caffe_pb2.TEST if phase == "TEST" else caffe_pb2.TRAIN
        assert all(rule.phase == wanted for rule in layer.include if rule.HasField("phase")), layer.name


def case_defines() -> list[tuple[str, dict[str, str]]]:
    if not (FIXTURES / "nets").exists():
        return [("<absent>", {})]
    cases = []
    for case in sorted((FIXTURES / "nets").glob("*/case.json")):
        spec = json.loads(case.read_text())
        cases.append((spec["prototxt"], spec.get("defines", {})))
    return cases


@pytest.mark.parametrize(("prototxt", "defines"), case_defines())
def test_fixture_net_defines_suffice(prototxt: str, defines: dict[str, str]) -> None:
    path = need(PUBLISHED.parent / prototxt)
    assert load_net(path, defines).layer


def test_deeplab_v1_largefov_test() -> None:
    path = need(PUBLISHED / "deeplab_v1/largefov/test.prototxt")
    net = load_net(path, DEFINES)
    layers = by_name(net)
    assert list(layers["fc6"].convolution_param.dilation) == [12]
    assert list(layers["conv5_1"].convolution_param.dilation) == [2]
    assert not layers["conv4_3"].convolution_param.dilation
    types = {layer.type for layer in net.layer}
    assert {"ImageSegData", "Interp", "MatWrite", "Silence", "Convolution", "ReLU", "Pooling"} <= types
    assert layers["data"].transform_param.crop_size == 513
    assert net.name == "largefov"


def test_deeplab_v1_largefov_train_params_and_phase() -> None:
    path = need(PUBLISHED / "deeplab_v1/largefov/train.prototxt")
    train = load_net(path, DEFINES, phase="TRAIN")
    fc8 = by_name(train)["fc8_voc12"]
    assert [(p.lr_mult, p.decay_mult) for p in fc8.param] == [(10, 1), (20, 0)]
    assert fc8.convolution_param.num_output == 21
    assert {"SoftmaxWithLoss", "SegAccuracy"} <= {layer.type for layer in train.layer}


def test_deeplab_v1_base_fc6_and_padding() -> None:
    path = need(PUBLISHED / "deeplab_v1/deeplab_base/test.prototxt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtosegWarning)
        layers = by_name(load_net(path, DEFINES))
    assert list(layers["fc6"].convolution_param.dilation) == [4]
    assert layers["fc8_crop"].type == "Padding"


def test_opencv_input_header_becomes_input_layer() -> None:
    path = need(PUBLISHED / "opencv/fcn8s-heavy-pascal.prototxt")
    net = load_net(path)
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert [list(shape.dim) for shape in first.input_param.shape] == [[1, 3, 500, 500]]
    assert not net.input and not net.input_dim


def test_phase_filtering_removes_train_only_layers() -> None:
    path = need(PUBLISHED / "deeplab_v2/vgg16/train.prototxt")
    upgraded = upgrade_net(parse_prototxt(path.read_text(), defines=DEFINES))
    train_only = [
        layer.name for layer in upgraded.layer
        if any(rule.phase == caffe_pb2.TRAIN for rule in layer.include)
    ]
    assert train_only
    test_names = {layer.name for layer in filter_net(upgraded, "TEST").layer}
    train_names = {layer.name for layer in filter_net(upgraded, "TRAIN").layer}
    assert not test_names & set(train_only)
    assert set(train_only) <= train_names
    assert len(test_names) == len(upgraded.layer) - len(train_only)


def test_v1_fixture_hole_interp_padding() -> None:
    path = need(FIXTURES / "layers/v1_format_hole_interp/net.prototxt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProtosegWarning)
        net = load_net(path)
    layers = by_name(net)
    assert [layer.type for layer in net.layer] == [
        "Input", "Convolution", "ReLU", "Pooling", "Convolution", "Interp", "Padding", "Softmax",
    ]
    assert [list(s.dim) for s in layers["input"].input_param.shape] == [[1, 3, 19, 23]]
    assert list(layers["conv"].convolution_param.dilation) == [2]
    assert list(layers["fc"].convolution_param.dilation) == [4]
    assert list(layers["fc"].convolution_param.pad) == [4]
    assert [(p.lr_mult, p.decay_mult) for p in layers["fc"].param] == [(1, 1), (2, 0)]
    assert layers["fc_interp"].interp_param.zoom_factor == 4
    assert (layers["crop"].padding_param.pad_beg, layers["crop"].padding_param.pad_end) == (-2, -3)


def test_v1_padding_param_survives() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProtosegWarning)
        net = upgrade('layers { name: "crop" type: PADDING padding_param { pad_beg: -2 pad_end: -3 } }')
    param = net.layer[0].padding_param
    assert (param.pad_beg, param.pad_end) == (-2, -3)


# ------------------------------------------------------------------------------------------------- V1 → V2


def test_every_v1_enum_value_has_a_type_string() -> None:
    assert set(caffe_pb2.V1LayerParameter.LayerType.keys()) <= set(V1_TYPE_NAMES)


@pytest.mark.parametrize(
    ("enum", "type_"),
    [("INTERP", "Interp"), ("IMAGE_SEG_DATA", "ImageSegData"), ("MAT_WRITE", "MatWrite"),
     ("SEG_ACCURACY", "SegAccuracy"), ("PADDING", "Padding"), ("DENSE_CRF", "DenseCRF"),
     ("DECONVOLUTION", "Deconvolution"), ("SOFTMAX_LOSS", "SoftmaxWithLoss"), ("TANH", "TanH")],
)
def test_v1_type_strings(enum: str, type_: str) -> None:
    assert upgrade(f'layers {{ name: "l" type: {enum} }}').layer[0].type == type_


def test_v1_param_names_share_modes_and_fork_params() -> None:
    net = upgrade(
        'name: "n"\n'
        'layers { name: "c" type: CONVOLUTION bottom: "a" top: "b" param: "w" param: "b" '
        "blob_share_mode: PERMISSIVE blobs_lr: 1 blobs_lr: 2 weight_decay: 1 loss_weight: 0.5 "
        'include { phase: TEST } convolution_param { num_output: 2 } }\n'
        'layers { name: "i" type: INTERP interp_param { shrink_factor: 8 } exclude { stage: "x" } }\n'
        'layers { name: "d" type: DENSE_CRF dense_crf_param { max_iter: 10 } }\n'
    )
    assert not net.layers
    c, i, d = net.layer
    assert [(p.name, p.lr_mult) for p in c.param] == [("w", 1), ("b", 2)]
    assert c.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE and not c.param[1].HasField("share_mode")
    assert c.param[0].decay_mult == 1 and not c.param[1].HasField("decay_mult")
    assert list(c.loss_weight) == [0.5] and c.include[0].phase == caffe_pb2.TEST
    assert (list(c.bottom), list(c.top), c.convolution_param.num_output) == (["a"], ["b"], 2)
    assert i.interp_param.shrink_factor == 8 and i.exclude[0].stage == ["x"]
    assert d.dense_crf_param.max_iter == 10


def test_v1_field_without_v2_place_warns() -> None:
    v1_only = sorted(
        set(caffe_pb2.V1LayerParameter.DESCRIPTOR.fields_by_name)
        - set(caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name)
        - {"blobs_lr", "weight_decay", "blob_share_mode", "layer"}
    )
    if not v1_only:
        pytest.skip("every V1 field has a V2 counterpart in this schema")
    net = caffe_pb2.NetParameter()
    layer = net.layers.add(name="odd", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    field = layer.DESCRIPTOR.fields_by_name[v1_only[0]]
    if field.message_type is not None:
        getattr(layer, field.name).SetInParent()
    else:
        setattr(layer, field.name, field.default_value if field.type != field.TYPE_BOOL else False)
    with pytest.warns(ProtosegWarning, match=rf"{v1_only[0]} \(layers 'odd'\)"):
        upgrade_net(net)


def test_data_transformation_fields_move() -> None:
    net = upgrade(
        'layers { name: "d" type: DATA data_param { source: "s" scale: 0.5 mean_file: "m" crop_size: 7 mirror: true } }'
    )
    layer = net.layer[0]
    assert layer.type == "Data"
    assert (layer.transform_param.scale, layer.transform_param.mean_file) == (0.5, "m")
    assert (layer.transform_param.crop_size, layer.transform_param.mirror) == (7, True)
    assert layer.data_param.source == "s"
    assert not layer.data_param.HasField("scale") and not layer.data_param.HasField("crop_size")


def test_mixed_net_refused_by_upgrade() -> None:
    net = caffe_pb2.NetParameter()
    net.layer.add(name="a")
    net.layers.add(name="b")
    with pytest.raises(ParseError, match="mixes"):
        upgrade_net(net)


def test_upgrade_does_not_modify_its_argument() -> None:
    raw = parse_prototxt(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5 layers { name: "r" type: RELU }'
    )
    before = raw.SerializeToString()
    upgrade_net(raw)
    assert raw.SerializeToString() == before


# -------------------------------------------------------------------------------------------------- V0 → V1


V0_NET = """
name: "v0"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 group: 1 biasterm: false
                 weight_filler { type: "gaussian" std: 0.01 } blobs_lr: 1 weight_decay: 1 }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.25 } bottom: "pool1" top: "pool1" }
layers { layer { name: "ip" type: "innerproduct" num_output: 10 new_num: 3 } bottom: "pool1" top: "ip" }
"""


def test_v0_net_upgrades_like_caffe() -> None:
    with pytest.warns(ProtosegWarning, match="new_num"):
        net = upgrade(V0_NET)
    layers = by_name(net)
    assert [layer.type for layer in net.layer] == ["Input", "Convolution", "Pooling", "Dropout", "InnerProduct"]
    conv = layers["conv1"]
    assert list(conv.bottom) == ["data"]
    assert list(conv.convolution_param.pad) == [2]
    assert list(conv.convolution_param.kernel_size) == [3] and list(conv.convolution_param.stride) == [2]
    assert conv.convolution_param.num_output == 4 and conv.convolution_param.bias_term is False
    assert conv.convolution_param.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1)]
    pool = layers["pool1"].pooling_param
    assert (pool.pool, pool.kernel_size, pool.stride) == (caffe_pb2.PoolingParameter.AVE, 2, 2)
    assert layers["drop"].dropout_param.dropout_ratio == pytest.approx(0.25)
    assert layers["ip"].inner_product_param.num_output == 10
    assert [list(s.dim) for s in layers["input"].input_param.shape] == [[1, 3, 8, 8]]


def test_v0_padding_into_non_conv_is_refused() -> None:
    text = (
        'input: "data" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "data" top: "p" }\n'
        'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }'
    )
    with pytest.raises(LayerParamError, match="layer 'r' \\(relu\\): takes padding layer 'p'"):
        upgrade(text)


def test_v0_unknown_type_and_unknown_bottom() -> None:
    with pytest.raises(ProtosegError, match="unknown V0 layer type"):
        upgrade('input: "data" layers { layer { name: "x" type: "wibble" } bottom: "data" top: "x" }')
    with pytest.raises(LayerParamError, match="bottom 'nowhere'"):
        upgrade('layers { layer { name: "x" type: "relu" } bottom: "nowhere" top: "x" }')


def test_v0_data_layer_transform_fields() -> None:
    net = upgrade('layers { layer { name: "d" type: "data" source: "db" batchsize: 4 cropsize: 227 meanfile: "m" '
                  'mirror: true scale: 0.5 } top: "data" }')
    layer = net.layer[0]
    assert (layer.type, layer.data_param.source, layer.data_param.batch_size) == ("Data", "db", 4)
    t = layer.transform_param
    assert (t.crop_size, t.mean_file, t.mirror, t.scale) == (227, "m", True, 0.5)


# ------------------------------------------------------------------------------------------ input, BatchNorm


def test_input_shape_fields_become_input_layer_first() -> None:
    net = upgrade(
        'input: "a" input_shape { dim: 1 dim: 2 } input: "b" input_shape { dim: 3 }\n'
        'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }'
    )
    assert [layer.name for layer in net.layer] == ["input", "r"]
    assert list(net.layer[0].top) == ["a", "b"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 2], [3]]


def test_input_dim_count_must_be_four_per_input() -> None:
    with pytest.raises(ParseError, match="2 'input' fields but 4 'input_dim'"):
        upgrade('input: "a" input: "b" input_dim: 1 input_dim: 3 input_dim: 5 input_dim: 5')


def test_input_without_shape_dropped_with_warning() -> None:
    with pytest.warns(ProtosegWarning, match="no input_dim/input_shape"):
        net = upgrade('input: "a" layer { name: "r" type: "ReLU" bottom: "a" top: "r" }')
    assert [layer.name for layer in net.layer] == ["r"] and not net.input


def test_old_batch_norm_params_frozen_like_caffe_1_0() -> None:
    net = upgrade(
        'layer { name: "bn" type: "BatchNorm" '
        'param { name: "m" lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }\n'
        'layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } }'
    )
    bn, bn2 = net.layer
    assert [(p.name, p.lr_mult, p.decay_mult) for p in bn.param] == [("m", 0, 0), ("", 0, 0), ("", 0, 0)]
    assert bn2.param[0].lr_mult == 1


# -------------------------------------------------------------------------------------------------- hole


@pytest.mark.parametrize(
    ("conv", "dilation"),
    [("hole: 4", [4]), ("hole_h: 2 hole_w: 3", [2, 3]), ("hole_h: 2 hole_w: 2", [2]), ("hole: 1", []),
     ("hole: 2 dilation: 2", [2]), ("dilation: 3", [3])],
    ids=["hole", "hole_hw", "hole_hw_equal", "hole_one", "agreeing_dilation", "dilation_only"],
)
def test_hole_becomes_dilation(conv: str, dilation: list[int]) -> None:
    net = upgrade(f'layer {{ name: "c" type: "Convolution" convolution_param {{ {conv} }} }}')
    param = net.layer[0].convolution_param
    assert list(param.dilation) == dilation
    assert not (param.HasField("hole") or param.HasField("hole_h") or param.HasField("hole_w"))


@pytest.mark.parametrize(
    ("conv", "message"),
    [("hole: 2 hole_h: 2", "either hole, or both"), ("hole_h: 2", "either hole, or both"),
     ("hole: 2 dilation: 3", "disagrees with dilation"), ("hole: 0", "at least 1")],
    ids=["hole_and_h", "h_only", "disagreeing_dilation", "zero"],
)
def test_bad_hole_refused(conv: str, message: str) -> None:
    with pytest.raises(LayerParamError, match=rf"layer 'c' \(Convolution\): .*{re.escape(message)}"):
        upgrade(f'layers {{ name: "c" type: CONVOLUTION convolution_param {{ {conv} }} }}')


# -------------------------------------------------------------------------------------------------- filter


RULES = """
layer { name: "plain" }
layer { name: "train" include { phase: TRAIN } }
layer { name: "test" include { phase: TEST } }
layer { name: "not_test" exclude { phase: TEST } }
layer { name: "stage_a" include { stage: "a" } }
layer { name: "stages_ab" include { stage: "a" stage: "b" } }
layer { name: "a_or_b" include { stage: "a" } include { stage: "b" } }
layer { name: "not_a" include { not_stage: "a" } }
layer { name: "level_1_2" include { min_level: 1 max_level: 2 } }
layer { name: "excl_level_ge_1" exclude { min_level: 1 } }
"""


@pytest.mark.parametrize(
    ("phase", "stages", "level", "kept"),
    [
        ("TEST", (), 0, ["plain", "test", "not_a", "excl_level_ge_1"]),
        ("TRAIN", (), 0, ["plain", "train", "not_test", "not_a", "excl_level_ge_1"]),
        ("test", ("a",), 0, ["plain", "test", "stage_a", "a_or_b", "excl_level_ge_1"]),
        ("TEST", ("b", "a"), 0, ["plain", "test", "stage_a", "stages_ab", "a_or_b", "excl_level_ge_1"]),
        ("TEST", ("b",), 2, ["plain", "test", "a_or_b", "not_a", "level_1_2"]),
        (caffe_pb2.TEST, (), 3, ["plain", "test", "not_a"]),
    ],
    ids=["test", "train", "stage_a", "stages_ab", "stage_b_level2", "level3"],
)
def test_filter_rules(phase: str | int, stages: tuple[str, ...], level: int, kept: list[str]) -> None:
    net = filter_net(parse_prototxt(RULES), phase, stages, level)
    assert [layer.name for layer in net.layer] == kept
    assert (net.state.level, list(net.state.stage)) == (level, list(stages))


def test_filter_adds_stages_to_the_files_state() -> None:
    text = 'state { stage: "a" phase: TRAIN } layer { name: "x" include { stage: "a" stage: "b" } }'
    net = filter_net(parse_prototxt(text), stages=["b"])
    assert [layer.name for layer in net.layer] == ["x"]
    assert net.state.phase == caffe_pb2.TEST


def test_include_and_exclude_together_refused() -> None:
    net = parse_prototxt('layer { name: "x" type: "ReLU" include { phase: TEST } exclude { phase: TRAIN } }')
    with pytest.raises(LayerParamError, match="layer 'x' \\(ReLU\\): has both include and exclude"):
        filter_net(net)


def test_unknown_phase() -> None:
    with pytest.raises(ProtosegError, match="TRAIN or TEST"):
        filter_net(parse_prototxt('layer { name: "x" }'), "VAL")


def test_load_net_reads_upgrades_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "n.prototxt"
    path.write_text(
        'name: "${NAME}"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 4\ninput_dim: 4\n'
        'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" convolution_param { hole: 2 } }\n'
        'layers { name: "loss" type: SOFTMAX_LOSS bottom: "c" include { phase: TRAIN } }\n'
    )
    net = load_net(path, {"NAME": "n"})
    assert net.name == "n"
    assert [(layer.name, layer.type) for layer in net.layer] == [("input", "Input"), ("c", "Convolution")]
    assert list(net.layer[1].convolution_param.dilation) == [2]
    assert len(load_net(path, {"NAME": "n"}, phase="TRAIN").layer) == 3
