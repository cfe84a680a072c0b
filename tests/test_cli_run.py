"""``protoseg run`` and ``protoseg eval`` in-process: every flag, and the bad inputs a user can give."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protoseg.cli import main
from protoseg.io.weights import write_weights
from protoseg.run.demo import DEMO_DIR
from protoseg.run.palette import VOC_PALETTE
from protoseg.run.predict import Segmenter
from protoseg.run.preprocess import read_image
from tests.conftest import FIXTURES, IMAGES, SHARED, materializer, need

PROTOTXT = DEMO_DIR / "demo.prototxt"
WEIGHTS = DEMO_DIR / "demo.caffemodel"
IMAGE_DIR = DEMO_DIR / "images"


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Two bundled demo images in a folder of their own."""
    folder = tmp_path / "in"
    folder.mkdir()
    out = []
    for src in sorted(IMAGE_DIR.glob("*.png"))[:2]:
        (folder / src.name).write_bytes(src.read_bytes())
        out.append(folder / src.name)
    return out


def _labels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.asarray(im)


def test_run_writes_palette_pngs_and_overlays(images: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["run", str(PROTOTXT), str(WEIGHTS), str(images[0].parent), "-o", str(out)]) == 0
    seg = Segmenter.from_caffe(PROTOTXT, WEIGHTS)
    for img_path, pred in zip(images, seg.predict(images)):
        img = read_image(img_path)
        with Image.open(out / f"{img_path.stem}.png") as im:
            assert im.mode == "P" and im.size == (img.shape[1], img.shape[0])
            pal = np.asarray(im.getpalette()[: 4 * 3]).reshape(4, 3)
            labels = np.asarray(im)
        assert np.array_equal(pal, VOC_PALETTE[:4])
        assert np.array_equal(labels, pred.labels)
        assert set(np.unique(labels)) <= {0, 1, 2, 3} and len(np.unique(labels)) > 1
        with Image.open(out / f"{img_path.stem}_overlay.jpg") as ov:
            assert ov.format == "JPEG" and ov.size == (img.shape[1], img.shape[0])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        n for p in images for n in (f"{p.stem}.png", f"{p.stem}_overlay.jpg"))
    assert f"wrote 4 files to {out}" in capsys.readouterr().out


def test_run_flags(images: list[Path], tmp_path: Path) -> None:
    palette = tmp_path / "pal.txt"
    palette.write_text("0 0 0\n255 0 0\n0 255 0\n0 0 255\n")
    out = tmp_path / "out"
    rc = main(["run", str(PROTOTXT), str(WEIGHTS), *map(str, images), "-o", str(out), "--batch-size", "2",
               "--palette", str(palette), "--save-scores"])
    assert rc == 0
    stem = images[0].stem
    with Image.open(out / f"{stem}.png") as im:
        assert im.getpalette()[:12] == [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]
        labels = np.asarray(im)
    scores = np.load(out / f"{stem}_scores.npy")
    assert scores.shape == (4,) + labels.shape and scores.dtype == np.float32
    assert np.array_equal(scores.argmax(0), labels)


def test_run_define_and_mean(images: list[Path], tmp_path: Path) -> None:
    templated = tmp_path / "templated.prototxt"
    templated.write_text(PROTOTXT.read_text().replace("mean_value: 128 mean_value: 128", "mean_value: ${M} "
                                                      "mean_value: ${M}"))
    assert main(["run", str(templated), str(WEIGHTS), str(images[0]), "-o", str(tmp_path / "a"), "-D", "M=128"]) == 0
    assert main(["run", str(PROTOTXT), str(WEIGHTS), str(images[0]), "-o", str(tmp_path / "b")]) == 0
    assert main(["run", str(PROTOTXT), str(WEIGHTS), str(images[0]), "-o", str(tmp_path / "c"),
                 "--mean", "0,0,0", "--save-scores"]) == 0
    stem = images[0].stem
    assert np.array_equal(_labels(tmp_path / "a" / f"{stem}.png"), _labels(tmp_path / "b" / f"{stem}.png"))
    seg = Segmenter.from_caffe(PROTOTXT, WEIGHTS, mean=(0, 0, 0))
    expected = next(iter(seg.predict([images[0]]))).scores
    assert np.array_equal(np.load(tmp_path / "c" / f"{stem}_scores.npy"), expected)


def test_run_crf(images: list[Path], tmp_path: Path) -> None:
    from protoseg.crf import PRESETS

    out = tmp_path / "out"
    assert main(["run", str(PROTOTXT), str(WEIGHTS), str(images[0]), "-o", str(out), "--crf", next(iter(PRESETS))]) == 0
    crf = _labels(out / f"{images[0].stem}_crf.png")
    assert crf.shape == _labels(out / f"{images[0].stem}.png").shape


def test_run_refuses_to_overwrite(images: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["run", str(PROTOTXT), str(WEIGHTS), str(images[0]), "-o", str(out)]
    assert main(args) == 0
    before = (out / f"{images[0].stem}.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--force" in err and err.count("\n") == 1
    assert (out / f"{images[0].stem}.png").stat().st_mtime_ns == before
    assert main(args + ["--force"]) == 0


@pytest.mark.parametrize("args, message", [
    (["fcn9s", "--weights", "w.caffemodel", "IMG"], "unknown model 'fcn9s'; did you mean 'fcn8s'?"),
    (["fcn8s", "IMG"], "zoo model 'fcn8s' needs --weights"),
    (["fcn8s", "--weights", str(WEIGHTS), "IMG"], "is this the caffemodel for this prototxt?"),
    ([str(PROTOTXT)], "give the caffemodel after the prototxt"),
    ([str(PROTOTXT), str(WEIGHTS)], "give at least one image"),
    ([str(PROTOTXT), str(WEIGHTS), "nothing.png"], "nothing.png: no such image file or folder"),
    ([str(PROTOTXT), "missing.caffemodel", "IMG"], "missing.caffemodel: no such file"),
    (["missing.prototxt", str(WEIGHTS), "IMG"], "missing.prototxt: no such file"),
    ([str(PROTOTXT), str(WEIGHTS), "IMG", "--mean", "1,2"], "--mean '1,2'"),
    ([str(PROTOTXT), str(WEIGHTS), "IMG", "--crf", "bogus"], "--crf 'bogus' is not a known preset"),
    ([str(PROTOTXT), str(WEIGHTS), "IMG", "--palette", "nopalette.txt"], "palette file not found"),
])
def test_run_bad_input(args: list[str], message: str, images: list[Path], tmp_path: Path, capsys) -> None:
    args = [str(images[0]) if a == "IMG" else a for a in args]
    assert main(["run", *args, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("protoseg: error: ") and message in err
    assert "Traceback" not in err


def test_run_unreadable_image(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert main(["run", str(PROTOTXT), str(WEIGHTS), str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: cannot read as an image" in err


def test_run_batch_size_must_be_positive(images: list[Path], tmp_path: Path) -> None:
    assert main(["run", str(PROTOTXT), str(WEIGHTS), str(images[0]), "-o", str(tmp_path), "-b", "0"]) == 2


def test_run_pt2_from_convert(images: list[Path], tmp_path: Path, capsys, monkeypatch) -> None:
    """A .pt2 written by `protoseg convert` runs with its recorded preprocessing, never through
    torch.export.load (which can run code from the file)."""
    pt2 = tmp_path / "demo.pt2"
    assert main(["convert", str(PROTOTXT), str(WEIGHTS), "-o", str(pt2)]) == 0
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: pytest.fail("torch.export.load was called"))
    capsys.readouterr()
    assert main(["run", str(pt2), str(images[0]), "-o", str(tmp_path / "o1"), "--save-scores"]) == 0
    scores = np.load(tmp_path / "o1" / f"{images[0].stem}_scores.npy")
    direct = Segmenter.from_caffe(PROTOTXT, WEIGHTS).predict_arrays([read_image(images[0])])[0].scores
    np.testing.assert_allclose(scores, direct, rtol=1e-6, atol=1e-6)  # mean and scale came along
    assert main(["run", str(pt2), str(images[0]), "-o", str(tmp_path / "o2"), "--mean", "0", "--save-scores"]) == 0
    assert not np.allclose(np.load(tmp_path / "o2" / f"{images[0].stem}_scores.npy"), scores)  # --mean overrides
    assert main(["run", str(pt2), str(images[0]), "-o", str(tmp_path / "o3"), "-w", str(WEIGHTS)]) == 2
    assert "holds its own weights" in capsys.readouterr().err


def test_run_refuses_pt2_not_written_by_protoseg(images: list[Path], tmp_path: Path, capsys) -> None:
    from protoseg.loader import load

    program = torch.export.export(load(PROTOTXT, WEIGHTS), (torch.zeros(1, 3, 48, 48),))
    pt2 = tmp_path / "plain.pt2"
    torch.export.save(program, str(pt2))
    assert main(["run", str(pt2), str(images[0]), "-o", str(tmp_path / "o"), "--mean", "128"]) == 2
    err = capsys.readouterr().err
    assert "not written by 'protoseg convert'" in err and "torch.export.load can run code" in err
    not_pt2 = tmp_path / "fake.pt2"
    not_pt2.write_bytes(b"nope")
    assert main(["run", str(not_pt2), str(images[0]), "-o", str(tmp_path / "o4"), "--mean", "0"]) == 2
    assert "cannot be read as a .pt2 archive" in capsys.readouterr().err


@pytest.mark.slow
def test_run_published_fcn_alexnet(tmp_path: Path) -> None:
    """A published net (Python data layer, so --mean) with fixture weights on a small real photo."""
    case = need(FIXTURES / "nets" / "fcn_alexnet_val")
    materialize = materializer()
    layers, types = materialize.weights(json.loads((case / "manifest.json").read_text()))
    weights = tmp_path / "w.caffemodel"
    materialize.write_binary(weights, layers, types, "v2")
    del layers
    photo = tmp_path / "cat.jpg"
    with Image.open(need(IMAGES / "cat.jpg")) as im:
        im.convert("RGB").resize((56, 40)).save(photo)
    prototxt = SHARED / "published" / "fcn" / "voc-fcn-alexnet" / "val.prototxt"
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["run", str(prototxt), str(weights), str(photo), "-o", str(out), "--mean",
                   "104.00699,116.66877,122.67892", "--save-scores"])
    assert rc == 0
    labels = _labels(out / "cat.png")
    assert labels.shape == (40, 56) and labels.max() < 21
    scores = np.load(out / "cat_scores.npy")
    assert scores.shape == (21, 40, 56) and np.array_equal(scores.argmax(0), labels)


# ------------------------------------------------------------------------------------------------ eval
@pytest.fixture
def colour_net(tmp_path: Path) -> tuple[Path, Path]:
    """An Input-layer net whose class is the image's strongest BGR channel: 0 blue, 1 green, 2 red."""
    prototxt = tmp_path / "colour.prototxt"
    prototxt.write_text("""
        name: "colour"
        layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
        layer { name: "score" type: "Convolution" bottom: "data" top: "score"
                convolution_param { num_output: 3 kernel_size: 1 } }
    """)
    weights = tmp_path / "colour.caffemodel"
    write_weights(weights, {"score": [np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), np.zeros(3, np.float32)]})
    return prototxt, weights


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """Two 32x32 images of 16x16 single-colour quadrants (JPEG-safe) and label PNGs with known mistakes."""
    root = tmp_path / "VOC"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    blue, green, red = (0, 0, 255), (0, 255, 0), (255, 0, 0)

    def quadrants(tl, tr, bl, br) -> np.ndarray:
        img = np.zeros((32, 32, 3), np.uint8)
        img[:16, :16], img[:16, 16:], img[16:, :16], img[16:, 16:] = tl, tr, bl, br
        return img

    Image.fromarray(quadrants(blue, green, red, blue)).save(root / "JPEGImages" / "a.jpg", quality=100)
    gt_a = np.zeros((32, 32), np.uint8)
    gt_a[:16, 16:], gt_a[16:, :16], gt_a[16:, 16:] = 1, 2, 1  # bottom right is predicted 0 but labelled 1
    Image.fromarray(quadrants(green, green, green, green)).save(root / "JPEGImages" / "b.jpg", quality=100)
    gt_b = np.ones((32, 32), np.uint8)
    gt_b[:16] = 255  # void: not scored
    for name, gt in (("a", gt_a), ("b", gt_b)):
        img = Image.fromarray(gt, "P")
        img.putpalette(VOC_PALETTE.tobytes())
        img.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("b\n")
    return root


def test_eval_hand_computed(colour_net, voc: Path, capsys) -> None:
    prototxt, weights = colour_net
    base = ["eval", str(prototxt), str(weights), "--dataset", str(voc), "--mean", "0"]
    assert main(base + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # class 0: TP 256, FP 256 -> 1/2; class 1: TP 256 + 512, FN 256 -> 3/4; class 2: TP 256 -> 1
    assert result["iou"] == pytest.approx([0.5, 0.75, 1.0])
    assert result["mean_iou"] == pytest.approx(0.75)
    assert result["pixel_accuracy"] == pytest.approx(1280 / 1536)
    assert result["confusion_matrix"] == [[256, 0, 0], [256, 768, 0], [0, 0, 256]]
    assert result["images"] == 2 and result["split"] == "val" and result["classes"] == ["0", "1", "2"]

    assert main(base + ["--limit", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_iou"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert main(base + ["--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "mean IoU        100.00%" in text and "pixel accuracy  100.00%" in text and "n/a" in text


@pytest.mark.parametrize("extra, message", [
    (["--mean", "0", "--split", "test"], "split list not found; splits found: train, val"),
    (["--mean", "0", "surplus"], "unexpected argument(s) surplus"),
    ([], "pass --mean B,G,R"),
])
def test_eval_bad_input(colour_net, voc: Path, extra: list[str], message: str, capsys) -> None:
    prototxt, weights = colour_net
    assert main(["eval", str(prototxt), str(weights), "--dataset", str(voc), *extra]) == 2
    assert message in capsys.readouterr().err


def test_eval_missing_dataset(colour_net, tmp_path: Path, capsys) -> None:
    prototxt, weights = colour_net
    assert main(["eval", str(prototxt), str(weights), "--mean", "0", "--dataset", str(tmp_path / "nope")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


BAYESIAN = """name: "bayesian"
input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" dropout_param { dropout_ratio: 0.5 sample_weights_test: true } }
layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }
"""


def test_run_samples_bayesian_segnet_dropout(images: list[Path], tmp_path: Path) -> None:
    """Dropout with sample_weights_test draws at test time: --samples N reports the mean and an uncertainty map,
    repeatably for one --seed."""
    net = tmp_path / "bayesian.prototxt"
    net.write_text(BAYESIAN)
    weights = tmp_path / "b.caffemodel"
    rng = np.random.default_rng(0)
    write_weights(weights, {"conv": [rng.standard_normal((3, 3, 1, 1)).astype(np.float32) * 0.1,
                                     np.zeros(3, np.float32)]})
    base = ["run", str(net), str(weights), str(images[0]), "--mean", "128", "--save-scores"]
    for out, extra in (("a", ["--samples", "8", "--seed", "1"]), ("b", ["--samples", "8", "--seed", "1"]),
                       ("c", ["--samples", "8", "--seed", "2"])):
        assert main([*base, "-o", str(tmp_path / out), *extra]) == 0
    stem = images[0].stem
    a, b, c = (np.load(tmp_path / out / f"{stem}_scores.npy") for out in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    variance = np.load(tmp_path / "a" / f"{stem}_variance.npy")
    assert variance.shape == a.shape and variance.max() > 0
    with Image.open(tmp_path / "a" / f"{stem}_uncertainty.png") as im:
        assert im.mode == "L" and im.size == (a.shape[2], a.shape[1])


MAP_NET = """input: "data" input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "edge" type: "Convolution" bottom: "data" top: "edge"
        convolution_param { num_output: 1 kernel_size: 3 pad: 1 } }
layer { name: "sigmoid" type: "Sigmoid" bottom: "edge" top: "prob" }
"""


@pytest.fixture
def map_net(tmp_path: Path) -> tuple[Path, Path]:
    """A net with a 2-class score output and a one-channel Sigmoid map (HED's kind of output), last."""
    prototxt = tmp_path / "map.prototxt"
    prototxt.write_text(MAP_NET)
    rng = np.random.default_rng(5)
    weights = tmp_path / "map.caffemodel"
    draw = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.01  # noqa: E731
    write_weights(weights, {"score": [draw(2, 3, 1, 1), np.zeros(2, np.float32)],
                            "edge": [draw(1, 3, 3, 3), np.zeros(1, np.float32)]})
    return prototxt, weights


def test_a_one_channel_output_is_written_as_a_map(map_net, images: list[Path], tmp_path: Path) -> None:
    prototxt, weights = map_net
    out = tmp_path / "out"
    args = [str(prototxt), str(weights), str(images[0]), "--mean", "104,117,123"]
    assert main(["run", *args, "-o", str(out), "--threshold", "0.45", "--save-scores"]) == 0
    seg = Segmenter.from_caffe(prototxt, weights, mean=[104, 117, 123], threshold=0.45)
    (pred,) = seg.predict([images[0]])
    assert pred.is_map and pred.scores.shape[0] == 1
    np.testing.assert_array_equal(pred.labels, pred.scores[0] > 0.45)
    with Image.open(out / f"{images[0].stem}.png") as im:
        assert im.mode == "L"  # the map in grey, not an all-zero label picture
        np.testing.assert_array_equal(np.asarray(im), np.round(255 * np.clip(pred.scores[0], 0, 1)))
    assert len(np.unique(np.asarray(Image.open(out / f"{images[0].stem}.png")))) > 1
    np.testing.assert_allclose(np.load(out / f"{images[0].stem}_scores.npy"), pred.scores)


def test_blob_chooses_the_output_even_an_inner_one(map_net, images: list[Path], tmp_path: Path) -> None:
    prototxt, weights = map_net
    args = [str(prototxt), str(weights), str(images[0]), "--mean", "104,117,123"]
    assert main(["run", *args, "-o", str(tmp_path / "score"), "--blob", "score"]) == 0
    with Image.open(tmp_path / "score" / f"{images[0].stem}.png") as im:
        assert im.mode == "P"  # per-class scores: palette labels
    edge = Segmenter.from_caffe(prototxt, weights, mean=[104, 117, 123], output="edge")  # consumed by the Sigmoid
    prob = Segmenter.from_caffe(prototxt, weights, mean=[104, 117, 123])
    (e,), (p,) = edge.predict([images[0]]), prob.predict([images[0]])
    np.testing.assert_allclose(1 / (1 + np.exp(-e.scores)), p.scores, rtol=1e-5, atol=1e-6)
    assert main(["run", *args, "-o", str(tmp_path / "x"), "--blob", "nope"]) == 2


def test_crf_on_a_map_is_refused(map_net, images: list[Path], tmp_path: Path, capsys) -> None:
    prototxt, weights = map_net
    assert main(["run", str(prototxt), str(weights), str(images[0]), "--mean", "104,117,123", "-o",
                 str(tmp_path / "o"), "--crf", "deeplab_v2_resnet101"]) == 2
    assert "needs per-class scores" in capsys.readouterr().err


def test_scale_multiplies_after_the_mean(map_net, images: list[Path], tmp_path: Path) -> None:
    """``--scale`` is Caffe's transform_param scale: ``(pixel - mean) * scale``, overriding the prototxt's."""
    prototxt, weights = map_net
    plain = Segmenter.from_caffe(prototxt, weights, mean=[104, 117, 123], output="edge")
    scaled = Segmenter.from_caffe(prototxt, weights, mean=[104, 117, 123], output="edge", scale=0.017)
    img = read_image(images[0])
    np.testing.assert_allclose(scaled.preprocess.blob(img)[0], plain.preprocess.blob(img)[0] * np.float32(0.017),
                               rtol=1e-6)
    (a,), (b,) = plain.predict([images[0]]), scaled.predict([images[0]])
    np.testing.assert_allclose(b.scores, a.scores * 0.017, rtol=1e-4, atol=1e-6)  # conv, zero bias: linear
    assert main(["run", str(prototxt), str(weights), str(images[0]), "--mean", "104,117,123", "--scale", "0.017",
                 "-o", str(tmp_path / "o")]) == 0
