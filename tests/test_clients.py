"""The old pycaffe scripts in ``../shared/clients`` run through ``protoseg.caffe`` and give what protoseg's own
graph (``open_net(...).graph()``) gives for the same input.

Each test reads a script's text and changes only what Python 3 and the missing Caffe need (see ``_source``):

* every script: ``import caffe`` -> ``from protoseg import caffe``, ``from caffe[.x] import`` ->
  ``from protoseg.caffe[.x] import``, ``sys.path.insert/append(...)`` lines (``caffe_root`` and Python 2.7
  path hacks) dropped, tabs expanded to 8 columns (how Python 2 read them; Python 3 refuses the mix);
* per script, listed in its test: Python 2 ``print`` statements as calls, ``xrange`` -> ``range``, imports of
  packages not installed or not drawable here (matplotlib, scipy, sklearn, numba) and ``cv2`` GUI calls.

Everything else runs as written, with the arguments and files the script expects made in ``tmp_path``. No
caffemodel is published with the prototxts, so weights are random (``random_weights``), and nets with VGG-sized
layers are thinned (``thin``: every ``num_output`` of 64 or more divided by 8, every layer, kernel, pad,
crop, dilation and class count kept) so that their weights take a few MB and a forward well under a second.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from PIL import Image

from protoseg import caffe
from protoseg.errors import ProtosegError, ProtosegWarning
from protoseg.io.weights import write_weights
from protoseg.loader import open_net
from protoseg.proto import caffe_pb2
from protoseg.run.demo import DEMO_DIR
from protoseg.run.metrics import ConfusionMatrix
from protoseg.run.palette import labels_from_image, overlay, voc_palette
from tests.conftest import IMAGES, PUBLISHED, SHARED, need
from tests.nets import random_weights, thin

CLIENTS = SHARED / "clients"
DEMO_PROTOTXT = DEMO_DIR / "demo.prototxt"
#: FCN's VOC mean (B, G, R), as infer.py and its VOC data layer subtract it.
FCN_MEAN = np.array((104.00698793, 116.66876762, 122.67891434))


# ---------------------------------------------------------------------------------------------- helpers
def _source(path: Path, patches: Sequence[tuple[str, str]] = (), prints: bool = False) -> str:
    """The script's text with its caffe imports pointing at protoseg, and ``patches`` (each must occur)."""
    text = path.read_text().expandtabs(8)
    text, n = re.subn(r"^([ \t]*)import caffe[ \t]*$", r"\1from protoseg import caffe", text, flags=re.MULTILINE)
    text, m = re.subn(r"^([ \t]*)from caffe((?:\.\w+)*) import", r"\1from protoseg.caffe\2 import", text,
                      flags=re.MULTILINE)
    assert n + m, f"{path} imports no caffe"
    text = re.sub(r"^[ \t]*sys\.path\.(insert|append)\(.*\)[ \t]*$", "", text, flags=re.MULTILINE)
    for old, new in patches:
        assert old in text, f"{path} no longer has {old!r}"
        text = text.replace(old, new + "\n" * (old.count("\n") - new.count("\n")))  # keep line numbers
    return _print_calls(text) if prints else text


def _print_calls(text: str) -> str:
    """Python 2 ``print a, b`` statements as ``print(a, b)`` (a trailing backslash continues one)."""
    lines, out = text.split("\n"), []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)print\s+(?![\s(=])(.*)$", lines[i])
        if match:
            body, start = match.group(2).rstrip(), i
            while body.endswith("\\"):
                i += 1
                body = body[:-1].rstrip() + " " + lines[i].strip()
            out.append(f"{match.group(1)}print({body})")
            out.extend([""] * (i - start))  # keep line numbers
        else:
            out.append(lines[i])
        i += 1
    return "\n".join(out)


def _cpu_fallback(monkeypatch: pytest.MonkeyPatch) -> Any:
    """For scripts that call ``caffe.set_mode_gpu()`` unconditionally: without CUDA (made so here, since the
    comparisons are bit-exact on the CPU) the façade warns and stays on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return pytest.warns(ProtosegWarning, match="no CUDA device")


def _run(path: Path, text: str, name: str = "__main__", **names: Any) -> dict[str, Any]:
    """Execute the script's text as module ``name`` (``__main__`` runs its main block) and return its globals;
    ``names`` are globals set before it runs (stand-ins for modules that are not installed)."""
    namespace = {"__name__": name, "__file__": str(path), **names}
    exec(compile(text, str(path), "exec"), namespace)  # noqa: S102  (running the client scripts is the point)
    return namespace


def _module(name: str, path: Path, text: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = str(path)
    exec(compile(text, str(path), "exec"), module.__dict__)  # noqa: S102
    return module


def _graph(prototxt: Path, weights: Path, shape: Sequence[int] | None = None) -> Callable[[np.ndarray], Any]:
    """protoseg's own graph for the net: a function from an input array to its output array(s)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = open_net(prototxt, weights, input_shapes={"data": tuple(shape)} if shape else None).graph()

    def run(x: np.ndarray) -> Any:
        with torch.no_grad():
            out = gm(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return {k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else out.numpy()

    return run


def _photo(name: str, dst: Path, size: tuple[int, int] | None = None) -> Path:
    """A real photo from ../shared/images, resized to ``size`` (W, H) when given, saved losslessly as PNG."""
    image = Image.open(need(IMAGES / name)).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.BILINEAR)
    image.save(dst)
    return dst


def _label_png(name: str, dst: Path, size: tuple[int, int]) -> np.ndarray:
    """The VOC label map ``name`` as grey class indices at ``size`` (W, H), saved as an 8-bit PNG."""
    labels = labels_from_image(Image.open(need(IMAGES / name)).convert("RGB"))
    labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(size, Image.NEAREST))
    Image.fromarray(labels).save(dst)  # uint8: an 8-bit grey PNG
    return labels


def _bgr(path: Path) -> np.ndarray:
    """An image as Caffe's OpenCV reads it: H x W x 3 float32, B, G, R."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)[:, :, ::-1]


class _Pyplot:
    """Stands in for matplotlib.pyplot (not installed, and no display here): keeps what the script shows."""

    def __init__(self) -> None:
        self.shown: list[np.ndarray] = []

    def imshow(self, image: np.ndarray, **_: Any) -> None:
        self.shown.append(np.array(image))

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def _input_size(height: int, width: int) -> Callable[[Any], None]:
    """A ``thin`` edit giving a net with an ``input_shape`` header another input height and width."""

    def edit(net: Any) -> None:
        net.input_shape[0].dim[2:] = [height, width]

    return edit


def _lut_png(dst: Path, colours: np.ndarray) -> Path:
    """A 1 x 256 colour table PNG as SegNet's camvid12.png and ENet's cityscapes19.png (RGB; rest black)."""
    table = np.zeros((1, 256, 3), np.uint8)
    table[0, : len(colours)] = colours
    Image.fromarray(table).save(dst)
    return dst


# ---------------------------------------------------------------------------------------------- FCN
def test_fcn_infer_with_vis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fcn/infer.py from its folder layout (voc-fcn8s/, demo/image.jpg), importing fcn/vis.py.

    Patched: vis.py ``xrange`` -> ``range``. Left out: nothing (the net is voc-fcn8s/deploy.prototxt thinned,
    with random weights; demo/image.jpg is a real VOC photo)."""
    infer, vis_path = need(CLIENTS / "fcn/infer.py"), need(CLIENTS / "fcn/vis.py")
    model = thin(need(PUBLISHED / "fcn/voc-fcn8s/deploy.prototxt"), tmp_path / "voc-fcn8s/deploy.prototxt")
    weights = random_weights(model, tmp_path / "voc-fcn8s/fcn8s-heavy-pascal.caffemodel")
    (tmp_path / "demo").mkdir()
    shutil.copyfile(need(IMAGES / "example_pascal_voc.jpg"), tmp_path / "demo/image.jpg")
    vis = _module("vis", vis_path, vis_path.read_text().replace("xrange(", "range("))
    monkeypatch.setitem(sys.modules, "vis", vis)
    monkeypatch.chdir(tmp_path)
    ns = _run(infer, _source(infer))

    image = np.asarray(Image.open("demo/image.jpg"), dtype=np.float32)
    x = ((image[:, :, ::-1] - FCN_MEAN).transpose(2, 0, 1))[None]
    scores = _graph(model, weights)(x)
    np.testing.assert_array_equal(ns["net"].blobs["score"].data, scores)
    labels = scores[0].argmax(0)
    assert len(np.unique(labels)) > 3
    np.testing.assert_array_equal(ns["out"], labels)
    np.testing.assert_array_equal(vis.make_palette(21), voc_palette(21))
    np.testing.assert_array_equal(np.asarray(Image.open("demo/output.png")), voc_palette(21)[labels])
    shown = np.asarray(Image.open("demo/visualization.jpg"), dtype=np.float32)  # a JPEG: compare loosely
    expected = np.asarray(overlay(Image.open("demo/image.jpg"), labels, voc_palette(21)), dtype=np.float32)
    assert np.abs(_blocks(shown) - _blocks(expected)).mean() < 2.0


def _blocks(image: np.ndarray) -> np.ndarray:
    """Means of 8 x 8 blocks, which a JPEG keeps well where it blurs a noisy label map's edges."""
    h, w = image.shape[0] // 8 * 8, image.shape[1] // 8 * 8
    return image[:h, :w].reshape(h // 8, 8, w // 8, 8, -1).mean((1, 3))


class _PaletteFromarray:
    """``PIL.Image`` for score.py, whose ``Image.fromarray(labels, mode='P')`` has no palette: Pillow 13 (installed
    here) writes such an image as a 1-bit PNG with one colour, losing the labels, where the Pillow of its day
    wrote a grey ramp. This gives those images that grey ramp, so the PNGs keep what score.py wrote."""

    def __getattr__(self, name: str) -> Any:
        return getattr(Image, name)

    @staticmethod
    def fromarray(array: np.ndarray, mode: str | None = None) -> Image.Image:
        if mode != "P":
            return Image.fromarray(array) if mode is None else Image.fromarray(array, mode)
        image = Image.frombytes("P", array.shape[::-1], np.ascontiguousarray(array, np.uint8).tobytes())
        image.putpalette(np.repeat(np.arange(256, dtype=np.uint8), 3).tolist())
        return image


class _VOCFeed:
    """The dataset score.py iterates, playing FCN's VOCSegDataLayer (a Python layer protoseg never imports):
    before each ``net.forward()`` it loads that image (B, G, R minus the mean, C x H x W) and its label map
    (1 x 1 x H x W) into the test net's blobs, as the layer's forward would."""

    def __init__(self, net: caffe.Net, items: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
        self.net, self.items = net, items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        for idx, data, label in self.items:
            self.net.blobs["data"].reshape(1, *data.shape)
            self.net.blobs["data"].data[...] = data
            self.net.blobs["label"].reshape(1, 1, *label.shape)
            self.net.blobs["label"].data[...] = label
            yield idx


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # score.py: 0/0 for absent classes
def test_fcn_score_seg_tests_on_solver_nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """fcn/score.py's ``seg_tests`` as FCN's solve.py calls it: ``SGDSolver('solver.prototxt')``,
    ``solver.net.copy_from(weights)``, then ``score.seg_tests(solver, 'segs-{}', val, layer='score')``.

    Patched: Python 2 print statements; score.py's ``Image`` is ``_PaletteFromarray`` (Pillow 13 drift). Left
    out: ``solver.step`` (training; it raises). The VOC data layer's part is played by ``_VOCFeed`` over three
    real photos with label maps."""
    score_py = need(CLIENTS / "fcn/score.py")
    score = _module("score", score_py, _source(score_py, prints=True))
    score.Image = _PaletteFromarray()
    for phase in ("train", "val"):
        thin(need(PUBLISHED / f"fcn/voc-fcn8s/{phase}.prototxt"), tmp_path / f"{phase}.prototxt")
    weights = random_weights(tmp_path / "val.prototxt", tmp_path / "fcn8s.caffemodel")
    (tmp_path / "solver.prototxt").write_text(
        'train_net: "train.prototxt"\ntest_net: "val.prototxt"\ntest_iter: 3\ntest_interval: 999999999\n'
        'lr_policy: "fixed"\nbase_lr: 1e-14\nmomentum: 0.99\nmax_iter: 100000\nweight_decay: 0.0005\n'
        'test_initialization: false\n')
    items = []
    for name in ("dog", "people", "sheep"):
        image = np.asarray(Image.open(need(IMAGES / f"{name}.jpg")).convert("RGB"), dtype=np.float32)
        label = labels_from_image(Image.open(need(IMAGES / f"{name}_pascal_voc.png")).convert("RGB"))
        label = label.astype(np.float32)
        label[:4] = 255  # a void band, which the loss and the scores skip
        items.append((name, (image[:, :, ::-1] - FCN_MEAN).transpose(2, 0, 1), label))
    monkeypatch.chdir(tmp_path)

    solver = caffe.SGDSolver("solver.prototxt")
    solver.net.copy_from(str(weights))
    with pytest.raises(ProtosegError, match="inference only"):
        solver.step(4000)
    test_net = solver.test_nets[0]
    assert test_net.params["score_fr"][0].data.max() == 0  # its own weights until seg_tests shares them
    score.seg_tests(solver, "segs-{}", _VOCFeed(test_net, items), layer="score")
    assert test_net.params["score_fr"][0] is solver.net.params["score_fr"][0]

    graph = _graph(tmp_path / "val.prototxt", weights)
    hist, losses = ConfusionMatrix(21), []
    for name, data, label in items:
        scores = graph(data[None])
        pred = scores[0].argmax(0)
        np.testing.assert_array_equal(np.asarray(Image.open(f"segs-0/{name}.png")), pred)
        hist.update(pred, label.astype(np.int64))
        valid = label != 255
        logp = torch.log_softmax(torch.from_numpy(scores), 1)[0].numpy().transpose(1, 2, 0)
        floor = np.log(np.finfo(np.float32).tiny)  # Caffe's loss takes log(max(p, FLT_MIN))
        losses.append(-np.maximum(logp[valid, label[valid].astype(int)], floor).astype(np.float64).sum())
    printed = {m.group(1): float(m.group(2)) for m in
               re.finditer(r"Iteration 0 (loss|overall accuracy|mean accuracy|mean IU|fwavacc) (\S+)",
                           capsys.readouterr().out)}
    assert printed["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert printed["overall accuracy"] == pytest.approx(hist.pixel_accuracy(), rel=1e-12)
    assert printed["mean accuracy"] == pytest.approx(hist.mean_class_accuracy(), rel=1e-12)
    assert printed["mean IU"] == pytest.approx(hist.mean_iou(), rel=1e-12)
    assert 0 < printed["mean IU"] < 1 and "fwavacc" in printed


# ---------------------------------------------------------------------------------------------- SegNet
def _segnet_data(tmp_path: Path, model: str, lines: int = 1) -> tuple[Path, list[Path]]:
    """A thinned SegNet net whose DenseImageData ``source`` lists ``lines`` real photos at CamVid's 480 x 360
    (PNG, so Caffe's OpenCV and protoseg's Pillow decode the same pixels) with label maps."""
    pairs = [("cat.jpg", "dog_pascal_voc.png"), ("sheep.jpg", "sheep_pascal_voc.png")][:lines]
    listed = []
    for i, (photo, label) in enumerate(pairs):
        listed.append(_photo(photo, tmp_path / f"image{i}.png", (480, 360)))
        _label_png(label, tmp_path / f"label{i}.png", (480, 360))
    (tmp_path / "test.txt").write_text("".join(f"{tmp_path}/image{i}.png {tmp_path}/label{i}.png\n"
                                               for i in range(lines)))

    def source(net: Any) -> None:
        net.layer[0].dense_image_data_param.source = str(tmp_path / "test.txt")

    return thin(need(PUBLISHED / model), tmp_path / Path(model).name, edit=source), listed


def test_segnet_test_segmentation_camvid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """segnet/test_segmentation_camvid.py --model segnet_inference.prototxt --weights W --iter 2: each
    ``net.forward()`` reads the next photo of the DenseImageData list, as in caffe-segnet.

    Patched: Python 2 print; imports of matplotlib.pyplot (replaced by ``_Pyplot``, which keeps the shown
    images), pylab, scipy and sklearn (not installed; unused but for plotting). Left out: the plot windows."""
    script = need(CLIENTS / "segnet/test_segmentation_camvid.py")
    model, photos = _segnet_data(tmp_path, "segnet/segnet_inference.prototxt", lines=2)
    weights = random_weights(model, tmp_path / "segnet.caffemodel", input_shapes={"data": (1, 3, 360, 480)})
    text = _source(script, [("import matplotlib.pyplot as plt\n", ""), ("import scipy\n", ""),
                            ("import pylab\n", ""), ("from sklearn.preprocessing import normalize\n", "")],
                   prints=True)
    monkeypatch.setattr(sys, "argv", ["test_segmentation_camvid.py", "--model", str(model), "--weights",
                                      str(weights), "--iter", "2"])
    plt = _Pyplot()
    with _cpu_fallback(monkeypatch):
        ns = _run(script, text, plt=plt)

    graph = _graph(model, weights, (1, 3, 360, 480))
    assert len(plt.shown) == 6  # image, ground truth, prediction per iteration
    for i, photo in enumerate(photos):
        x = _bgr(photo).transpose(2, 0, 1)[None]
        prob = graph(x)
        ind = prob[0].argmax(0)
        assert len(np.unique(ind)) > 3
        np.testing.assert_array_equal(plt.shown[3 * i + 2], ns["label_colours"][ind] / 255.0)
        np.testing.assert_allclose(plt.shown[3 * i], x[0].transpose(1, 2, 0)[:, :, ::-1] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ns["predicted"], prob)  # the last forward's prob blob


def test_segnet_test_bayesian_segnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """segnet/test_bayesian_segnet.py --model bayesian_segnet_camvid.prototxt (4 Monte Carlo samples: its
    Dropout keeps sampling at test time) --weights W --colours camvid12.png --data test.txt.

    Patched: Python 2 print; imports of scipy, scipy.io and matplotlib (replaced by ``_Pyplot``). Left out: the
    plot windows. The samples use torch's generator, seeded the same before the script and before the
    reference run, which builds its graph the same way, so both draw the same masks."""
    pytest.importorskip("cv2")  # the script reads its colour table and labels with OpenCV
    script = need(CLIENTS / "segnet/test_bayesian_segnet.py")
    model = thin(need(PUBLISHED / "segnet/bayesian_segnet_camvid.prototxt"), tmp_path / "bayesian.prototxt")
    weights = random_weights(model, tmp_path / "bayesian.caffemodel")
    photo = _photo("cat.jpg", tmp_path / "cat.png")  # 480 x 360 already
    gt = _label_png("dog_pascal_voc.png", tmp_path / "cat_gt.png", (480, 360))
    camvid = voc_palette(12)
    _lut_png(tmp_path / "camvid12.png", camvid[:, ::-1])  # cv2 reads it as B, G, R: the LUT gives RGB back
    (tmp_path / "test.txt").write_text(f"{photo} {tmp_path / 'cat_gt.png'}\n")
    text = _source(script, [(f"import {m}\n", "") for m in ("scipy", "scipy.io as sio", "matplotlib",
                                                              "matplotlib.colors as colors", "matplotlib.cm as cmx",
                                                              "matplotlib.pyplot as plt")], prints=True)
    monkeypatch.setattr(sys, "argv", ["test_bayesian_segnet.py", "--model", str(model), "--weights", str(weights),
                                      "--colours", str(tmp_path / "camvid12.png"), "--data",
                                      str(tmp_path / "test.txt")])
    plt = _Pyplot()
    torch.manual_seed(0)
    with _cpu_fallback(monkeypatch):
        ns = _run(script, text, plt=plt)

    x = np.repeat((np.asarray(Image.open(photo), np.float32)[:, :, ::-1]).transpose(2, 0, 1)[None], 4, axis=0)
    torch.manual_seed(0)
    prob = _graph(model, weights)(x)
    assert not np.array_equal(prob[0], prob[1])  # the samples differ: dropout is on
    np.testing.assert_allclose(ns["predicted"], prob, rtol=1e-5, atol=1e-6)
    ind = prob.mean(0).argmax(0)
    assert len(np.unique(ind)) > 3
    table = np.zeros((256, 3), np.uint8)
    table[:12] = camvid
    segmentation, ground_truth, uncertainty = plt.shown[1], plt.shown[2], plt.shown[3]
    np.testing.assert_array_equal(segmentation, table[ind])
    np.testing.assert_array_equal(ground_truth, table[gt])
    np.testing.assert_allclose(uncertainty, prob.var(0).mean(0), rtol=1e-4, atol=1e-7)


def test_segnet_bn_absorber(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """segnet/BN-absorber.py --model segnet_inference.prototxt --weights W --out_dir out --gpu 1: folds each BN
    into the convolution before it, writes a prototxt without BN and its caffemodel; both load back into
    ``caffe.Net`` and score as the original net (float rounding apart).

    Patched: Python 2 print, ``xrange``. Left out: nothing."""
    script = need(CLIENTS / "segnet/BN-absorber.py")
    model, (photo,) = _segnet_data(tmp_path, "segnet/segnet_inference.prototxt")
    weights = random_weights(model, tmp_path / "segnet.caffemodel", input_shapes={"data": (1, 3, 360, 480)})
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["BN-absorber.py", "--model", str(model), "--weights", str(weights),
                                      "--out_dir", str(out), "--gpu", "1"])
    _run(script, _source(script, [("xrange(", "range(")], prints=True))

    original, merged = caffe_pb2.NetParameter(), caffe_pb2.NetParameter()
    text_format.Merge(model.read_text(), original)
    text_format.Merge((out / "bn_conv_merged_model.prototxt").read_text(), merged)
    assert [layer.name for layer in merged.layer] == [layer.name for layer in original.layer if layer.type != "BN"]
    net = caffe.Net(str(out / "bn_conv_merged_model.prototxt"), str(out / "bn_conv_merged_weights.caffemodel"),
                    caffe.TEST)
    net.forward()  # its DenseImageData reads the photo
    x = _bgr(photo).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(net.blobs["data"].data, x)
    prob = _graph(model, weights, (1, 3, 360, 480))(x)  # the original net, BN and all
    assert len(np.unique(prob[0].argmax(0))) > 3
    # Folding changes float rounding, and SegNet's Upsample puts each value where its pooling window's max was:
    # a near-tie in a window of the first pooling moves a value to the next pixel (2 of pool1_D's 1.4M values
    # here), and the decoder's convolutions spread that over a few hundred scores. All else agrees.
    close = np.isclose(net.blobs["prob"].data, prob, rtol=1e-4, atol=1e-6)
    assert close.mean() > 0.999
    assert (net.blobs["prob"].data.argmax(1) == prob.argmax(1)).mean() > 0.999


# ---------------------------------------------------------------------------------------------- ENet
def test_enet_test_segmentation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """enet/test_segmentation.py --model enet_deploy_final.prototxt --weights W --colours cityscapes19.png
    --input_image people.png --out_dir out/ --gpu 1, as ENet's tutorial runs it. The script resizes the photo
    to the net's Input shape; that is made 256 x 512 instead of 512 x 1024 (a copy of the prototxt), to keep
    the two forwards quick.

    Patched: ``cv2.imshow`` and ``cv2.waitKey`` (no display here) dropped. Left out: the window."""
    cv2 = pytest.importorskip("cv2")
    script = need(CLIENTS / "enet/test_segmentation.py")

    def half_size(net: Any) -> None:
        net.layer[0].input_param.shape[0].dim[2:] = [256, 512]

    model = thin(need(PUBLISHED / "enet/enet_deploy_final.prototxt"), tmp_path / "enet.prototxt", factor=1,
                  edit=half_size)
    weights = random_weights(model, tmp_path / "enet.caffemodel")
    colours = voc_palette(19)
    _lut_png(tmp_path / "cityscapes19.png", colours)
    photo = _photo("people.jpg", tmp_path / "people.png")  # PNG in, PNG out (the script keeps the extension)
    (tmp_path / "out").mkdir()
    text = _source(script, [('    cv2.imshow("ENet", prediction_rgb)\n', ""), ("key = cv2.waitKey(0)", "key = -1")])
    monkeypatch.setattr(sys, "argv", ["test_segmentation.py", "--model", str(model), "--weights", str(weights),
                                      "--colours", str(tmp_path / "cityscapes19.png"), "--input_image", str(photo),
                                      "--out_dir", f"{tmp_path}/out/", "--gpu", "1"])
    ns = _run(script, text)

    x = cv2.resize(_bgr(photo), (512, 256)).transpose(2, 0, 1)[None]
    scores = _graph(model, weights)(x)
    np.testing.assert_array_equal(ns["out"]["deconv6_0_0"], scores)
    labels = scores[0].argmax(0)
    assert len(np.unique(labels)) > 3
    written = cv2.imread(str(tmp_path / "out/people_enet.png"))  # the LUT's RGB, written as if B, G, R
    np.testing.assert_array_equal(written, colours[labels])


def _enet_absorbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    script = need(CLIENTS / "enet/BN-absorber-enet.py")
    model = need(PUBLISHED / "enet/enet_deploy.prototxt")
    weights = random_weights(model, tmp_path / "bn_weights.caffemodel")
    out = tmp_path / "final_model_weights"
    monkeypatch.setattr(sys, "argv", ["BN-absorber-enet.py", "--model", str(model), "--weights", str(weights),
                                      "--out_dir", str(out), "--gpu", "1"])
    _run(script, _source(script, [("xrange(", "range(")], prints=True))
    return model, weights, out


def test_enet_bn_absorber(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """enet/BN-absorber-enet.py --model enet_deploy.prototxt --weights bn_weights.caffemodel --out_dir D --gpu 1,
    as ENet's tutorial runs it: the prototxt it writes is the published enet_deploy_final.prototxt, and its
    weights score as the original net.

    Patched: Python 2 print, ``xrange``. Left out: nothing. ``drop_absorber_weights`` returns inside its loop,
    so only the first SpatialDropout (drop1_0_3, p = 0.01, two layers after conv1_0_2) is folded, as a
    1 / (1 - p) scale on conv1_0_2; protoseg runs SpatialDropout as the identity, so the written net equals
    the original with that one branch scaled by 1 / (1 - p), which the reference below applies by surgery."""
    model, weights, out = _enet_absorbed(tmp_path, monkeypatch)
    written, published = caffe_pb2.NetParameter(), caffe_pb2.NetParameter()
    text_format.Merge((out / "bn_conv_merged_model.prototxt").read_text(), written)
    text_format.Merge(need(PUBLISHED / "enet/enet_deploy_final.prototxt").read_text(), published)
    assert text_format.MessageToString(written) == text_format.MessageToString(published)
    assert sorted(p.name for p in out.iterdir()) == ["bn_conv_merged_model.prototxt",
                                                      "bn_conv_merged_weights.caffemodel"]  # temp files removed

    original = caffe_pb2.NetParameter()
    text_format.Merge(model.read_text(), original)
    first = next(i for i, layer in enumerate(original.layer) if layer.type == "Python")
    assert (original.layer[first].name, original.layer[first - 2].name) == ("drop1_0_3", "conv1_0_2")
    assert "'p': '0.01'" in original.layer[first].python_param.param_str

    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 128, 256)).astype(np.float32)  # a small input
    net = caffe.Net(str(out / "bn_conv_merged_model.prototxt"), str(out / "bn_conv_merged_weights.caffemodel"),
                    caffe.TEST)
    got = net.forward(data=x)["deconv6_0_0"].copy()
    reference = caffe.Net(str(model), str(weights), caffe.TEST)
    plain = reference.forward(data=x)["deconv6_0_0"].copy()
    np.testing.assert_array_equal(plain, _graph(model, weights)(x))
    scale = 1 / (1 - 0.01)
    for blob in reference.params["conv1_0_2"]:
        blob.data[...] *= scale
    reference.params["bn1_0_2"][1].data[...] *= scale  # BN(s * conv) + s * shift = s * BN(conv)
    want = reference.forward(data=x)["deconv6_0_0"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert np.abs(got - plain).max() > 0.01 * np.abs(plain).max()  # the fold is visible: the check can fail


# ---------------------------------------------------------------------------------------------- Dilation
CITYSCAPES_MEAN = [72.39239876, 82.90891754, 73.15835921]


def test_dilation_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dilation/predict.py cityscapes photo.png -o out.png --gpu -1, with the files it reads beside it
    (``__file__`` is set to tmp_path/predict.py): datasets/cityscapes.json, models/dilation10_cityscapes_deploy
    .prototxt and pretrained/dilation10_cityscapes.caffemodel.

    The deploy net is thinned and its input made 436 x 436 instead of 1396 x 1396, so a tile predicts 64 x 64
    instead of 1024 x 1024; the 64 x 128 photo then takes two tiles, as a 1024 x 2048 Cityscapes frame does at
    full size (predict.py needs the image to be whole tiles when zoom is 1). Patched: the imports of numba (not
    installed) and util (not among the clients; only its interp_map is used, when zoom > 1, and Cityscapes'
    zoom is 1). Left out: nothing."""
    cv2 = pytest.importorskip("cv2")
    script = need(CLIENTS / "dilation/predict.py")

    model = thin(need(PUBLISHED / "dilation/dilation10_cityscapes_deploy.prototxt"),
                  tmp_path / "models/dilation10_cityscapes_deploy.prototxt", edit=_input_size(436, 436))
    weights = random_weights(model, tmp_path / "pretrained/dilation10_cityscapes.caffemodel")
    palette = voc_palette(19)
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets/cityscapes.json").write_text(json.dumps(
        {"palette": palette.tolist(), "mean": CITYSCAPES_MEAN, "dilation": 10, "zoom": 1}))
    photo = _photo("people.jpg", tmp_path / "photo.png", (128, 64))
    monkeypatch.setattr(sys, "argv", ["predict.py", "cityscapes", str(photo), "-o", str(tmp_path / "out.png"),
                                      "--gpu", "-1"])
    text = _source(script, [("import numba\n", ""), ("import util\n", "")])
    _run(tmp_path / "predict.py", text)

    image = _bgr(photo) - np.float32(CITYSCAPES_MEAN)
    padded = np.pad(image, ((186, 186), (186, 186), (0, 0)), mode="reflect")  # cv2.BORDER_REFLECT_101
    graph = _graph(model, weights)
    prob = np.concatenate([graph(padded[:, 64 * w:64 * w + 436].transpose(2, 0, 1)[None])[0] for w in range(2)],
                          axis=2)
    labels = prob.argmax(0)
    assert labels.shape == (64, 128) and len(np.unique(labels)) > 3
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out.png"))[:, :, ::-1], palette[labels])


def test_dilation_network_writes_the_published_front_end(tmp_path: Path) -> None:
    """dilation/network.py's builders through ``caffe.NetSpec``/``caffe.layers``/``caffe.params``, called as
    the repository's test.py ``make_frontend_vgg`` calls them, write the front end of the published
    dilation8_camvid_deploy.prototxt layer for layer (fillers cleared: the published deploy files carry none),
    and that net computes what the published one does.

    Patched: nothing but the imports. Left out: ``build_context``, whose identity fillers set
    ``num_groups``, a FillerParameter field of Dilation's Caffe fork that protoseg's schema lacks (asserted
    below), and the fork's training data layers (``make_image_label_data``, ``make_bin_label_data``)."""
    path = need(CLIENTS / "dilation/network.py")
    network = _module("network", path, _source(path))
    spec = caffe.NetSpec()
    spec.data = network.make_input_data([436, 436])
    last, final_name = network.build_frontend_vgg(spec, spec.data, 11)
    spec.prob = network.make_prob(last)
    generated = spec.to_proto()
    published = caffe_pb2.NetParameter()
    text_format.Merge(need(PUBLISHED / "dilation/dilation8_camvid_deploy.prototxt").read_text(), published)
    front = list(published.layer)[: [layer.name for layer in published.layer].index(final_name) + 1]
    assert [layer.type for layer in generated.layer] == ["Input"] + [layer.type for layer in front] + ["Softmax"]
    for layer, want in zip(generated.layer[1:-1], front):
        if layer.HasField("convolution_param"):
            layer.convolution_param.ClearField("weight_filler")
            layer.convolution_param.ClearField("bias_filler")
        assert text_format.MessageToString(layer) == text_format.MessageToString(want)

    context = caffe.NetSpec()  # test.py's make_context
    context.data = network.make_input_data([80, 80], 11)
    network.build_context(context, context.data, 11, 8)
    with pytest.raises(ProtosegError, match="num_groups"):
        context.to_proto()
    train = caffe.NetSpec()
    train.data, train.label = caffe.layers.Input(ntop=2, input_param={"shape": [{"dim": [1, 11, 8, 8]}] * 2})
    train.upsample = network.make_upsample(train.data, 11)
    train.loss = network.make_softmax_loss(train.upsample, train.label)
    train.accuracy = network.make_accuracy(train.upsample, train.label)
    layers = {layer.name: layer for layer in train.to_proto().layer}
    assert layers["loss"].loss_param.normalization == caffe_pb2.LossParameter.VALID
    assert layers["loss"].loss_param.ignore_label == layers["accuracy"].accuracy_param.ignore_label == 255
    assert layers["upsample"].convolution_param.group == 11 and layers["upsample"].param[0].lr_mult == 0
    assert list(layers["data"].top) == ["data", "label"]

    (tmp_path / "generated.prototxt").write_text(text_format.MessageToString(generated))
    mine = thin(tmp_path / "generated.prototxt", tmp_path / "generated_thin.prototxt")
    theirs = thin(need(PUBLISHED / "dilation/dilation8_camvid_deploy.prototxt"), tmp_path / "camvid.prototxt",
                   edit=_input_size(436, 436))
    weights = random_weights(theirs, tmp_path / "camvid.caffemodel")
    x = np.random.default_rng(1).uniform(-100, 100, (1, 3, 436, 436)).astype(np.float32)
    net = caffe.Net(str(mine), str(weights), caffe.TEST)
    net.forward(data=x)
    reference = caffe.Net(str(theirs), str(weights), caffe.TEST)
    reference.forward(data=x)
    np.testing.assert_array_equal(net.blobs["final"].data, reference.blobs["final"].data)
    assert net.blobs["prob"].shape == (1, 11, 8, 8) and np.ptp(net.blobs["final"].data) > 0


# ---------------------------------------------------------------------------------------------- CRF-RNN
def test_crfasrnn_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """crfasrnn/crfasrnn_demo.py's ``main(['-i', photo, '-o', out.png, '-g', '-1'])``: FCN-8s and 10 mean-field
    iterations (TVG_CRFRNN_new_deploy.prototxt, thinned), the photo shrunk and padded by the script itself.

    Patched: ``xrange`` -> ``range``. The script's constants are set as a user edits them: ``_MODEL_DEF_FILE``
    and ``_MODEL_FILE`` to the files here, and ``_MAX_DIM`` to 128 instead of 500 (the padded input size; the
    permutohedral filtering at 500 x 500 takes seconds). Left out: nothing. What the script fed the net is
    recorded (``forward_all`` wrapped) and compared with the photo read here, then run through the graph."""
    script = need(CLIENTS / "crfasrnn/crfasrnn_demo.py")
    model = thin(need(PUBLISHED / "crfasrnn/TVG_CRFRNN_new_deploy.prototxt"), tmp_path / "crfrnn.prototxt")
    weights = random_weights(model, tmp_path / "crfrnn.caffemodel", input_shapes={"data": (1, 3, 128, 128)})
    photo = need(IMAGES / "sheep.jpg")  # 500 x 332
    ns = _run(script, _source(script, [("xrange(", "range(")]), name="crfasrnn_demo")
    ns.update(_MODEL_DEF_FILE=str(model), _MODEL_FILE=str(weights), _MAX_DIM=128)
    fed = []
    forward_all = caffe.Net.forward_all

    def recording(net: caffe.Net, blobs: Any = None, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        fed.append(inputs["data"].copy())
        return forward_all(net, blobs, **inputs)

    monkeypatch.setattr(caffe.Net, "forward_all", recording)
    ns["main"](["-i", str(photo), "-o", str(tmp_path / "out.png"), "-g", "-1"])

    (x,) = fed
    rows = int(332 * (128 / 500))  # 84: the script's resize cuts the fraction
    small = np.asarray(Image.open(photo).convert("RGB").resize((128, rows), Image.BILINEAR), np.float32)
    want = np.zeros((128, 128, 3), np.float32)
    want[:rows] = small[:, :, ::-1] - np.float32([123.68, 116.779, 103.939])  # as the script subtracts it
    assert x.shape == (1, 3, 128, 128)
    assert np.abs(x[0].transpose(1, 2, 0) - want).max() <= 1.0  # load_image's float round trip can cut 1 off
    labels = _graph(model, weights, (1, 3, 128, 128))(x)[0].argmax(0)[:rows]
    written = Image.open(tmp_path / "out.png")
    assert written.mode == "P" and len(np.unique(labels)) > 3
    np.testing.assert_array_equal(np.asarray(written), labels)
    np.testing.assert_array_equal(np.asarray(written.getpalette(), np.uint8).reshape(-1, 3), voc_palette(256))


# ---------------------------------------------------------------------------------------------- façade edges
TINY = """name: "tiny"
layer { name: "data" type: "DenseImageData" top: "data" top: "label"
  dense_image_data_param { source: "list.txt" batch_size: 2 }
  transform_param { mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 %s } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""


def test_facade_data_layer_loss_solver_and_net_spec_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the scripts above lean on, on a tiny net: DenseImageData reads its list in batches and wraps,
    SoftmaxWithLoss is Caffe's (VALID normalization, ignore_label), and what the façade cannot do says so."""
    rng = np.random.default_rng(0)
    monkeypatch.chdir(tmp_path)
    images, labels = [], []
    for i in range(3):
        images.append(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
        labels.append(rng.integers(0, 3, (4, 5), dtype=np.uint8))
        labels[-1][0, 0] = 255
        Image.fromarray(images[-1]).save(f"im{i}.png")
        Image.fromarray(labels[-1]).save(f"lab{i}.png")
    Path("list.txt").write_text("".join(f"im{i}.png lab{i}.png\n" for i in range(3)))
    Path("tiny.prototxt").write_text(TINY % "")
    write_weights("tiny.caffemodel", {"score": [0.01 * rng.standard_normal((3, 3, 1, 1)).astype(np.float32),
                                                rng.standard_normal(3).astype(np.float32)]})  # no p < FLT_MIN
    net = caffe.Net("tiny.prototxt", "tiny.caffemodel", caffe.TEST)
    assert net.blobs["data"].shape == (2, 3, 4, 5) and net.blobs["label"].shape == (2, 1, 4, 5)
    assert np.isnan(net.blobs["loss"].data) and net.blobs["loss"].data.shape == ()
    for batch in ([0, 1], [2, 0]):  # the third image, then the list again from its start
        net.forward()
        want = np.stack([(images[i][:, :, ::-1].astype(np.float32) - [10, 20, 30]) * 0.5 for i in batch])
        np.testing.assert_allclose(net.blobs["data"].data, want.transpose(0, 3, 1, 2), rtol=1e-6)
        label = np.stack([labels[i] for i in batch])[:, None].astype(np.float32)
        np.testing.assert_array_equal(net.blobs["label"].data, label)
        logp = torch.log_softmax(torch.from_numpy(net.blobs["score"].data), 1).numpy()
        valid = label[:, 0] != 255
        picked = np.take_along_axis(logp, np.where(valid, label[:, 0], 0).astype(int)[:, None], 1)[:, 0]
        assert float(net.blobs["loss"].data) == pytest.approx(-picked[valid].sum() / valid.sum(), rel=1e-5)
    net.forward(data=np.zeros((1, 3, 4, 5), np.float32))  # arrays given by name win over the list
    assert net.blobs["data"].shape == (1, 3, 4, 5) and np.isnan(net.blobs["loss"].data)  # 2 labels, 1 image
    net.blobs["label"].reshape(1, 1, 4, 5)
    net.blobs["label"].data[...] = 7
    with pytest.raises(ProtosegError, match="label 7 is outside"):
        net.forward(data=np.zeros((1, 3, 4, 5), np.float32))

    Path("tiny_crop.prototxt").write_text(TINY % "crop_size: 2")
    with pytest.raises(ProtosegError, match="crop and mirror"):
        caffe.Net("tiny_crop.prototxt", caffe.TEST)
    Path("list.txt").unlink()
    with pytest.warns(ProtosegWarning, match="not a file"):
        unfed = caffe.Net("tiny.prototxt", caffe.TEST)
    assert unfed.blobs["label"].shape == (0,)  # left to the caller, as before

    other = caffe.Net(str(DEMO_PROTOTXT), caffe.TEST)
    Path("mismatch.prototxt").write_text(
        'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "conv1_1" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 5 '
        'kernel_size: 1 } }\n')
    with pytest.raises(ProtosegError, match="layer 'conv1_1' has blobs"):
        caffe.Net("mismatch.prototxt", caffe.TEST).share_with(other)
    Path("inline.prototxt").write_text('net_param { name: "x" }\n')
    with pytest.raises(ProtosegError, match="net_param"):
        caffe.SGDSolver("inline.prototxt")
    Path("generic.prototxt").write_text(f'net: "{DEMO_PROTOTXT}"\ntest_iter: 1\ntest_iter: 1\n')
    solver = caffe.SGDSolver("generic.prototxt")
    assert len(solver.test_nets) == 2 and solver.iter == 0 and solver.net.inputs == ["data"]
    with pytest.raises(ProtosegError, match="inference only"):
        solver.solve()
    with pytest.raises(ProtosegError, match="no NoSuchParameter"):
        _ = caffe.params.NoSuch
    assert caffe.params.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    spec = caffe.NetSpec()
    spec.data = caffe.layers.Input(input_param={"shape": {"dim": [1, 3, 8, 8]}})
    spec.pool = caffe.layers.Pooling(spec.data, pool=caffe.params.Pooling.AVE, kernel_size=2, stride=2)
    spec.silence = caffe.layers.Silence(spec.pool, ntop=0)
    assert [(layer.name, layer.type, list(layer.top)) for layer in spec.to_proto().layer] == [
        ("data", "Input", ["data"]), ("pool", "Pooling", ["pool"]), ("silence", "Silence", [])]
    assert spec.to_proto().layer[1].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
