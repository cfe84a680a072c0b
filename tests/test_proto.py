"""The Caffe schema: bindings in sync, every published prototxt parses, Caffe-written caffemodels decode,
and the collision rule of ``proto/caffe.proto`` (fork fields whose number BVLC uses move to 10000 + n)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, text_format
from google.protobuf.unknown_fields import UnknownFieldSet

from protoseg.proto import caffe_pb2
from tests.conftest import FIXTURES, PUBLISHED, ROOT, load_script, need

PROTO = ROOT / "proto" / "caffe.proto"
RELOCATED = 10000  # rule 1 of the .proto header: a colliding fork number n becomes RELOCATED + n
TEMPLATE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
TEMPLATE_DUMMY = "1"  # stands in for every ${NAME}: valid inside strings and as a number (num_output, ...)

PUBLISHED_PROTOTXTS = sorted(PUBLISHED.rglob("*.prototxt")) if PUBLISHED.exists() else []
LAYER_CASES = sorted(p.parent for p in FIXTURES.glob("layers/*/weights.caffemodel")) if FIXTURES.exists() else []


def _load_regen():
    return load_script(ROOT / "scripts" / "regen_proto.py")


def _parse(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    caffe_pb2.DESCRIPTOR.CopyToProto(proto)
    return proto


# --- (a) the committed bindings are current ---------------------------------------------------------------


def test_bindings_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    regen = _load_regen()
    fresh = regen.generate(tmp_path).read_text(encoding="utf-8")
    committed = regen.BINDINGS.read_text(encoding="utf-8")
    assert regen.serialized_descriptor(committed) == regen.serialized_descriptor(fresh), (
        "protoseg/proto/caffe_pb2.py is stale; run `python scripts/regen_proto.py`"
    )
    if regen.gencode_version(committed) == regen.gencode_version(fresh):
        assert committed == fresh, "protoseg/proto/caffe_pb2.py was edited by hand; regenerate it"


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("grpc_tools")
    regen = _load_regen()
    stale = tmp_path / "caffe_pb2.py"
    text = regen.BINDINGS.read_text(encoding="utf-8")
    # Drop the first message name from the embedded descriptor: same code, different schema.
    stale.write_text(text.replace("\\tBlobShape", "\\tBlobShapX", 1), encoding="utf-8")
    monkeypatch.setattr(regen, "BINDINGS", stale)
    assert regen.main(["--check"]) == 1


# --- (b) every published prototxt parses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", PUBLISHED_PROTOTXTS, ids=[str(p.relative_to(PUBLISHED)) for p in PUBLISHED_PROTOTXTS]
)
def test_published_prototxt_parses(path: Path) -> None:
    net = _parse(TEMPLATE.sub(TEMPLATE_DUMMY, need(path).read_text(encoding="utf-8")))
    assert len(net.layer) + len(net.layers) > 0


def test_published_folder_is_not_empty() -> None:
    need(PUBLISHED)
    assert PUBLISHED_PROTOTXTS, f"no *.prototxt under {PUBLISHED}"


# --- (c) caffemodels written by each Caffe decode ------------------------------------------------------------


def _added_by_caffe(layer, net: caffe_pb2.NetParameter) -> bool:
    """Layers a Caffe inserts into the net it saves: Split where one top feeds several bottoms, and (BVLC)
    an Input layer named "input" made from the net's ``input:`` fields."""
    if isinstance(layer, caffe_pb2.V1LayerParameter):
        return layer.type == caffe_pb2.V1LayerParameter.SPLIT
    return layer.type == "Split" or (layer.type == "Input" and layer.name == "input" and bool(net.input))


@pytest.mark.parametrize("case", LAYER_CASES, ids=[p.name for p in LAYER_CASES])
def test_caffemodel_decodes_with_the_layers_of_its_net(case: Path) -> None:
    net = _parse((case / "net.prototxt").read_text(encoding="utf-8"))
    weights = caffe_pb2.NetParameter.FromString((case / "weights.caffemodel").read_bytes())
    v1 = bool(net.layers)
    assert bool(weights.layers) == v1 and bool(weights.layer) != v1, "the file's format should match the net's"
    wanted = [layer.name for layer in (net.layers if v1 else net.layer)]
    saved = [layer.name for layer in (weights.layers if v1 else weights.layer)
             if layer.name in wanted or not _added_by_caffe(layer, net)]
    assert saved == wanted
    for layer in weights.layers if v1 else weights.layer:
        for blob in layer.blobs:  # the packed floats decode in full, under a 4-D legacy or an N-D shape
            legacy = [blob.num, blob.channels, blob.height, blob.width]
            dims = list(blob.shape.dim) if blob.HasField("shape") else legacy
            assert len(blob.data) == math.prod(dims) > 0, f"layer {layer.name!r}"


def test_the_fork_fixtures_are_present() -> None:
    need(FIXTURES)
    caffes = {p.name: json.loads((p / "case.json").read_text())["caffe"] for p in LAYER_CASES}
    assert caffes.get("v1_format_hole_interp") == "deeplab-v1"
    assert caffes.get("densecrf") == caffes.get("interp") == "deeplab-v2"


def test_deeplab_v1_caffemodel_keeps_fork_types_and_params() -> None:
    case = need(FIXTURES / "layers" / "v1_format_hole_interp")
    weights = caffe_pb2.NetParameter.FromString((case / "weights.caffemodel").read_bytes())
    by_name = {layer.name: layer for layer in weights.layers}
    V1 = caffe_pb2.V1LayerParameter
    assert by_name["fc_interp"].type == V1.INTERP  # fork enum values 40..56 are kept as written
    assert by_name["fc_interp"].interp_param.zoom_factor == 4  # and so are fork fields with free numbers
    assert by_name["crop"].type == V1.PADDING
    assert by_name["crop"].padding_param.pad_end == -3
    # `hole: 4` was written as field 17, which BVLC (and so this schema) reads as force_nd_im2col.
    conv = by_name["fc"].convolution_param
    assert conv.force_nd_im2col and not conv.HasField("hole")


def test_deeplab_v2_caffemodel_fork_params_become_unknown_fields() -> None:
    case = need(FIXTURES / "layers" / "interp")
    weights = caffe_pb2.NetParameter.FromString((case / "weights.caffemodel").read_bytes())
    interps = [layer for layer in weights.layer if layer.type == "Interp"]
    assert interps
    for layer in interps:
        # DeepLab v2 wrote interp_param as 143 = BVLC's input_param; its varints cannot be input_param.shape.
        assert not layer.HasField("interp_param")
        assert not layer.input_param.shape
        assert len(UnknownFieldSet(layer.input_param)) > 0


# --- (d) the collision rule --------------------------------------------------------------------------------


def test_fork_and_bvlc_fields_side_by_side() -> None:
    net = _parse(
        """
        layers { name: "c" type: CONVOLUTION
                 convolution_param { hole: 2 hole_h: 3 hole_w: 4 dilation: 5 force_nd_im2col: false } }
        layers { name: "d" type: IMAGE_SEG_DATA
                 image_data_param { label_type: PIXEL has_label: false } strict_dim: false }
        layers { name: "e" type: DECONVOLUTION }
        layers { name: "f" type: SEG_ACCURACY seg_accuracy_param { metric: PixelIOU } loss_param { ignore_label: 255 } }
        layer { name: "i" type: "Interp" interp_param { zoom_factor: 8 pad_end: -1 } }
        layer { name: "in" type: "Input" input_param { shape { dim: 1 dim: 3 } } }
        layer { name: "cr" type: "Crop" crop_param { axis: 2 offset: 5 } seg_accuracy_param { ignore_label: 255 } }
        layer { name: "crf" type: "DenseCRF"
                dense_crf_param { max_iter: 10 pos_w: 3 bi_rgb_std: 3 } recurrent_param { num_output: 7 } }
        layer { name: "m" type: "MatWrite" mat_write_param { prefix: "x" } parameter_param { shape { dim: 2 } } }
        layer { name: "dt" type: "DomainTransform" domain_transform_param { num_iter: 2 } swish_param { beta: 2 } }
        layer { name: "ab" type: "AdaptiveBiasChannel"
                adaptive_bias_channel_param { num_iter: 2 } clip_param { min: 0 max: 1 } }
        layer { name: "bn" type: "BN" bn_param { frozen: true momentum: 0.95 slope_filler { value: 1 } } }
        """
    )
    conv = net.layers[0].convolution_param
    assert (conv.hole, conv.hole_h, conv.hole_w, list(conv.dilation)) == (2, 3, 4, [5])
    assert conv.HasField("force_nd_im2col") and not conv.force_nd_im2col
    V1 = caffe_pb2.V1LayerParameter
    assert net.layers[1].type == V1.IMAGE_SEG_DATA != V1.DECONVOLUTION == net.layers[2].type
    assert net.layers[1].image_data_param.label_type == caffe_pb2.ImageDataParameter.PIXEL
    assert net.layers[3].seg_accuracy_param.metric == caffe_pb2.SegAccuracyParameter.PixelIOU
    assert net.layers[3].loss_param.ignore_label == 255
    interp, inp, crop, crf, mat, dt, ab, bn = net.layer
    assert (interp.interp_param.zoom_factor, interp.interp_param.pad_end) == (8, -1)
    assert list(inp.input_param.shape[0].dim) == [1, 3]
    assert list(crop.crop_param.offset) == [5] and list(crop.seg_accuracy_param.ignore_label) == [255]
    assert crf.dense_crf_param.max_iter == 10 and crf.recurrent_param.num_output == 7
    assert mat.mat_write_param.prefix == "x" and list(mat.parameter_param.shape.dim) == [2]
    assert dt.domain_transform_param.num_iter == 2 and dt.swish_param.beta == 2
    assert ab.adaptive_bias_channel_param.num_iter == 2 and ab.clip_param.max == 1
    assert bn.bn_param.frozen and bn.bn_param.slope_filler.value == 1
    # and the whole net survives a binary round trip with its fork fields intact
    assert caffe_pb2.NetParameter.FromString(net.SerializeToString()) == net


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _submessage(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def test_fork_numbers_decode_as_bvlc_fields_or_unknown() -> None:
    # A LayerParameter as DeepLab v2 writes it: interp_param (143) { zoom_factor (3): 8 }.
    layer = caffe_pb2.LayerParameter.FromString(_submessage(143, _tag(3, 0) + _varint(8)))
    assert layer.HasField("input_param") and not layer.HasField("interp_param")
    assert [(f.field_number, f.wire_type) for f in UnknownFieldSet(layer.input_param)] == [(3, 0)]
    # The same bytes at our number for interp_param read as Interp.
    ours = caffe_pb2.LayerParameter.FromString(_submessage(10143, _tag(3, 0) + _varint(8)))
    assert ours.interp_param.zoom_factor == 8
    # A ConvolutionParameter as DeepLab v1 writes it: hole (17): 2, hole_h (18): 3, hole_w (19): 4.
    conv = caffe_pb2.ConvolutionParameter.FromString(
        _tag(17, 0) + _varint(2) + _tag(18, 0) + _varint(3) + _tag(19, 0) + _varint(4)
    )
    assert conv.force_nd_im2col and list(conv.dilation) == [3] and conv.hole_w == 4
    assert not conv.HasField("hole") and not conv.HasField("hole_h")
    # A V1 layer of DeepLab v1's IMAGE_SEG_DATA (39) reads as BVLC's DECONVOLUTION.
    v1 = caffe_pb2.V1LayerParameter.FromString(_tag(5, 0) + _varint(39))
    assert v1.type == caffe_pb2.V1LayerParameter.DECONVOLUTION


OWN = 20000  # protoseg's own fields, carrying DeepLab v1's V1-only fields through the upgrade


def _all_messages(descriptor):
    for message in descriptor.message_types_by_name.values():
        yield message
        yield from message.nested_types


def test_header_lists_every_relocated_number() -> None:
    """Every field or enum value numbered 10000-19999 is in the .proto header's list, and nothing else is;
    protoseg's own additions (20000 and up) are named in the header too."""
    found, own = set(), set()
    for message in _all_messages(caffe_pb2.DESCRIPTOR):
        found |= {(f"{message.name}.{f.name}", f.number) for f in message.fields if RELOCATED <= f.number < OWN}
        own |= {f"{f.name} = {f.number}" for f in message.fields if f.number >= OWN}
        for enum in message.enum_types:
            found |= {(f"{message.name}.{enum.name}.{v.name}", v.number) for v in enum.values
                      if v.number >= RELOCATED}
    header = PROTO.read_text(encoding="utf-8").split("syntax", 1)[0]
    listed = {(name, int(new)) for name, old, new in
              re.findall(r"^//\s+(\w+(?:\.\w+)+)\s+\S.*?\s(\d+) -> (\d+) \(", header, re.MULTILINE)
              if RELOCATED <= int(new) < OWN and (int(new) - int(old)) % 1000 == 0}
    assert found and found == listed
    assert own and all(entry in " ".join(header.split()) for entry in own)


def test_no_required_fields() -> None:
    required = [
        f"{message.name}.{field.name}"
        for message in _file_descriptor().message_type
        for field in message.field
        if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED
    ]
    assert required == []

