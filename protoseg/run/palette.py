"""Colour maps for label images: the PASCAL VOC palette, palette PNGs and overlays.

VOC ground truth and every published FCN/DeepLab result are palette ("P" mode) PNGs whose pixel values *are*
the class indices, so writing our predictions the same way lets them be scored by the official devkit and
viewed in any image viewer without a conversion step.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image

from protoseg.errors import FormatError

__all__ = [
    "IGNORE_LABEL",
    "VOC_PALETTE",
    "voc_palette",
    "label_image",
    "labels_from_image",
    "overlay",
    "load_palette",
]

#: VOC's "void" label (object borders, difficult regions): never scored, drawn in the palette's last colour.
IGNORE_LABEL = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC devkit colour map (``VOClabelcolormap.m``) as an ``(n, 3)`` uint8 array.

    The devkit spreads the bits of the class index over the three channels, most significant bit first
    (bit 0 → red bit 7, bit 1 → green bit 7, bit 2 → blue bit 7, bit 3 → red bit 6, ...), so neighbouring
    classes get clearly different colours. Computed rather than tabled so it cannot drift from the rule.
    """
    idx = np.arange(n, dtype=np.int64)
    cmap = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (idx >> (3 * shift + channel)) & 1
            cmap[:, channel] |= bit << (7 - shift)
    return cmap.astype(np.uint8)


VOC_PALETTE: np.ndarray = voc_palette()
VOC_PALETTE.setflags(write=False)


def _as_palette(palette: np.ndarray | None) -> np.ndarray:
    """Return a validated ``(256, 3)`` uint8 palette, padding a short one with black as PIL would."""
    if palette is None:
        return VOC_PALETTE
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= pal.shape[0] <= 256:
        raise ValueError(f"palette must have shape (N, 3) with 1 <= N <= 256, got {pal.shape}")
    if pal.size and (pal.min() < 0 or pal.max() > 255):
        raise ValueError("palette values must lie in [0, 255]")
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: pal.shape[0]] = pal.astype(np.uint8)
    return full


def _as_labels(labels: np.ndarray) -> np.ndarray:
    """Check that ``labels`` is a 2-D integer map whose values fit in one palette byte."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be a 2-D (H, W) array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"labels must be integers (class indices), got dtype {arr.dtype}; take argmax first")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(
            f"labels must lie in [0, 255] to fit a palette PNG, got [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.uint8)


def label_image(labels: np.ndarray, palette: np.ndarray | None = None) -> Image.Image:
    """A "P" mode image whose pixel values are ``labels`` and whose palette is ``palette`` (VOC by default).

    Saved as PNG it is exactly the format of VOC's ``SegmentationClass`` files.
    """
    img = Image.fromarray(_as_labels(labels), mode="P")
    img.putpalette(_as_palette(palette).tobytes())
    return img


def labels_from_image(img: Image.Image, palette: np.ndarray | None = None) -> np.ndarray:
    """Class indices of a label image: the raw indices of a "P"/"L" image, or, for an RGB rendering, the
    index of each pixel's colour in ``palette`` (VOC by default).

    RGB label maps are what many tools save; an RGB colour that is not in the palette is a
    :class:`~protoseg.errors.FormatError`, since guessing the nearest class would silently corrupt scores.
    """
    if img.mode in ("P", "L"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode not in ("RGB", "RGBA"):
        raise FormatError(f"label image mode {img.mode!r} is not supported; use a palette (P) or RGB PNG")
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint32)
    pal = _as_palette(palette).astype(np.uint32)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal_keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    # The first palette index wins when two entries share a colour (e.g. black padding after class 0).
    uniq_keys, first = np.unique(pal_keys, return_index=True)
    pos = np.searchsorted(uniq_keys, keys)
    pos = np.minimum(pos, uniq_keys.size - 1)
    found = uniq_keys[pos] == keys
    if not found.all():
        y, x = np.argwhere(~found)[0]
        r, g, b = rgb[y, x]
        raise FormatError(
            f"label image pixel (x={x}, y={y}) has colour ({r}, {g}, {b}), which is not in the palette; "
            "pass the palette it was drawn with"
        )
    return first[pos].astype(np.uint8)


def overlay(
    image: Image.Image,
    labels: np.ndarray,
    palette: np.ndarray | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """``image`` with each labelled pixel blended towards its class colour by ``alpha``.

    Background (0) and void (255) pixels keep the photo's own colour so the scene stays readable.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    lab = _as_labels(labels)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if rgb.shape[:2] != lab.shape:
        raise ValueError(
            f"labels are {lab.shape[1]}x{lab.shape[0]} (WxH) but the image is {rgb.shape[1]}x{rgb.shape[0]}; "
            "resize or crop the prediction to the image first"
        )
    colours = _as_palette(palette)[lab].astype(np.float32)
    blended = (1.0 - alpha) * rgb + alpha * colours
    keep = (lab == 0) | (lab == IGNORE_LABEL)
    out = np.where(keep[..., None], rgb, blended)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="RGB")


def load_palette(path_or_name: str | PathLike[str]) -> np.ndarray:
    """The palette named by ``--palette``: ``"voc"``, a palette PNG (its colour table is taken), or a text
    file with one ``R G B`` line per class (blank lines and ``#`` comments allowed; commas also separate).
    """
    if str(path_or_name).lower() in ("voc", "pascal", "pascal_voc"):
        return VOC_PALETTE.copy()
    path = Path(path_or_name)
    if not path.is_file():
        raise FormatError(f"{path}: palette file not found (give a palette PNG, an 'R G B' text file, or 'voc')")
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89PNG") or path.suffix.lower() in (".png", ".gif", ".bmp"):
        return _palette_from_image(path)
    return _palette_from_text(path)


def _palette_from_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode != "P":
                raise FormatError(
                    f"{path}: image mode is {img.mode!r}, not a palette (P) image, so it has no colour table"
                )
            raw = img.getpalette() or []
    except OSError as exc:
        raise FormatError(f"{path}: cannot read image: {exc}") from exc
    if not raw:
        raise FormatError(f"{path}: palette image has an empty colour table")
    pal = np.asarray(raw[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    return pal


def _palette_from_text(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not a text palette (expected lines of 'R G B'): {exc}") from exc
    rows: list[tuple[int, int, int]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        parts = line.split()
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 3 or not all(0 <= v <= 255 for v in values):
            raise FormatError(f"{path}:{lineno}: expected three integers 0-255 ('R G B'), got {line!r}")
        rows.append((values[0], values[1], values[2]))
    if not rows:
        raise FormatError(f"{path}: palette file has no 'R G B' lines")
    if len(rows) > 256:
        raise FormatError(f"{path}: palette has {len(rows)} colours; a label PNG holds at most 256")
    return np.asarray(rows, dtype=np.uint8)
