"""A hostile or broken file can never run code, hang, exhaust memory, write outside the output folder, or crash
protoseg with a raw traceback: one small reproducer per way issue 8 found, each written here."""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fuzz.wire import varint  # an encoder of its own, not the writer under test
from protoseg.cli import main
from protoseg.errors import (
    FormatError,
    LayerParamError,
    ParseError,
    ProtosegError,
    ShapeError,
)
from protoseg.graph import to_graph
from protoseg.io.prototxt import parse_prototxt
from protoseg.io.upgrade import upgrade_net
from protoseg.io.weights import read_weights, write_weights
from protoseg.ir import build_net
from protoseg.loader import load, open_net
from protoseg.run.demo import DEMO_DIR

INJECTION = "x=__import__('os').system('touch {canary}')"


def _net(text: str):
    return build_net(upgrade_net(parse_prototxt(text)))


def _prototxt(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


# -- names from files never become code -------------------------------------------------------------------------

@pytest.mark.parametrize("name", [INJECTION, "self", "forward", "__init__", "training", "eval", "1x1", "x²", "ﬁ",
                                  "torch", "a" * 1000, "", "x__1"])
def test_hostile_names_are_data(name: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    name = name.format(canary=canary)
    text = (f'input: {json.dumps(name)} input_shape {{ dim: 1 dim: 2 dim: 5 dim: 5 }}\n'
            f'layer {{ name: {json.dumps(name)} type: "ReLU" bottom: {json.dumps(name)} top: {json.dumps(name)} }}\n'
            f'layer {{ name: "fi" type: "Power" bottom: {json.dumps(name)} top: "fi" power_param {{ scale: 2 }} }}\n')
    net = _net(text)
    gm = to_graph(net)
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(gm(x), torch.relu(x) * 2)
    assert not canary.exists()
    assert "'os'" not in gm.code and "system(" not in gm.code
    assert all(n.isascii() for n in [node.name for node in gm.graph.nodes] + [m for m, _ in gm.named_children()])
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    assert placeholder.meta["caffe_blob"] == name


def test_ssa_names_never_collide_with_file_names() -> None:
    # A blob named like the IR's SSA rename of another ("x__1") once made a layer consume its own output.
    text = ('input: "x" input_shape { dim: 1 dim: 1 dim: 2 dim: 2 }\n'
            'layer { name: "a" type: "Power" bottom: "x" top: "x__1" power_param { shift: 1 } }\n'
            'layer { name: "b" type: "Power" bottom: "x" top: "x" power_param { scale: 3 } }\n'
            'layer { name: "c" type: "Eltwise" bottom: "x__1" bottom: "x" top: "y" }\n')
    net = _net(text)
    assert len({t for layer in net.layers for t in layer.tops} | set(net.inputs)) == 4
    x = torch.ones(1, 1, 2, 2)
    assert torch.equal(to_graph(net)(x), (x + 1) + 3 * x)


def test_py_export_writes_only_literals_and_identifiers(tmp_path: Path) -> None:
    text = ('name: "1st x² net"\ninput: "data" input_shape { dim: 1 dim: 1 dim: 3 dim: 3 }\n'
            'layer { name: "p" type: "Power" bottom: "data" top: "p" power_param { shift: nan scale: inf } }\n'
            'layer { name: "q" type: "Power" bottom: "data" top: "q" power_param { shift: -inf } }\n')
    prototxt = _prototxt(tmp_path, text)
    weights = tmp_path / "w.caffemodel"
    write_weights(weights, {"p": []})
    bad = tmp_path / "x');import os;#.py"
    assert main(["convert", str(prototxt), str(weights), "--format", "py", "-o", str(bad)]) == 2
    out = tmp_path / "net1.py"
    assert main(["convert", str(prototxt), str(weights), "--format", "py", "-o", str(out)]) == 0
    source = out.read_text()
    assert "float('nan')" in source and "float('inf')" in source and "float('-inf')" in source
    sys.path.insert(0, str(tmp_path))
    try:
        import net1

        y = net1.load()(torch.zeros(1, 1, 3, 3))
    finally:
        sys.path.remove(str(tmp_path))
    assert torch.isnan(y["p"]).all() and torch.isneginf(y["q"]).all()


# -- .pt2: nothing in the archive runs ----------------------------------------------------------------------------

def _converted_pt2(tmp_path: Path) -> Path:
    pt2 = tmp_path / "demo.pt2"
    assert main(["convert", str(DEMO_DIR / "demo.prototxt"), str(DEMO_DIR / "demo.caffemodel"), "-o", str(pt2)]) == 0
    return pt2


def _rewrite(src: Path, dst: Path, change) -> Path:
    """Copy the zip ``src`` to ``dst``, passing each member's bytes through ``change(name, data)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info)))
    return dst


class _Evil:
    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (Path.touch, (self.canary,))


def test_pt2_pickles_are_never_loaded(tmp_path: Path) -> None:
    import pickle

    pt2 = _converted_pt2(tmp_path)
    canary = tmp_path / "canary"
    payload = pickle.dumps(_Evil(canary))

    def poison(name: str, data: bytes) -> bytes:
        if name.endswith("sample_inputs/model.pt") or "/constants/" in name and not name.endswith(".json"):
            return payload
        return data

    evil = _rewrite(pt2, tmp_path / "evil.pt2", poison)
    assert main(["run", str(evil), str(next((DEMO_DIR / "images").glob("*.png"))), "-o", str(tmp_path / "o")]) == 0
    assert not canary.exists()

    def pickled_weights(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["use_pickle"] = True
            return json.dumps(config).encode()
        return payload if "/data/weights/weight_" in name else data

    evil = _rewrite(pt2, tmp_path / "evil2.pt2", pickled_weights)
    with pytest.raises(FormatError, match="never unpickles"):
        from protoseg.pt2 import read

        read(evil)
    assert not canary.exists()


def _edit_record(pt2: Path, dst: Path, edit) -> Path:
    def change(name: str, data: bytes) -> bytes:
        if name.endswith("/extra/protoseg.json"):
            rec = json.loads(data)
            edit(rec)
            return json.dumps(rec).encode()
        return data

    return _rewrite(pt2, dst, change)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(preprocess={"mean": [1e999, 0, 0]}), "preprocessing"),
    (lambda r: r.update(preprocess={"mean": [0, 0, 0], "pad_to": [0, 10**12]}), "preprocessing"),
    (lambda r: r.update(preprocess={"mean": [0, 0, 0], "bgr": "yes"}), "preprocessing"),
    (lambda r: r.update(preprocess=[1, 2]), "preprocessing"),
    (lambda r: r["inputs"].update({k: [10**30, 3, 8, 8] for k in r["inputs"]}), "more than the 2,147,483,647"),
    (lambda r: r.update(inputs=[1, 2]), "malformed"),
    (lambda r: r.update(params={k: "x" for k in r["params"]}), "malformed"),
    (lambda r: r.update(params={}), "stores no weight"),
    (lambda r: r.update(params={k: v for k, v in list(r["params"].items())[:1]} | {
        "alias": list(r["params"].values())[1]} if len(r["params"]) > 1 else {}), "stores no weight"),
])
def test_malformed_pt2_records_are_format_errors(edit, message: str, tmp_path: Path) -> None:
    from protoseg.pt2 import read

    bad = _edit_record(_converted_pt2(tmp_path), tmp_path / "bad.pt2", edit)
    with pytest.raises(ProtosegError, match=message):
        read(bad)


def test_pt2_payloads_are_read_once_and_only_as_far_as_the_net_needs(tmp_path: Path) -> None:
    from protoseg.pt2 import read

    pt2 = _converted_pt2(tmp_path)

    def one_payload_for_all(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))["path_name"]
            for entry in config["config"].values():
                entry["path_name"] = first
            return json.dumps(config).encode()
        return data

    with pytest.raises(FormatError, match="missing or shared"):
        read(_rewrite(pt2, tmp_path / "shared.pt2", one_payload_for_all))

    # a compressed payload declaring far more than its blob: refused before anything is inflated
    bomb = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(pt2) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if "/data/weights/weight_" in info.filename:
                zout.writestr(info.filename, b"\0" * (64 * 2**20), zipfile.ZIP_DEFLATED)
            else:
                zout.writestr(info.filename, data)
    with pytest.raises(FormatError, match="holds 67,108,864 bytes"):
        read(bomb)

    # the same payloads deflated (and of the right size) still read
    packed = tmp_path / "packed.pt2"
    with zipfile.ZipFile(pt2) as zin, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    assert read(packed).net.layers


# -- bounded work and memory ---------------------------------------------------------------------------------------

def _unpacked_blob_file(path: Path, runs: int) -> np.ndarray:
    """A V2 caffemodel with one blob whose floats are written one field each, in ``runs`` runs split by shapes."""
    values = np.arange(runs * 2, dtype="<f4")
    dims = b"\x08" + varint(len(values))
    shape = b"\x3a" + varint(len(dims)) + dims  # between runs, so that every run is two values long
    blob = b"".join(b"".join(b"\x2d" + struct.pack("<f", v) for v in values[2 * i: 2 * i + 2]) + shape
                    for i in range(runs))
    layer = b"\x0a\x01a" + b"\x3a" + varint(len(blob)) + blob
    path.write_bytes(b"\xa2\x06" + varint(len(layer)) + layer)
    return values


def test_unpacked_float_runs_are_scanned_in_linear_time(tmp_path: Path, monkeypatch) -> None:
    from protoseg.io import weights as module

    path = tmp_path / "unpacked.caffemodel"
    values = _unpacked_blob_file(path, 2000)
    viewed = []
    real = np.frombuffer
    monkeypatch.setattr(module.np, "frombuffer", lambda buf, dtype=float, count=-1, offset=0:
                        viewed.append(count) or real(buf, dtype, count, offset))
    blob = read_weights(path)["a"][0]
    np.testing.assert_array_equal(blob, values)
    assert sum(c for c in viewed if c > 0) < 20 * len(values)  # quadratic scanning viewed ~ runs * file size


def test_millions_of_empty_layers_are_refused_early(tmp_path: Path) -> None:
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"\xa2\x06\x00" * 400_000)
    with pytest.raises(FormatError, match="more than 100,000 layer entries"):
        read_weights(path)


@pytest.mark.parametrize("shape, message", [
    ((1,) * 40, "more than 32 axes"),
    ((2**62, 0), "dimension out of range"),
    ((2**20, 2**20), "more than the 2,147,483,647 values"),
])
def test_blob_shapes_beyond_caffes_limits(tmp_path: Path, shape, message: str) -> None:
    dims = b"".join(varint(d) for d in shape)
    blob = b"\x3a" + varint(len(dims) + 2) + b"\x0a" + varint(len(dims)) + dims
    layer = b"\x0a\x01a" + b"\x3a" + varint(len(blob)) + blob
    path = tmp_path / "w.caffemodel"
    path.write_bytes(b"\xa2\x06" + varint(len(layer)) + layer)
    with pytest.raises(FormatError, match=message):
        read_weights(path)


def test_zero_d_blob_loads_as_caffes_shared_prelu(tmp_path: Path) -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 2 dim: 1 dim: 2 }\n'
            'layer { name: "p" type: "PReLU" bottom: "data" top: "p" prelu_param { channel_shared: true } }\n')
    prototxt = _prototxt(tmp_path, text)
    weights = tmp_path / "w.caffemodel"
    write_weights(weights, {"p": [np.array(0.25, dtype=np.float32)]})  # 0-d, as OpenCV's test model
    gm = load(prototxt, weights)
    assert torch.equal(gm(torch.tensor([[[[-4.0, 4.0]], [[-8.0, 1.0]]]])), torch.tensor([[[[-1.0, 4.0]], [[-2.0, 1.0]]]]))


def _hdf5(path: Path, build) -> Path:
    with h5py.File(path, "w") as f:
        build(f.create_group("data"), f)
    return path


@pytest.mark.parametrize("kind, message", [
    ("soft_loop", "is a soft link"),
    ("hard_cycle", "links back into the group tree"),
    ("external", "external link to another file"),
    ("huge", "declares .* bytes but stores"),
    ("unallocated", "declares .* bytes but stores 0"),
    ("dtype", "has dtype int32"),
    ("external_storage", "keeps its data in other files"),
    ("virtual", "keeps its data in other files"),
])
def test_hostile_hdf5(kind: str, message: str, tmp_path: Path) -> None:
    def build(data, f) -> None:
        layer = data.create_group("conv")
        if kind == "soft_loop":
            layer["0"] = h5py.SoftLink("/data/conv/0")
        elif kind == "hard_cycle":
            layer["loop"] = data
        elif kind == "external":
            layer["0"] = h5py.ExternalLink("elsewhere.h5", "/data/conv/0")
        elif kind == "huge":  # 3.6 GB declared, one small gzip chunk stored
            layer.create_dataset("0", shape=(30000, 30000), dtype=np.float32, chunks=(100, 100), compression="gzip")
            layer["0"][:100, :100] = 1.0
        elif kind == "unallocated":
            layer.create_dataset("0", shape=(40000, 40000), dtype=np.float32, chunks=(1000, 1000))
        elif kind == "external_storage":  # raw bytes of another file, e.g. a key on the same disk
            (tmp_path / "secret").write_bytes(b"\0" * 64)
            layer.create_dataset("0", shape=(16,), dtype=np.float32, external=[(str(tmp_path / "secret"), 0, 64)])
        elif kind == "virtual":
            source = h5py.VirtualSource(str(tmp_path / "other.h5"), "x", shape=(4,), dtype=np.float32)
            mapping = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
            mapping[:] = source
            layer.create_virtual_dataset("0", mapping)
        else:
            layer.create_dataset("0", data=np.zeros(3, np.int32))

    path = _hdf5(tmp_path / "w.caffemodel.h5", build)
    with pytest.raises(FormatError, match=message):
        read_weights(path)


def test_hdf5_contiguous_datasets_are_mapped_not_read(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    write_weights(path, {"conv": [np.arange(12, dtype=np.float32).reshape(3, 4)]}, format="hdf5")
    blob = read_weights(path)["conv"][0]
    assert isinstance(blob, np.memmap) or isinstance(blob.base, np.memmap)
    np.testing.assert_array_equal(blob, np.arange(12).reshape(3, 4))


def test_npz_header_cannot_declare_terabytes(tmp_path: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header) + 1) + header.encode() + b"\n"
    ref = tmp_path / "ref.npz"
    with zipfile.ZipFile(ref, "w") as z:
        z.writestr("data.npy", npy)
    prototxt = _prototxt(tmp_path, 'input: "data" input_shape { dim: 1 dim: 1 dim: 1 dim: 1 }\n'
                                   'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert main(["verify", str(prototxt), "-r", str(ref)]) == 2


@pytest.mark.parametrize("array", [np.zeros(2, np.complex64), np.array(["abc"]), np.zeros(2, "f4,f4"),
                                   np.zeros(2, "M8[s]")])
def test_npz_reference_members_must_be_numbers(array: np.ndarray, tmp_path: Path, capsys) -> None:
    ref = tmp_path / "ref.npz"
    np.savez(ref, data=array)
    prototxt = _prototxt(tmp_path, 'input: "data" input_shape { dim: 1 dim: 1 dim: 1 dim: 2 }\n'
                                   'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert main(["verify", str(prototxt), "-r", str(ref)]) == 2
    assert "holds numbers" in capsys.readouterr().err


def test_huge_pooling_kernel_and_stride_cost_nothing() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 1 dim: 6 dim: 6 }\n'
            'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
            'pooling_param { pool: MAX kernel_size: 1000000 stride: 10000000 pad: 3 } }\n'
            'layer { name: "q" type: "Pooling" bottom: "data" top: "q" '
            'pooling_param { pool: AVE kernel_size: 1000000 stride: 10000000 } }\n')
    net = _net(text)
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    out = to_graph(net)(x)
    assert out["p"].item() == 35.0
    assert out["q"].shape == (1, 1, 1, 1)


def test_mean_file_is_read_only_when_needed_and_only_a_regular_file(tmp_path: Path) -> None:
    from protoseg.run.preprocess import from_netparam

    text = ('layer { name: "data" type: "ImageData" top: "data" transform_param { mean_file: "/dev/zero" } }\n'
            'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    netparam = upgrade_net(parse_prototxt(text))
    assert from_netparam(netparam, mean=[1, 2, 3]).source == "--mean"
    with pytest.raises(FormatError, match="not a regular file"):
        from_netparam(netparam)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_mean_file_does_not_hang(tmp_path: Path) -> None:
    import os
    import threading

    from protoseg.run.preprocess import read_mean_file

    fifo = tmp_path / "mean.binaryproto"
    os.mkfifo(fifo)
    raised: list[BaseException] = []

    def read() -> None:
        try:
            read_mean_file(fifo)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            raised.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # unblock the open so the daemon thread ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("opening a FIFO mean_file blocked")
    assert len(raised) == 1 and isinstance(raised[0], FormatError) and "not a regular file" in str(raised[0])


def test_negative_mean_file_shape(tmp_path: Path) -> None:
    from protoseg.proto import caffe_pb2
    from protoseg.run.preprocess import read_mean_file

    blob = caffe_pb2.BlobProto(num=-1, channels=-3, height=1, width=1, data=[1.0, 2.0, 3.0])
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(FormatError, match="shape says"):
        read_mean_file(path)


# -- one error family, with file, line and layer -------------------------------------------------------------------

def test_single_top_split_and_slice_run() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 2 dim: 2 dim: 2 }\n'
            'layer { name: "s" type: "Split" bottom: "data" top: "a" }\n'
            'layer { name: "t" type: "Slice" bottom: "a" top: "b" }\n'
            'layer { name: "c" type: "Concat" bottom: "b" top: "c" }\n')
    x = torch.randn(1, 2, 2, 2)
    assert torch.equal(to_graph(_net(text))(x), x)


def test_interp_size_zero_is_refused_at_build() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n'
            'layer { name: "i" type: "Interp" bottom: "data" top: "i" interp_param { height: 5 width: 0 } }\n')
    with pytest.raises(LayerParamError, match="must be positive"):
        _net(text)


def test_interp_shape_inference_and_forward_agree_with_zoom_and_a_second_bottom() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n'
            'input: "like" input_shape { dim: 1 dim: 1 dim: 9 dim: 9 }\n'
            'layer { name: "i" type: "Interp" bottom: "data" bottom: "like" top: "i" interp_param { zoom_factor: 2 } }\n')
    net = _net(text)
    out = to_graph(net)(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 9, 9))
    assert tuple(out.shape) == net.layers[0].shapes[0] == (1, 1, 7, 7)  # zoom wins over the second bottom


def test_dense_crf_parameters_are_checked_when_the_net_is_built() -> None:
    text = ('input: "s" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\ninput: "d" input_shape { dim: 1 dim: 1 dim: 1 '
            'dim: 2 }\nlayer { name: "crf" type: "DenseCRF" bottom: "s" bottom: "d" top: "c" '
            'dense_crf_param { max_iter: 2 pos_w: 3 pos_xy_std: 0 } }\n')
    with pytest.raises(LayerParamError, match=r"layer 'crf' \(DenseCRF\): pos_xy_std must be > 0"):
        _net(text)
    with pytest.raises(LayerParamError, match=r"max_iter must be an integer from 0 to 1,000"):
        _net(text.replace("max_iter: 2 pos_w: 3 pos_xy_std: 0", "max_iter: 2147483647 pos_w: 3 pos_xy_std: 3"))


def test_errors_name_file_line_and_layer_and_stay_short(tmp_path: Path, capsys) -> None:
    long = "n" * 1000
    prototxt = _prototxt(tmp_path, f'input: "data" input_shape {{ dim: 1 dim: 1 dim: 2 dim: 2 }}\n\n'
                                   f'layer {{ name: "{long}" type: "Pooling" bottom: "data" top: "p" '
                                   f'pooling_param {{ pool: MAX kernel_size: 3 pad: 3 }} }}\n')
    assert main(["info", str(prototxt)]) == 2
    err = capsys.readouterr().err
    assert f"{prototxt}:3: layer 'nnnn" in err and "[...]" in err and len(err) < 400


def test_parser_messages_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="net.prototxt:1:14: Expected \":\": a value field needs a colon"):
        parse_prototxt('layer { name "a" }', filename="net.prototxt")


def test_export_error_names_the_exception_type() -> None:
    from protoseg.export import _first_line

    assert _first_line(NotImplementedError()) == "NotImplementedError"


# -- writes stay in the output folder ------------------------------------------------------------------------------

def test_run_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    image = next((DEMO_DIR / "images").glob("*.png"))
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "outside.png"
    (out / f"{image.stem}.png").symlink_to(target)  # dangling
    args = ["run", str(DEMO_DIR / "demo.prototxt"), str(DEMO_DIR / "demo.caffemodel"), str(image), "-o", str(out)]
    assert main(args) == 2  # taken: --force needed
    assert main([*args, "--force"]) == 0
    assert not target.exists() and not (out / f"{image.stem}.png").is_symlink()


def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path: Path) -> None:
    from protoseg.io.atomic import write_file

    target = tmp_path / "model.pt2"
    target.write_text("old")

    def fail(tmp: str) -> None:
        assert Path(tmp).name == target.name  # written under its own name (torch.export records it)
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.pt2"]
    write_file(target, lambda tmp: Path(tmp).write_text("new"))
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model.pt2"]


def test_weights_never_come_from_another_file_through_hdf5_links(tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    write_weights(other, {"conv": [np.ones(3, np.float32)]}, format="hdf5")
    path = _hdf5(tmp_path / "w.h5", lambda data, f: data.__setitem__("conv", h5py.ExternalLink(str(other), "/data/conv")))
    with pytest.raises(FormatError, match="external link"):
        open_net(_prototxt(tmp_path, 'input: "d" input_shape { dim: 1 }\n'), path)


def test_every_error_is_a_protoseg_error_for_unreadable_weights(tmp_path: Path) -> None:
    for data in (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\xa2\x06\x05\x0a\x03ab"):
        path = tmp_path / "w.caffemodel"
        path.write_bytes(data)
        with pytest.raises(ProtosegError):
            read_weights(path)


def test_shape_error_for_blobs_beyond_int_max_in_inference() -> None:
    text = 'input: "data" input_shape { dim: 100000 dim: 100000 dim: 1000 dim: 1 }\n'
    with pytest.raises(ShapeError, match="more than the 2,147,483,647 a Caffe blob can"):
        _net(text + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')


def test_two_layers_with_parameters_cannot_share_a_name() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 '
            'kernel_size: 1 } }\n'
            'layer { name: "c" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 3 '
            'kernel_size: 1 } }\n')
    with pytest.raises(ShapeError, match="Caffe matches weights to layers by name"):
        _net(text)


def test_rank_checked_where_the_module_needs_four_axes() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 2 dim: 3 dim: 4 dim: 4 }\n'
            'layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { local_size: 3 } }\n')
    with pytest.raises(ShapeError, match="expects an N x C x H x W bottom"):
        _net(text)


@pytest.mark.parametrize("text, message", [
    (('input: "data" input_shape { dim: 2 dim: 0 dim: 9 dim: 7 }\n'
     'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }\n'),
     "would have an empty axis"),
    (('input: "data" input_shape { dim: 1 dim: 3 dim: 21 dim: 18 }\n'
     'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 '
     'stride_h: 2147483648 stride_w: 3 pad_h: 1 pad_w: 1 } }\n'), "stride 2,147,483,648 is beyond any input"),
], ids=["zero-channels", "stride-beyond-int32"])
def test_sizes_torch_cannot_run_are_refused_at_build(text: str, message: str) -> None:
    with pytest.raises(ProtosegError, match=message):
        _net(text)
