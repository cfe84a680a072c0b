"""Weights I/O against files written by real Caffe, by the fixtures' own materializer and by hand."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from protoseg.errors import FormatError, ProtosegWarning
from protoseg.io.weights import open_weights, read_weights, write_weights
from tests.conftest import FIXTURES, materializer, need

LAYER_CASES = sorted(p.parent.name for p in (FIXTURES / "layers").glob("*/weights.caffemodel"))
# The smallest net case (20.5 M parameters), and a DeepLab v1 one, so the V1 format is its natural format.
NET_CASE = "deeplab_v1_largefov_test"


# -- a tiny protobuf encoder, independent of the module under test ------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def fld(number: int, wire: int, payload: bytes) -> bytes:
    key = varint(number << 3 | wire)
    return key + varint(len(payload)) + payload if wire == 2 else key + payload


def v2_layer(name: str, *blobs: bytes, type_: str = "Convolution") -> bytes:
    body = fld(1, 2, name.encode()) + fld(2, 2, type_.encode()) + b"".join(fld(7, 2, b) for b in blobs)
    return fld(100, 2, body)


def v2_blob(a: np.ndarray) -> bytes:
    return fld(7, 2, fld(1, 2, b"".join(varint(d) for d in a.shape))) + fld(5, 2, a.astype("<f4").tobytes())


def reference_decode(raw: bytes) -> list[tuple[str, list[np.ndarray]]]:
    """Decode with the generated protobuf classes, the slow way, following Blob::FromProto's rules."""
    caffe_pb2 = pytest.importorskip("protoseg.proto.caffe_pb2")
    net = caffe_pb2.NetParameter.FromString(raw)
    out = []
    for layer in list(net.layer) + list(net.layers):
        arrays = []
        for b in layer.blobs:
            legacy = any(b.HasField(f) for f in ("num", "channels", "height", "width"))
            shape = (b.num, b.channels, b.height, b.width) if legacy else tuple(b.shape.dim)
            values = np.array(b.double_data, np.float64) if len(b.double_data) else np.array(b.data, np.float32)
            arrays.append(values.reshape(shape))
        out.append((layer.name, arrays))
    return out


def assert_same(got: dict[str, list[np.ndarray]], want: list[tuple[str, list[np.ndarray]]]) -> None:
    assert list(got) == [name for name, _ in want]
    for name, arrays in want:
        assert len(got[name]) == len(arrays), name
        for g, w in zip(got[name], arrays):
            assert g.shape == w.shape and g.dtype == w.dtype, name
            np.testing.assert_array_equal(g, w)


# -- files written by real Caffe -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", LAYER_CASES)
def test_caffe_written_file_matches_protobuf_decode(case: str) -> None:
    path = need(FIXTURES / "layers" / case / "weights.caffemodel")
    info = open_weights(path)
    assert info.format == ("v1" if case == "v1_format_hole_interp" else "v2")
    assert_same(read_weights(path), reference_decode(path.read_bytes()))


def test_v1_file_keeps_legacy_4d_shapes_and_enum_types() -> None:
    info = open_weights(need(FIXTURES / "layers" / "v1_format_hole_interp" / "weights.caffemodel"))
    conv = next(layer for layer in info.layers if layer.name == "conv")
    assert conv.type == 4  # V1 enum CONVOLUTION
    assert [b.shape for b in conv.blobs] == [(5, 3, 3, 3), (1, 1, 1, 5)]


def test_arrays_are_writable_and_torch_takes_them_silently(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "w.caffemodel"
    path.write_bytes(b"\x0a\x01n" + v2_layer("c", v2_blob(np.arange(6, dtype=np.float32).reshape(2, 3))))
    (a,) = read_weights(path)["c"]
    assert a.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = torch.from_numpy(a)
    assert t.tolist() == [[0, 1, 2], [3, 4, 5]]
    a[0, 0] = 7  # copy-on-write: the file is untouched
    assert read_weights(path)["c"][0][0, 0] == 0


# -- net fixtures, materialized in each format ---------------------------------------------------------------

@pytest.fixture(scope="module")
def net_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict, Path]:
    case = need(FIXTURES / "nets" / NET_CASE)
    materialize = materializer()
    layers, types = materialize.weights(json.loads((case / "manifest.json").read_text()))
    return materialize, (layers, types), tmp_path_factory.mktemp("net")


@pytest.mark.parametrize("fmt", ["v2", "v1", "hdf5"])
def test_materialized_net_reads_back_every_draw(net_case: tuple, fmt: str) -> None:
    materialize, (layers, types), tmp = net_case
    path = tmp / f"net.{fmt}.caffemodel"
    if fmt == "hdf5":
        materialize.write_hdf5(str(path), layers)
    else:
        materialize.write_binary(str(path), layers, types, fmt)
    got = read_weights(path)
    assert list(got) == list(layers)
    for name, arrays in layers.items():
        assert len(got[name]) == len(arrays), name
        for g, w in zip(got[name], arrays):
            want_shape = _legacy_shape(w) if fmt == "v1" else w.shape
            assert g.shape == want_shape, name
            assert np.array_equal(g.reshape(-1), w.reshape(-1)), name


def _legacy_shape(a: np.ndarray) -> tuple[int, ...]:
    """The 4-D shape materialize's V1 writer gives a blob (the manifest already lists V1 shapes as 4-D)."""
    if a.ndim == 1:
        return (1, 1, 1, a.shape[0])
    return (1,) * (4 - a.ndim) + a.shape


# -- round trips ---------------------------------------------------------------------------------------------

def sample_weights() -> dict[str, list[np.ndarray]]:
    rs = np.random.RandomState(0)
    return {
        "conv1": [rs.standard_normal((4, 3, 3, 3)).astype(np.float32), rs.standard_normal(4).astype(np.float32)],
        "relu1": [],
        "bn": [np.zeros(5, np.float32), np.ones(5, np.float32), np.array([2.5], np.float32)],
        "fc": [rs.standard_normal((3, 7)), rs.standard_normal(3)],  # float64: double_data
        "scalar": [np.array(1.5, np.float32)],
        "empty": [np.zeros((0, 4), np.float32)],
    }


@pytest.mark.parametrize("fmt", ["v2", "hdf5"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    weights = sample_weights()
    path = tmp_path / ("w.caffemodel.h5" if fmt == "hdf5" else "w.caffemodel")
    write_weights(path, weights, format=fmt, types={"conv1": "Convolution", "bn": "BatchNorm"})
    assert_same(read_weights(path), list(weights.items()))
    if fmt == "v2":  # what we write, protobuf reads the same
        assert_same(read_weights(path), reference_decode(path.read_bytes()))
        assert open_weights(path).layers[2].type == "BatchNorm"


def test_rewriting_the_file_read_from_keeps_old_arrays(tmp_path: Path) -> None:
    path = tmp_path / "w.caffemodel"
    write_weights(path, {"a": [np.arange(1000, dtype=np.float32)]})
    old = read_weights(path)["a"][0]
    write_weights(path, {"a": [np.zeros(10, np.float32)]})
    assert old[999] == 999 and read_weights(path)["a"][0].shape == (10,)


def test_unpacked_and_split_data_and_double_data(tmp_path: Path) -> None:
    """Old writers put one field per element; a parser must also join repeated packed chunks."""
    unpacked_dims = fld(7, 2, b"".join(fld(1, 0, varint(d)) for d in (2, 3)))
    floats = b"".join(fld(5, 5, struct.pack("<f", v)) for v in range(4)) + fld(5, 2, struct.pack("<2f", 4, 5))
    doubles = fld(8, 2, struct.pack("<d", 0.1)) + fld(8, 1, struct.pack("<d", 0.2)) + fld(8, 1, struct.pack("<d", 0.3))
    diff = fld(6, 2, struct.pack("<3f", 9, 9, 9))  # ignored, as Caffe ignores it when loading
    raw = v2_layer("l", unpacked_dims + floats + diff, fld(7, 2, fld(1, 2, varint(3))) + doubles)
    path = tmp_path / "w.caffemodel"
    path.write_bytes(raw)
    got = read_weights(path)["l"]
    np.testing.assert_array_equal(got[0], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert got[1].dtype == np.float64 and got[1].tolist() == [0.1, 0.2, 0.3]
    assert_same(read_weights(path), reference_decode(raw))


def test_v0_layers_inside_v1_entries(tmp_path: Path) -> None:
    legacy = b"".join(fld(i, 0, varint(d)) for i, d in enumerate((2, 1, 1, 3), 1))  # num, channels, height, width
    blob = legacy + fld(5, 2, np.ones(6, "<f4").tobytes())
    v0 = fld(1, 2, b"conv1") + fld(2, 2, b"conv") + fld(50, 2, blob)
    path = tmp_path / "w.caffemodel"
    path.write_bytes(fld(2, 2, fld(1, 2, v0)) + fld(2, 2, fld(4, 2, b"relu1") + fld(5, 0, varint(18))))
    info = open_weights(path)
    assert info.format == "v1"
    assert [(layer.name, layer.type) for layer in info.layers] == [("conv1", "conv"), ("relu1", 18)]
    assert info.layers[0].blobs[0].shape == (2, 1, 1, 3)


def test_duplicate_names_keep_later_blobs_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "w.caffemodel"
    one, two = np.ones(2, np.float32), np.full(2, 2, np.float32)
    path.write_bytes(v2_layer("a", v2_blob(one)) + v2_layer("b") + v2_layer("a", v2_blob(two)) + v2_layer("b"))
    with pytest.warns(ProtosegWarning, match=r"'a' occurs at bytes 0 and \d+"):
        got = read_weights(path)
    assert list(got) == ["a", "b"] and got["a"][0].tolist() == [2, 2]


# -- bad input -----------------------------------------------------------------------------------------------

def bad(tmp_path: Path, raw: bytes, name: str = "w.caffemodel") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such file"):
        read_weights(tmp_path / "nope.caffemodel")


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"w\.caffemodel: the file is empty"):
        read_weights(bad(tmp_path, b""))


@pytest.mark.parametrize("cut", [3, 100, -1])
def test_truncated_file(tmp_path: Path, cut: int) -> None:
    raw = v2_layer("conv", v2_blob(np.ones((4, 3, 3, 3), np.float32)))
    with pytest.raises(FormatError, match=r"truncated at byte \d+: .*download is probably incomplete"):
        read_weights(bad(tmp_path, raw[:cut]))


def test_truncated_varint(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="truncated at byte 2: a varint"):
        read_weights(bad(tmp_path, b"\xa2\x06\x80"))


def test_text_prototxt_given_as_weights(tmp_path: Path) -> None:
    text = b'name: "net"\nlayer {\n  name: "conv"\n  type: "Convolution"\n}\n'
    with pytest.raises(FormatError, match="this is a text prototxt, not a caffemodel: pass the .caffemodel"):
        read_weights(bad(tmp_path, text, "net.prototxt"))


def test_v1_v2_mix(tmp_path: Path) -> None:
    raw = v2_layer("a") + fld(2, 2, fld(4, 2, b"b"))
    with pytest.raises(FormatError, match=r"mixes V1 'layers' entries \(first at byte \d+\) and V2"):
        read_weights(bad(tmp_path, raw))


def test_count_disagrees_with_shape(tmp_path: Path) -> None:
    blob = fld(7, 2, fld(1, 2, varint(2) + varint(3))) + fld(5, 2, np.ones(5, "<f4").tobytes())
    with pytest.raises(FormatError, match=r"layer 'c' blob 0 \(byte \d+\): shape \(2, 3\) needs 6 values .* 5"):
        read_weights(bad(tmp_path, v2_layer("c", blob)))


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x0f\x00\x00\x00\x00", "unknown protobuf wire type 7"),
    (b"\xff" * 12, "varint longer than 10 bytes"),
    (b"\x00\x01", "field number 0"),
    (fld(100, 2, fld(7, 2, b"\x2a\x09" + b"\x00" * 5)), "claims 9 bytes but its message ends"),
    (fld(3, 0, varint(1)), "no layer entries"),
    (b"PK\x03\x04rest", "zip archive"),
], ids=["wire-type", "long-varint", "field-0", "overrun", "no-layers", "zip"])
def test_garbage(tmp_path: Path, raw: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        read_weights(bad(tmp_path, raw))


def test_hdf5_without_data_group(tmp_path: Path) -> None:
    path = tmp_path / "ref.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("conv1", data=np.ones(3))
    with pytest.raises(FormatError, match=r"ref\.h5: an HDF5 file without a /data group.*top-level entries: 'conv1'"):
        read_weights(path)


def test_truncated_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "w.caffemodel.h5"
    write_weights(path, sample_weights(), format="hdf5")
    raw = path.read_bytes()
    with pytest.raises(FormatError, match=r"HDF5 file is corrupt or truncated .*truncated file"):
        read_weights(bad(tmp_path, raw[: len(raw) // 2], "cut.caffemodel.h5"))
