"""The VOC colour map, palette PNG output, overlays and ``--palette`` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protoseg.errors import FormatError
from protoseg.run.palette import (
    VOC_PALETTE,
    label_image,
    labels_from_image,
    load_palette,
    overlay,
    voc_palette,
)
from tests.conftest import IMAGES, need

# Entries of the devkit's VOClabelcolormap, written out by hand from its published table.
KNOWN_VOC_COLOURS = {
    0: (0, 0, 0),
    1: (128, 0, 0),  # aeroplane
    2: (0, 128, 0),
    3: (128, 128, 0),
    4: (0, 0, 128),
    7: (128, 128, 128),
    8: (64, 0, 0),
    12: (64, 0, 128),  # dog
    15: (192, 128, 128),  # person
    17: (128, 64, 0),  # sheep
    20: (0, 64, 128),  # tvmonitor
    255: (224, 224, 192),  # void
}


@pytest.mark.parametrize("index", sorted(KNOWN_VOC_COLOURS), ids=lambda i: f"class{i}")
def test_voc_palette_known_entries(index: int) -> None:
    assert tuple(int(v) for v in VOC_PALETTE[index]) == KNOWN_VOC_COLOURS[index]


def test_voc_palette_shape_and_distinct() -> None:
    assert VOC_PALETTE.shape == (256, 3) and VOC_PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in VOC_PALETTE.tolist()}) == 256
    np.testing.assert_array_equal(voc_palette(21), VOC_PALETTE[:21])
    assert not VOC_PALETTE.flags.writeable


@pytest.mark.parametrize(
    "name, cls",
    [("people_pascal_voc.png", 15), ("sheep_pascal_voc.png", 17), ("dog_pascal_voc.png", 12)],
)
def test_published_label_maps_use_voc_colours(name: str, cls: int) -> None:
    """PSPNet's published renderings are RGB; each colour must be a VOC entry and the right class."""
    path = need(IMAGES / name)
    with Image.open(path) as img:
        labels = labels_from_image(img)
        rgb = np.asarray(img.convert("RGB"))
    assert set(np.unique(labels).tolist()) == {0, cls}
    np.testing.assert_array_equal(VOC_PALETTE[labels], rgb)


def test_label_image_roundtrip_png(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [15, 20, 255]], dtype=np.int64)
    out = tmp_path / "pred.png"
    label_image(labels).save(out)
    with Image.open(out) as img:
        assert img.mode == "P"
        assert img.size == (3, 2)
        np.testing.assert_array_equal(np.asarray(img), labels)
        assert bytes(img.getpalette()[: 256 * 3]) == VOC_PALETTE.tobytes()
        np.testing.assert_array_equal(labels_from_image(img), labels)


def test_label_image_custom_palette_padded(tmp_path: Path) -> None:
    pal = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    out = tmp_path / "p.png"
    label_image(np.array([[0, 1]]), pal).save(out)
    with Image.open(out) as img:
        got = img.getpalette()
        assert got[:6] == [1, 2, 3, 4, 5, 6]
        rgb = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(rgb, [[[1, 2, 3], [4, 5, 6]]])


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.zeros((2, 2, 1), dtype=np.int32), "2-D"),
        (np.zeros((2, 2), dtype=np.float32), "integers"),
        (np.array([[0, 256]]), r"\[0, 255\]"),
        (np.array([[-1, 0]]), r"\[0, 255\]"),
    ],
    ids=["3d", "float", "too-big", "negative"],
)
def test_label_image_rejects_bad_labels(labels: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        label_image(labels)


def test_labels_from_rgb_rejects_unknown_colour() -> None:
    img = Image.fromarray(np.array([[[0, 0, 0], [1, 2, 3]]], dtype=np.uint8), mode="RGB")
    with pytest.raises(FormatError, match=r"x=1, y=0.*\(1, 2, 3\)"):
        labels_from_image(img)


def test_overlay_blends_objects_only() -> None:
    photo = np.full((2, 3, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 1, 15], [255, 1, 0]])
    out = np.asarray(overlay(Image.fromarray(photo), labels, alpha=0.5)).astype(int)
    assert out.shape == (2, 3, 3)
    # background and void keep the photo
    for y, x in [(0, 0), (1, 0), (1, 2)]:
        assert out[y, x].tolist() == [100, 100, 100]
    # (100 + 128) / 2 = 114, (100 + 0) / 2 = 50; person (192, 128, 128) -> (146, 114, 114)
    assert out[0, 1].tolist() == [114, 50, 50]
    assert out[1, 1].tolist() == [114, 50, 50]
    assert out[0, 2].tolist() == [146, 114, 114]


def test_overlay_alpha_extremes_and_errors() -> None:
    photo = Image.fromarray(np.full((1, 2, 3), 10, dtype=np.uint8))
    labels = np.array([[1, 1]])
    assert np.asarray(overlay(photo, labels, alpha=0.0)).tolist() == [[[10, 10, 10]] * 2]
    assert np.asarray(overlay(photo, labels, alpha=1.0)).tolist() == [[[128, 0, 0]] * 2]
    with pytest.raises(ValueError, match="alpha"):
        overlay(photo, labels, alpha=1.5)
    with pytest.raises(ValueError, match="WxH"):
        overlay(photo, np.array([[1], [1]]))


def test_load_palette_from_png(tmp_path: Path) -> None:
    pal = np.arange(30, dtype=np.uint8).reshape(10, 3)
    path = tmp_path / "ref.png"
    label_image(np.zeros((2, 2), dtype=np.uint8), pal).save(path)
    got = load_palette(path)
    np.testing.assert_array_equal(got[:10], pal)
    assert got.shape[1] == 3


def test_load_palette_from_text(tmp_path: Path) -> None:
    path = tmp_path / "pal.txt"
    path.write_text("# my classes\n0 0 0\n\n255, 128, 7  # road\n")
    np.testing.assert_array_equal(load_palette(path), [[0, 0, 0], [255, 128, 7]])


def test_load_palette_by_name() -> None:
    np.testing.assert_array_equal(load_palette("voc"), VOC_PALETTE)


@pytest.mark.parametrize(
    "content, match",
    [
        ("0 0\n", r"pal\.txt:1: expected three integers"),
        ("0 0 0\n1 2 300\n", r"pal\.txt:2: expected three integers"),
        ("# nothing\n", "no 'R G B' lines"),
        ("0 0 0\n" * 257, "257 colours"),
    ],
    ids=["two-values", "out-of-range", "empty", "too-many"],
)
def test_load_palette_text_errors(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "pal.txt"
    path.write_text(content)
    with pytest.raises(FormatError, match=match):
        load_palette(path)


def test_load_palette_rgb_png_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.new("RGB", (2, 2)).save(path)
    with pytest.raises(FormatError, match="not a palette"):
        load_palette(path)
    with pytest.raises(FormatError, match="not found"):
        load_palette(tmp_path / "absent.txt")
