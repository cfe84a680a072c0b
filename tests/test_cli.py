"""The command line in-process (``main([...])``) and once as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from protoseg.cli import main
from protoseg.io.weights import write_weights

NET = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 10 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "pool" top: "score" convolution_param { num_output: 2 kernel_size: 1 } }
"""


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path, dict[str, list[np.ndarray]]]:
    rng = np.random.default_rng(0)
    weights = {
        "conv": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)],
        "score": [rng.standard_normal((2, 4, 1, 1)).astype(np.float32), rng.standard_normal(2).astype(np.float32)],
    }
    net = tmp_path / "tiny.prototxt"
    net.write_text(NET)
    model = tmp_path / "tiny.caffemodel"
    write_weights(model, weights, types={"conv": "Convolution", "score": "Convolution"})
    return net, model, weights


def _reference(weights, path: Path, x: np.ndarray) -> Path:
    """The tiny net's blobs computed independently in NumPy (Caffe's formulas)."""
    w, b = weights["conv"]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((1, 4, 12, 10), np.float64)
    for i in range(12):
        for j in range(10):
            conv[0, :, i, j] = np.tensordot(w, padded[0, :, i : i + 3, j : j + 3], axes=3) + b
    conv = np.maximum(conv, 0)
    # Caffe: ceil((12 - 3) / 2) + 1 = 6 rows, ceil((10 - 3) / 2) + 1 = 5 columns (the last window clipped)
    pool = np.full((1, 4, 6, 5), -np.inf)
    for i in range(6):
        for j in range(5):
            pool[0, :, i, j] = conv[0, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2))
    ws, bs = weights["score"]
    score = np.einsum("oc,nchw->nohw", ws[:, :, 0, 0], pool) + bs[None, :, None, None]
    np.savez(path, data=x, conv=conv.astype(np.float32), pool=pool.astype(np.float32), score=score.astype(np.float32))
    return path


def test_info_table_and_json(tiny, capsys) -> None:
    net, model, _ = tiny
    assert main(["info", str(net), str(model)]) == 0
    out = capsys.readouterr().out
    assert "122 parameters" in out and "all blobs match" in out and "1x4x6x5" in out
    assert main(["info", str(net), str(model), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total_params"] == 4 * 27 + 4 + 2 * 4 + 2
    assert summary["weights"]["ok"] is True
    assert [layer["name"] for layer in summary["layers"]] == ["data", "conv", "relu", "pool", "score"]
    assert summary["layers"][3]["shapes"] == [[1, 4, 6, 5]]


def test_info_input_override(tiny, capsys) -> None:
    net, _, _ = tiny
    assert main(["info", str(net), "--input", "data=2,3,31,17", "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert layers[-1]["shapes"] == [[2, 2, 15, 8]]


def test_info_reports_mismatched_weights(tiny, tmp_path, capsys) -> None:
    net, _, weights = tiny
    bad = tmp_path / "bad.caffemodel"
    write_weights(bad, {"conv": [weights["conv"][0][:, :2], weights["conv"][1]], "extra": [weights["score"][1]],
                        "input": []})  # Caffe's entry for a data layer: no blobs, nothing ignored
    assert main(["info", str(net), str(bad), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["weights"]
    assert any("blob 0 is (4, 2, 3, 3) but the prototxt implies (4, 3, 3, 3)" in p for p in problems["problems"])
    assert any("'score'" in p and "no blobs" in p for p in problems["problems"])
    assert problems["unexpected"] == ["extra"]


def test_verify_passes_against_numpy_reference(tiny, tmp_path, capsys) -> None:
    net, model, weights = tiny
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 10)).astype(np.float32)
    ref = _reference(weights, tmp_path / "ref.npz", x)
    assert main(["verify", str(net), str(model), "--reference", str(ref)]) == 0
    assert "3/3 blobs within rtol" in capsys.readouterr().out
    assert main(["verify", str(net), str(model), "-r", str(ref), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [b["blob"] for b in report["blobs"]] == ["conv", "pool", "score"]


def test_verify_names_first_divergence(tiny, tmp_path, capsys) -> None:
    net, model, weights = tiny
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 10)).astype(np.float32)
    ref = _reference(weights, tmp_path / "ref.npz", x)
    arrays = dict(np.load(ref))
    arrays["pool"] = arrays["pool"] + 1
    np.savez(ref, **arrays)
    assert main(["verify", str(net), str(model), "-r", str(ref)]) == 1
    out = capsys.readouterr().out
    assert "first divergence: blob 'pool' at layer 'pool' (Pooling)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "{net}", "--define", "NOEQUALS"], "NAME=VALUE"),
        (["info", "{net}", "--input", "data=1,x"], "NAME=N,C,H,W"),
        (["info", "{net}", "--input", "label=1,1,4,4"], "--input names 'label'"),
        (["verify", "{net}", "{model}", "-r", "{net}"], "cannot be read as an .npz"),
        (["info", "{net}", "{net}"], "text prototxt"),
        (["info", "{tmp}/missing.prototxt"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny, tmp_path, capsys, argv, message) -> None:
    net, model, _ = tiny
    argv = [a.format(net=net, model=model, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_unknown_layer_type_is_named(tmp_path, capsys) -> None:
    net = tmp_path / "net.prototxt"
    net.write_text(NET.replace('type: "ReLU"', 'type: "ReLu"'))
    assert main(["info", str(net)]) == 2
    err = capsys.readouterr().err
    assert f"{net}:6: layer 'relu' (ReLu): no Caffe protoseg reads" in err and "did you mean 'ReLU'" in err


def test_wrong_blob_count_is_refused(tiny, tmp_path, capsys) -> None:
    net, _, weights = tiny
    bad = tmp_path / "bad.caffemodel"
    write_weights(bad, {"conv": weights["conv"][:1], "score": weights["score"]})
    x = np.zeros((1, 3, 12, 10), np.float32)
    np.savez(tmp_path / "ref.npz", data=x)
    assert main(["verify", str(net), str(bad), "-r", str(tmp_path / "ref.npz")]) == 2
    assert f"layer 'conv' (Convolution) at {net}:4 has 1 blobs in the file but the prototxt implies 2" in \
        capsys.readouterr().err


def test_upgrade_writes_v2(tmp_path, capsys) -> None:
    old = tmp_path / "old.prototxt"
    old.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
                   'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 blobs_lr: 2 '
                   'convolution_param { num_output: 2 kernel_size: 3 hole: 2 } }\n')
    out = tmp_path / "new.prototxt"
    assert main(["upgrade", str(old), "-o", str(out)]) == 0
    text = out.read_text()
    assert 'type: "Input"' in text and 'type: "Convolution"' in text and "dilation: 2" in text
    assert "lr_mult: 2" in text and "layers {" not in text and "hole" not in text


def test_convert_py_runs_without_protoseg(tiny, tmp_path) -> None:
    net, model, weights = tiny
    out = tmp_path / "tiny_net.py"
    assert main(["convert", str(net), str(model), "--format", "py", "-o", str(out)]) == 0
    assert main(["convert", str(net), str(model), "--format", "py", "-o", str(out)]) == 2  # never overwrites
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 10)).astype(np.float32)
    ref = np.load(_reference(weights, tmp_path / "ref.npz", x))
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys; sys.modules['protoseg'] = None\n"  # protoseg cannot be imported in this process
        "import numpy as np, torch, tiny_net\n"
        "y = tiny_net.load()(torch.from_numpy(np.load('x.npy')))\n"
        "np.save('y.npy', y.detach().numpy())\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert np.allclose(np.load(tmp_path / "y.npy"), ref["score"], atol=1e-5)


def test_console_script_smoke(tiny) -> None:
    net, model, _ = tiny
    result = subprocess.run([sys.executable, "-m", "protoseg.cli", "info", str(net), str(model)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "all blobs match" in result.stdout


def test_convert_onnx_runs_in_onnxruntime(tiny, tmp_path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    net, model, weights = tiny
    out = tmp_path / "tiny.onnx"
    assert main(["convert", str(net), str(model), "--format", "onnx", "-o", str(out)]) == 0
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 10)).astype(np.float32)
    ref = np.load(_reference(weights, tmp_path / "ref.npz", x))
    session = ort.InferenceSession(str(out))
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    assert np.allclose(y, ref["score"], atol=1e-5)


def test_verify_a_parameter_free_net_reshaped_to_the_reference(tmp_path, capsys) -> None:
    """No WEIGHTS for a net without parameters, and the reference's input shape wins over the prototxt's
    (Caffe's reshape), down to another batch, channel count and size."""
    net = tmp_path / "free.prototxt"
    net.write_text('input: "data" input_shape { dim: 2 dim: 6 dim: 75 dim: 113 }\n'
                   'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
                   'layer { name: "p" type: "Power" bottom: "r" top: "p"\n'
                   '        power_param { power: 2 scale: 0.5 shift: 1 } }\n')
    x = np.random.default_rng(3).standard_normal((1, 2, 3, 4)).astype(np.float32)
    r = np.maximum(x, 0)
    ref = tmp_path / "ref.npz"
    np.savez(ref, data=x, r=r, p=(1 + 0.5 * r) ** 2)
    assert main(["verify", str(net), "-r", str(ref)]) == 0
    assert "2/2 blobs within rtol" in capsys.readouterr().out
    np.savez(ref, data=x, r=r, p=(1 + 0.5 * r) ** 2 + 0.5)
    assert main(["verify", str(net), "-r", str(ref)]) == 1
