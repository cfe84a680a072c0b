"""Preprocessing (image reading, transform_param, DeepLab padding) and the Segmenter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protoseg.errors import FormatError, ProtosegError
from protoseg.io.prototxt import parse_prototxt
from protoseg.io.upgrade import upgrade_net
from protoseg.proto import caffe_pb2
from protoseg.run.demo import DEMO_DIR
from protoseg.run.predict import Segmenter, collect_images, evaluate
from protoseg.run.preprocess import Preprocess, from_netparam, parse_mean, read_image

DEMO_PROTOTXT = DEMO_DIR / "demo.prototxt"
DEMO_WEIGHTS = DEMO_DIR / "demo.caffemodel"


def _net(text: str):
    return upgrade_net(parse_prototxt(text, filename="test.prototxt"))


# ------------------------------------------------------------------------------------------------ images
def test_read_image_modes(tmp_path: Path) -> None:
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((4, 5), 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    pal.putpalette([10, 20, 30, 200, 100, 50])
    pal.save(tmp_path / "pal.png")

    g = read_image(tmp_path / "grey.png")
    assert g.shape == (4, 5, 3) and g.dtype == np.uint8
    assert all(np.array_equal(g[..., c], grey) for c in range(3))
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped, colour kept as stored
    p = read_image(tmp_path / "pal.png")
    assert p[0, 0].tolist() == [10, 20, 30] and p[0, 1].tolist() == [200, 100, 50]


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(FormatError, match="broken.jpg"):
        read_image(bad)
    with pytest.raises(FormatError, match="missing.png: no such image"):
        read_image(tmp_path / "missing.png")


# ------------------------------------------------------------------------------------------------ transform
def test_blob_is_bgr_minus_mean_times_scale() -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # R, G, B
    pre = Preprocess(mean=np.array([1.0, 2.0, 3.0]), scale=0.5)
    blob, size = pre.blob(img)
    assert size == (2, 3) and blob.shape == (3, 2, 3) and blob.dtype == np.float32
    assert blob[:, 0, 0].tolist() == [(30 - 1) * 0.5, (20 - 2) * 0.5, (10 - 3) * 0.5]


def test_padding_fills_with_mean_so_zero_after_subtraction() -> None:
    img = np.full((3, 2, 3), 200, np.uint8)
    pre = Preprocess(mean=np.array([104.0, 117.0, 123.0]), pad_to=(5, 4))
    blob, size = pre.blob(img)
    assert size == (3, 2) and blob.shape == (3, 5, 4)
    assert np.all(blob[:, 3:, :] == 0) and np.all(blob[:, :, 2:] == 0)
    assert blob[:, :3, :2].reshape(3, -1)[:, 0].tolist() == [96.0, 83.0, 77.0]
    with pytest.raises(ProtosegError, match=r"big.png: image is 6x3 .* input size 4x5"):
        pre.blob(np.zeros((3, 6, 3), np.uint8), name="big.png")


def test_transform_param_of_deeplab_data_layer() -> None:
    net = _net("""
        layer { name: "data" type: "ImageSegData" top: "data" top: "label"
          transform_param { mirror: false crop_size: 33 mean_value: 104.008 mean_value: 116.669 mean_value: 122.675 }
          image_data_param { source: "x.txt" batch_size: 1 } }
        layer { name: "c" type: "Convolution" bottom: "data" top: "c"
                convolution_param { num_output: 2 kernel_size: 1 } }
    """)
    pre = from_netparam(net)
    assert pre.pad_to == (33, 33) and pre.scale == 1.0
    assert np.allclose(pre.mean, [104.008, 116.669, 122.675])
    assert "mean_value" in pre.source
    over = from_netparam(net, mean=parse_mean("1,2,3"))
    assert over.mean.tolist() == [1, 2, 3] and over.pad_to == (33, 33)


def test_mean_file_binaryproto(tmp_path: Path) -> None:
    mean = np.arange(3 * 4 * 5, dtype=np.float32).reshape(1, 3, 4, 5)
    bp = caffe_pb2.BlobProto()
    bp.num, bp.channels, bp.height, bp.width = mean.shape
    bp.data.extend(mean.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(bp.SerializeToString())
    (tmp_path / "net.prototxt").write_text("")
    net = _net("""
        layer { name: "data" type: "Data" top: "data" transform_param { mean_file: "mean.binaryproto" scale: 2 } }
        layer { name: "c" type: "Convolution" bottom: "data" top: "c"
                convolution_param { num_output: 2 kernel_size: 1 } }
    """)
    pre = from_netparam(net, prototxt=tmp_path / "net.prototxt")
    assert pre.mean.shape == (3, 4, 5) and pre.scale == 2.0
    blob, _ = pre.blob(np.zeros((4, 5, 3), np.uint8))
    assert np.array_equal(blob, -2 * mean[0])
    with pytest.raises(ProtosegError, match="mean file is 5x4"):
        pre.blob(np.zeros((6, 5, 3), np.uint8))
    (tmp_path / "mean.binaryproto").write_bytes(b"\xff\xff\xff")
    with pytest.raises(FormatError, match="mean.binaryproto"):
        from_netparam(net, prototxt=tmp_path / "net.prototxt")


def test_input_layer_needs_a_known_mean() -> None:
    net = _net("""
        layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
        layer { name: "c" type: "Convolution" bottom: "data" top: "c"
                convolution_param { num_output: 2 kernel_size: 1 } }
    """)
    with pytest.raises(ProtosegError, match="pass --mean B,G,R"):
        from_netparam(net, prototxt="deploy.prototxt")
    pre = from_netparam(net, fallback_mean=(1, 2, 3), fallback_source="zoo entry 'x'", pad_to=(8, 8))
    assert pre.mean.tolist() == [1, 2, 3] and pre.pad_to == (8, 8) and pre.source == "zoo entry 'x'"


@pytest.mark.parametrize("text, expected", [("104,117,123", [104, 117, 123]), ("0", [0, 0, 0]),
                                            (" 1.5, 2 ,3", [1.5, 2, 3])])
def test_parse_mean(text: str, expected: list[float]) -> None:
    assert parse_mean(text).tolist() == expected


@pytest.mark.parametrize("text", ["1,2", "a,b,c", "", "1,2,3,4"])
def test_parse_mean_rejects(text: str) -> None:
    with pytest.raises(ProtosegError, match="B,G,R"):
        parse_mean(text)


# ------------------------------------------------------------------------------------------------ segmenter
@pytest.fixture(scope="module")
def demo_segmenter() -> Segmenter:
    return Segmenter.from_caffe(DEMO_PROTOTXT, DEMO_WEIGHTS)


def test_segmenter_scores_equal_the_graph(demo_segmenter: Segmenter) -> None:
    import protoseg.loader

    images = sorted((DEMO_DIR / "images").glob("*.png"))[:2]
    gm = protoseg.loader.load(DEMO_PROTOTXT, DEMO_WEIGHTS)
    for path, pred in zip(images, demo_segmenter.predict(images)):
        img = read_image(path)
        blob, _ = demo_segmenter.preprocess.blob(img)
        with torch.no_grad():
            expected = gm(torch.from_numpy(blob[None]))[0].numpy()
        assert pred.name == path.stem
        assert pred.scores.shape == (4,) + img.shape[:2]
        # run uses the fast graph: the same arithmetic in another summation order (oneDNN's kernels)
        np.testing.assert_allclose(pred.scores, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
        assert np.array_equal(pred.labels, expected.argmax(0))


def test_batches_equal_single_images(demo_segmenter: Segmenter) -> None:
    rs = np.random.RandomState(0)
    imgs = [rs.randint(0, 256, (20, 24, 3)).astype(np.uint8) for _ in range(3)] + [
        rs.randint(0, 256, (17, 13, 3)).astype(np.uint8)]
    one = list(demo_segmenter.predict(imgs, batch_size=1))
    many = list(demo_segmenter.predict(imgs, batch_size=3))
    assert [p.scores.shape[1:] for p in many] == [(20, 24)] * 3 + [(17, 13)]
    for a, b in zip(one, many):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)


def test_padded_net_crops_scores_back(demo_segmenter: Segmenter) -> None:
    padded = Segmenter(demo_segmenter.module, demo_segmenter.preprocess.padded((40, 40)), name="padded")
    img = np.random.RandomState(1).randint(0, 256, (30, 21, 3)).astype(np.uint8)
    pred = padded.predict_arrays([img])[0]
    assert pred.scores.shape == (4, 30, 21)
    blob, _ = padded.preprocess.blob(img)
    with torch.no_grad():
        full = demo_segmenter.module(torch.from_numpy(blob[None]))[0].numpy()
    assert np.array_equal(pred.scores, full[:, :30, :21])


def test_smaller_output_is_resized_with_a_warning() -> None:
    class Half(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(x[:, :2], 2)

    seg = Segmenter(Half(), Preprocess(mean=np.zeros(3)), name="half")
    with pytest.warns(UserWarning, match="resizing scores bilinearly"):
        pred = seg.predict_arrays([np.zeros((8, 6, 3), np.uint8)])[0]
    assert pred.scores.shape == (2, 8, 6)


def test_output_selection_by_name() -> None:
    class Two(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"a": x[:, :2] * 0 + 1, "b": x[:, :3] * 0 + 2}

    pre = Preprocess(mean=np.zeros(3))
    img = np.zeros((4, 4, 3), np.uint8)
    assert Segmenter(Two(), pre).predict_arrays([img])[0].scores.shape[0] == 3  # last 4-D output
    assert Segmenter(Two(), pre, output="a").predict_arrays([img])[0].scores.shape[0] == 2
    with pytest.raises(ProtosegError, match="no output named 'c'"):
        Segmenter(Two(), pre, output="c").predict_arrays([img])


def test_unknown_crf_preset() -> None:
    with pytest.raises(ProtosegError, match="not a known preset"):
        Segmenter(torch.nn.Identity(), Preprocess(mean=np.zeros(3)), crf="nope")


def test_crf_labels(demo_segmenter: Segmenter) -> None:
    from protoseg.crf import PRESETS

    name = next(iter(PRESETS))
    seg = Segmenter(demo_segmenter.module, demo_segmenter.preprocess, crf=name)
    img = read_image(sorted((DEMO_DIR / "images").glob("*.png"))[0])
    pred = seg.predict_arrays([img[:32, :32]])[0]
    assert pred.crf_labels is not None and pred.crf_labels.shape == (32, 32)
    assert set(np.unique(pred.crf_labels)) <= set(range(4))


def test_collect_images(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("x.png", "y.jpg", "notes.txt"):
        (tmp_path / "a" / name).write_bytes(b"")
    assert [p.name for p in collect_images([tmp_path / "a"])] == ["x.png", "y.jpg"]
    with pytest.raises(FormatError, match="no such image file or folder"):
        collect_images([tmp_path / "nothing.png"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_bytes(b"")
    with pytest.raises(ProtosegError, match="same output files"):
        collect_images([tmp_path / "a", tmp_path / "b"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="holds no images"):
        collect_images([tmp_path / "empty"])


def test_evaluate_hand_computed(tmp_path: Path) -> None:
    """A fake net that predicts the image's red channel as the class: mIoU is computed by hand."""

    class RedIsClass(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            red = x[:, 2]  # BGR blob, zero mean
            return torch.stack([(red == k).float() for k in range(3)], 1)

    pred = np.array([[0, 0, 1, 1], [0, 0, 1, 2]], np.uint8)
    gt = np.array([[0, 0, 1, 1], [0, 1, 255, 2]], np.uint8)
    img = np.zeros((2, 4, 3), np.uint8)
    img[..., 0] = pred
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(gt, "L").save(tmp_path / "a_gt.png")
    seg = Segmenter(RedIsClass(), Preprocess(mean=np.zeros(3)))
    cm = evaluate(seg, [(tmp_path / "a.png", tmp_path / "a_gt.png")])
    # 7 scored pixels (255 skipped). class 0: TP 3, FP 1 (gt 1 predicted 0) -> 3/4;
    # class 1: TP 2, FN 1 -> 2/3; class 2: TP 1 -> 1
    assert cm.mean_iou() == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    assert cm.pixel_accuracy() == pytest.approx(6 / 7)
