"""Every model family of the zoo runs end to end on a real photo, fed as its release fed images (resized,
padded, tiled or as is), and writes pictures of the photo's size. The released weights are not downloadable
here, so weights are random and VGG/ResNet-sized nets are thinned (``tests.nets.thin``); the arithmetic of
each layer is checked against Caffe elsewhere, the windows in ``test_tiling.py``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protoseg import zoo
from protoseg.cli import main
from protoseg.errors import ProtosegWarning
from protoseg.run.predict import Segmenter, write_prediction
from protoseg.run.preprocess import read_image
from tests.conftest import IMAGES, need
from tests.nets import random_weights, thin

#: zoo name -> channel divisor (1: the net is small enough as published)
FAMILIES = {
    "segnet-driving": 8, "bayesian-segnet-camvid": 8, "enet-cityscapes": 1, "icnet-cityscapes": 4,
    "dilation8-voc": 16, "dilation10-cityscapes": 32, "crfasrnn-voc": 8, "hed-bsds": 8,
    "pspnet50-ade20k": 16, "pspnet101-cityscapes": 32,
}


def _segmenter(name: str, tmp_path: Path) -> Segmenter:
    entry = zoo.get(name)
    prototxt = thin(entry.prototxt_path(), tmp_path / entry.prototxt, FAMILIES[name], keep=(entry.num_classes,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtosegWarning)  # CRF-as-RNN's and HED's Crops have no offsets
        weights = random_weights(prototxt, tmp_path / "weights.caffemodel", fork=entry.fork)
        return Segmenter.from_caffe(prototxt, weights, entry=entry)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_segments_a_photo(name: str, tmp_path: Path) -> None:
    entry = zoo.get(name)
    seg = _segmenter(name, tmp_path)
    photo = need(IMAGES / "dog.jpg")
    image = read_image(photo)
    torch.manual_seed(0)
    pred = next(seg.predict([photo]))
    h, w = image.shape[:2]
    assert pred.scores.shape == (entry.num_classes, h, w) and np.isfinite(pred.scores).all()
    assert pred.labels.shape == (h, w) and 0 <= pred.labels.min() and pred.labels.max() < max(2, entry.num_classes)
    written = write_prediction(pred, tmp_path / "out")
    with Image.open(written[0]) as png:
        assert png.size == (w, h) and png.mode == ("L" if pred.is_map else "P")


def test_resized_release_at_its_own_size_is_the_graph(tmp_path: Path) -> None:
    """An image already at the input size goes through untouched: scores are the graph's output."""
    seg = _segmenter("enet-cityscapes", tmp_path)
    entry = zoo.get("enet-cityscapes")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*entry.input_size, 3), dtype=np.uint8)
    pred = seg.predict_arrays([image])[0]
    blob, _ = seg.preprocess.blob(image)
    with torch.no_grad():
        direct = seg._pick(seg.module(torch.from_numpy(blob)[None]))[0].numpy()
    np.testing.assert_array_equal(pred.scores, direct)


@pytest.mark.parametrize("name", ["enet-cityscapes", "hed-bsds"])
def test_run_a_zoo_model_from_the_command_line(name: str, tmp_path: Path) -> None:
    """``protoseg run MODEL --weights`` with a caffemodel of the release's full shapes."""
    entry = zoo.get(name)
    weights = random_weights(entry.prototxt_path(), tmp_path / "weights.caffemodel", fork=entry.fork)
    photo = need(IMAGES / "cat.jpg")
    h, w = read_image(photo).shape[:2]
    assert main(["run", name, "--weights", str(weights), str(photo), "-o", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "cat.png") as png:
        assert png.size == (w, h)
        assert png.mode == ("L" if entry.num_classes == 1 else "P")
