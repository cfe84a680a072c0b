"""Reading prototxt text: templates, error positions in the file as written, and the clear failures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protoseg.errors import ParseError
from protoseg.io.prototxt import format_net, parse_prototxt, read_prototxt
from protoseg.proto import caffe_pb2
from tests.conftest import PUBLISHED, need

LONG = "a_value_much_longer_than_its_template"


def parse_error(text: str, **kwargs: object) -> str:
    with pytest.raises(ParseError) as info:
        parse_prototxt(text, filename="net.prototxt", **kwargs)
    return str(info.value)


def test_v2_layers_parse() -> None:
    net = parse_prototxt('name: "n"\nlayer { name: "c" type: "Convolution" convolution_param { num_output: 3 } }')
    assert net.name == "n"
    assert [(layer.name, layer.type) for layer in net.layer] == [("c", "Convolution")]
    assert net.layer[0].convolution_param.num_output == 3


def test_v1_fork_enum_and_hole_parse() -> None:
    net = parse_prototxt(
        'layers { name: "i" type: INTERP interp_param { zoom_factor: 8 } }\n'
        'layers { name: "d" type: IMAGE_SEG_DATA }\n'
        'layers { name: "c" type: CONVOLUTION convolution_param { hole: 12 } strict_dim: false }'
    )
    V1 = caffe_pb2.V1LayerParameter
    assert [V1.LayerType.Name(layer.type) for layer in net.layers] == ["INTERP", "IMAGE_SEG_DATA", "CONVOLUTION"]
    assert net.layers[2].convolution_param.hole == 12


def test_syntax_error_has_line_and_column() -> None:
    message = parse_error('name: "x"\nlayer {\n  name: "a"\n  type "Conv"\n}\n')
    assert message.startswith("net.prototxt:4:8: ")
    assert 'Expected ":"' in message


def test_column_refers_to_the_original_text_after_substitution() -> None:
    text = 'layer { name: "${EXP}" bottom: "${EXP}" tpo: "x" }\n'
    message = parse_error(text, defines={"EXP": LONG})
    assert message.startswith(f"net.prototxt:1:{text.index('tpo') + 1}: ")


def test_error_inside_a_substituted_value_points_at_the_template() -> None:
    text = 'layer {\n  name: "x"\n  convolution_param { num_output: ${NUM_LABELS} }\n}\n'
    message = parse_error(text, defines={"NUM_LABELS": "twentyone"})
    assert message.startswith(f"net.prototxt:3:{text.splitlines()[2].index('${') + 1}: ")


def test_unknown_field_names_message_type_and_suggests() -> None:
    message = parse_error('layer {\n  name: "c"\n  convolution_parm { num_output: 1 }\n}')
    assert message.startswith("net.prototxt:3:3: ")
    assert "'convolution_parm'" in message
    assert "caffe.LayerParameter" in message
    assert "did you mean 'convolution_param'?" in message


def test_unknown_field_without_close_name_has_no_suggestion() -> None:
    message = parse_error("zzzzqqq: 1")
    assert "unknown field 'zzzzqqq' in caffe.NetParameter" in message
    assert "did you mean" not in message


def test_unknown_enum_value_suggests() -> None:
    message = parse_error('layers { name: "a" type: INTERPP }')
    assert message.startswith("net.prototxt:1:26: ")
    assert "did you mean 'INTERP'?" in message


def test_templates_filled_in_strings_and_numbers() -> None:
    net = parse_prototxt(
        'name: "${NET_ID}"\nlayer { name: "fc8_${EXP}" top: "${EXP}/${EXP}" convolution_param { num_output: ${N} } }',
        defines={"NET_ID": "largefov", "EXP": "voc12", "N": 21},
    )
    assert net.name == "largefov"
    assert net.layer[0].name == "fc8_voc12"
    assert net.layer[0].top[0] == "voc12/voc12"
    assert net.layer[0].convolution_param.num_output == 21


def test_undefined_templates_listed_once_with_first_positions() -> None:
    text = (
        'name: "${NET_ID}"\n'
        "# source: ${ONLY_IN_A_COMMENT}\n"
        'layer { name: "${A}" top: "${NET_ID}" bottom: "${B}" }  # ${ALSO_COMMENT}\n'
    )
    message = parse_error(text, defines={"UNUSED": "x"})
    assert message.startswith("net.prototxt:1:8: ")
    assert re.findall(r"\$\{(\w+)\} \(line (\d+):(\d+)\)", message) == [
        ("NET_ID", "1", "8"), ("A", "3", "16"), ("B", "3", "48"),
    ]
    assert "COMMENT" not in message
    assert "--define NAME=VALUE" in message


def test_hash_inside_a_string_is_not_a_comment() -> None:
    net = parse_prototxt('name: "a#${X}" # ${Y}', defines={"X": "b"})
    assert net.name == "a#b"


def test_define_with_line_break_is_refused() -> None:
    assert "line break" in parse_error('name: "${X}"', defines={"X": "a\nb"})


def test_v1_and_v2_mix_is_refused() -> None:
    message = parse_error('name: "m"\nlayer { name: "a" type: "ReLU" }\n\nlayers { name: "b" type: RELU }\n')
    assert message.startswith("net.prototxt:4:1: ")
    assert "first 'layer' at line 2, first 'layers' at line 4" in message


def test_v0_layer_inside_layers_is_not_a_mix() -> None:
    net = parse_prototxt('layers { layer { name: "c" type: "conv" } bottom: "data" top: "c" }')
    assert net.layers[0].layer.type == "conv"


@pytest.mark.parametrize(
    "text", ["", "   \n\t\n", "# only a comment\n  # another\n"], ids=["empty", "blank", "comments"]
)
def test_empty_file(text: str) -> None:
    assert "empty" in parse_error(text)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.prototxt"
    path.write_bytes('name: "n"\n# caf\xe9\n'.encode("latin-1"))
    with pytest.raises(ParseError, match=r"latin1\.prototxt:2:6: byte 0xe9 is not UTF-8"):
        read_prototxt(path)


def test_binary_file_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "model.caffemodel"
    path.write_bytes(b"\n\x04name\x00\xff\xfe")
    with pytest.raises(ParseError, match="caffemodel"):
        read_prototxt(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="no such file"):
        read_prototxt(tmp_path / "absent.prototxt")
    with pytest.raises(ParseError, match="is a directory"):
        read_prototxt(tmp_path)


def test_read_file_with_bom_and_defines(tmp_path: Path) -> None:
    path = tmp_path / "net.prototxt"
    path.write_bytes(b'\xef\xbb\xbfname: "${X}"\n')
    assert read_prototxt(path, {"X": "ok"}).name == "ok"


def test_format_net_round_trips() -> None:
    net = parse_prototxt(
        'name: "n"\nlayer { name: "c" type: "Convolution" param { lr_mult: 1 } '
        "convolution_param { num_output: 3 dilation: 2 } include { phase: TEST } }"
    )
    text = format_net(net)
    assert 'type: "Convolution"' in text
    assert parse_prototxt(text) == net


PUBLISHED_FILES = sorted(p.relative_to(PUBLISHED).as_posix() for p in PUBLISHED.rglob("*.prototxt")) \
    if PUBLISHED.exists() else ["<absent>"]


@pytest.mark.parametrize("name", PUBLISHED_FILES)
def test_published_templates_are_all_reported(name: str) -> None:
    """Without defines, a DeepLab file fails with one error naming every template it uses outside comments."""
    path = need(PUBLISHED / name)
    text = path.read_text()
    used = {m for line in text.splitlines() for m in re.findall(r"\$\{(\w+)\}", line.split("#", 1)[0])}
    if not used:
        assert read_prototxt(path).ListFields()
        return
    with pytest.raises(ParseError) as info:
        read_prototxt(path)
    assert {m for m in re.findall(r"\$\{(\w+)\} \(line", str(info.value))} == used
