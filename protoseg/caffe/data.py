"""Image-list data layers for ``protoseg.caffe``: evaluation scripts of SegNet-style nets call ``net.forward()``
with no arguments and expect the net's own data layer to load the next batch, as Caffe's does. The converted
graph treats data layers as inputs; this fills them."""

from __future__ import annotations

import os
import random
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from protoseg.errors import FormatError, ProtosegError, ProtosegWarning, quote

MAX_TEXT_FILE = 64 * 2**20
#: Caffe's ``FLT_MIN`` floor under a softmax probability before its log.


def read_text(path: str | os.PathLike, what: str) -> str:
    """A regular text file of at most ``MAX_TEXT_FILE`` bytes (a FIFO or device named by a file is refused)."""
    path = Path(path)
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise FormatError(f"{path}: the {what} is not a regular file")
            data = f.read(MAX_TEXT_FILE + 1)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > MAX_TEXT_FILE:
        raise FormatError(f"{path}: the {what} is larger than {MAX_TEXT_FILE // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_8bit(path: str, color: bool, size: tuple[int, int] | None, nearest: bool) -> np.ndarray:
    """An image as Caffe's ``ReadImageToCVMat`` gives it: H x W x 3 uint8 in B, G, R order (``color``) or
    H x W x 1 grey, resized to ``size`` (height, width) when given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise FormatError(f"{path}: {img.mode} images are not 8-bit; Caffe's image data layers read 8-bit")
            img = img.convert("RGB" if color else "L")
            if size is not None:
                img = img.resize((size[1], size[0]), Image.NEAREST if nearest else Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read as an image ({exc})") from None
    return np.ascontiguousarray(arr[:, :, ::-1]) if color else arr[:, :, None]


class DenseImageData:
    """caffe-segnet's ``DenseImageData`` layer, so a SegNet test net runs as its scripts expect: each
    ``net.forward()`` loads the next ``batch_size`` pairs of ``source`` into the data and label tops.

    As Caffe: ``source`` lists whitespace-separated ``image label`` pairs (paths prefixed by ``root_folder``,
    relative ones from the working directory), read in order and wrapping at the end; ``shuffle`` reorders
    them once per pass and ``rand_skip`` skips a random number at the start (Python's generator). Images are
    8-bit B, G, R (grey unless ``is_color``), labels 8-bit grey with their values kept; both are resized to
    ``new_height`` x ``new_width`` when given (bilinear, labels nearest). Data is ``(pixel - mean) * scale``
    from ``transform_param``; labels are left as read. The first image sizes the tops when the net is built;
    with ``batch_size: 1`` and no resize a later image of another size reshapes them, as in Caffe.

    Differs on purpose: Pillow decodes and resizes, not OpenCV, so a JPEG or a resize can differ from Caffe's
    by rounding; ``crop_size`` and ``mirror``, which caffe-segnet's layer refuses at the first batch, are
    refused when the net is built.
    """

    def __init__(self, lp) -> None:
        p, t = lp.dense_image_data_param, lp.transform_param
        where = f"data layer {quote(lp.name)} (DenseImageData)"
        if len(lp.top) != 2:
            raise ProtosegError(f"{where}: has {len(lp.top)} tops; DenseImageData gives two, data and label")
        if t.crop_size or t.mirror or p.mirror or p.crop_height or p.crop_width:
            raise ProtosegError(f"{where}: crop and mirror change images and labels apart; caffe-segnet's layer "
                                "refuses them at test time, and so does protoseg: drop them from the prototxt")
        if p.label_divide_factor != 1:
            raise ProtosegError(f"{where}: label_divide_factor {p.label_divide_factor} is not supported; "
                                "remove it (1 keeps the labels as read)")
        if (p.new_height > 0) != (p.new_width > 0):
            raise ProtosegError(f"{where}: give new_height and new_width together (Caffe requires both or none)")
        if p.batch_size < 1:
            raise ProtosegError(f"{where}: batch_size {p.batch_size}; give at least 1")
        self.tops = list(lp.top)
        self.where = where
        self.batch = int(p.batch_size)
        self.color = bool(p.is_color)
        self.size = (int(p.new_height), int(p.new_width)) if p.new_height > 0 else None
        self.shuffle = bool(p.shuffle)
        self.scale = np.float32(t.scale)
        self.mean: np.ndarray | None = None
        if t.HasField("mean_file"):
            from protoseg.run.preprocess import read_mean_file

            self.mean = read_mean_file(t.mean_file).astype(np.float32)
        elif len(t.mean_value):
            self.mean = np.asarray(t.mean_value, dtype=np.float32)[:, None, None]
        tokens = read_text(p.source, f"source of {where}").split()
        self.pairs = [(p.root_folder + a, p.root_folder + b) for a, b in zip(tokens[0::2], tokens[1::2])]
        if not self.pairs:
            raise ProtosegError(f"{where}: its source {p.source} lists no 'image label' pair")
        if self.shuffle:
            random.shuffle(self.pairs)
        self.next = random.randrange(p.rand_skip) % len(self.pairs) if p.rand_skip else 0
        image, _ = self._pair(self.pairs[self.next])
        self.shape = (self.batch, *image.shape)

    @property
    def label_shape(self) -> tuple[int, ...]:
        return (self.batch, 1, *self.shape[2:])

    def _pair(self, pair: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        image = read_8bit(pair[0], self.color, self.size, nearest=False)
        label = read_8bit(pair[1], False, self.size, nearest=True)
        if image.shape[:2] != label.shape[:2]:
            raise FormatError(f"{self.where}: {pair[0]} is {image.shape[1]} x {image.shape[0]} but its label "
                              f"{pair[1]} is {label.shape[1]} x {label.shape[0]}; they must match")
        data = image.transpose(2, 0, 1).astype(np.float32)
        if self.mean is not None:
            if self.mean.shape[1:] != (1, 1) and self.mean.shape != data.shape:
                raise FormatError(f"{self.where}: the mean_file is {self.mean.shape}, the image {data.shape}")
            if self.mean.shape[0] not in (1, data.shape[0]):
                raise ProtosegError(f"{self.where}: give one mean_value or one per channel ({data.shape[0]})")
            data -= self.mean
        if self.scale != 1:
            data *= self.scale
        return data, label.transpose(2, 0, 1).astype(np.float32)

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next ``batch_size`` pairs as ``{data top: N x C x H x W, label top: N x 1 x H x W}``."""
        images, labels = [], []
        for _ in range(self.batch):
            image, label = self._pair(self.pairs[self.next])
            if image.shape != self.shape[1:]:
                if self.batch > 1 or self.size is not None:
                    raise FormatError(f"{self.where}: {self.pairs[self.next][0]} is {image.shape}, not "
                                      f"{self.shape[1:]} as the first image; a batch of several needs one size")
                self.shape = (1, *image.shape)
            images.append(image)
            labels.append(label)
            self.next += 1
            if self.next == len(self.pairs):
                self.next = 0
                if self.shuffle:
                    random.shuffle(self.pairs)
        return {self.tops[0]: np.stack(images), self.tops[1]: np.stack(labels)}


def image_list_readers(prototxt: str, defines: Mapping[str, str] | None, phase: str) -> list[DenseImageData]:
    """The net's ``DenseImageData`` layers whose ``source`` exists; one that names a missing list warns and is
    left to the caller to fill, as before (Caffe would stop)."""
    from protoseg.io.upgrade import load_net

    try:
        with open(prototxt, "rb") as f:
            if b"DenseImageData" not in f.read(MAX_TEXT_FILE + 1):
                return []  # most nets: no second parse
    except OSError:
        return []  # open_net says what is wrong with the file
    readers = []
    for lp in load_net(prototxt, defines, phase).layer:
        if lp.type != "DenseImageData":
            continue
        if not os.path.isfile(lp.dense_image_data_param.source):
            warnings.warn(f"{prototxt}: data layer {quote(lp.name)} (DenseImageData) reads its images from "
                          f"{quote(lp.dense_image_data_param.source)}, which is not a file; fill "
                          f"net.blobs[{quote(lp.top[0])}] yourself or point source at your image list",
                          ProtosegWarning, stacklevel=3)
            continue
        readers.append(DenseImageData(lp))
    return readers

