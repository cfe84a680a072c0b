"""Turning image files into the blob a Caffe segmentation net was trained on, and its output back to image size.

Caffe's image loaders (OpenCV ``imread``) give 0..255 pixels in **BGR** order; the data layer's
``transform_param`` then subtracts ``mean_value`` (one per channel) or a ``mean_file`` and multiplies by
``scale``. :class:`Preprocess` records exactly that, read from the prototxt's data layer, so a net is fed what
it saw in training.

Image files are read with Pillow: grayscale is replicated to three channels, palette images are converted to
RGB, and an alpha channel is **dropped** (the nets never saw one; the pixels are taken as they are stored, not
composited over a background).

DeepLab's test nets (an ``ImageSegData`` layer with ``crop_size``, or a zoo entry with ``fit="pad"``) see
every image padded at the bottom and right to ``crop_size`` with the mean (zeros after mean subtraction) and
their scores cropped back; a ``.pt2`` exported at one fixed size is fed the same way. An image larger than
that is an error, not silently resized or cropped: DeepLab's own test script requires images no larger than
the crop, and resizing would change what the published scores mean. FCN nets take any size as is. Releases
whose test code resizes every image to the net (SegNet, ENet, ICNet: zoo ``fit="resize"``) are fed that way,
and their scores resized back; those that slide windows (PSPNet, Dilation) go through :mod:`protoseg.run.tiling`.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from protoseg.errors import FormatError, ProtosegError, quote

__all__ = ["Preprocess", "read_image", "parse_mean", "from_netparam", "read_mean_file", "data_layers", "IMAGE_SUFFIXES"]

#: File suffixes taken as images when a folder is given.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True)
class Preprocess:
    """How one image becomes the net's input blob (Caffe's ``DataTransformer`` at test time)."""

    mean: np.ndarray  # subtracted from 0..255 BGR pixels: shape (3,) per channel, or (3, H, W) from a mean_file
    scale: float = 1.0  # multiplied after the mean is subtracted (transform_param.scale)
    pad_to: tuple[int, int] | None = None  # (H, W): pad every image bottom/right with the mean to this size
    resize_to: tuple[int, int] | None = None  # (H, W): resize every image to this size (bilinear), as SegNet, ENet
    bgr: bool = True  # Caffe's loaders give BGR; False only for nets trained on RGB
    source: str = ""  # where the mean came from, for messages

    def blob(self, image: np.ndarray, *, name: str = "image") -> tuple[np.ndarray, tuple[int, int]]:
        """The 3×H'×W' float32 input for an H×W×3 uint8 RGB ``image``, and the image's own (H, W).

        H'×W' is the image size, or ``pad_to`` when the net pads, or ``resize_to`` (see the module notes).
        """
        h, w = image.shape[:2]
        pixels = image[..., ::-1] if self.bgr else image
        chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
        if self.resize_to is not None and (h, w) != tuple(self.resize_to):
            chw = resize_bilinear(chw, self.resize_to)
        mean = self.mean.astype(np.float32)
        if self.pad_to is not None:
            ph, pw = self.pad_to
            if h > ph or w > pw:
                raise ProtosegError(
                    f"{name}: image is {w}x{h} (WxH) but this net pads every image to its input size {pw}x{ph} and "
                    "cannot take a larger one (DeepLab's test script requires image <= crop size); resize the "
                    f"image to fit {pw}x{ph}, or raise crop_size in the prototxt"
                )
            padded = np.empty((3, ph, pw), dtype=np.float32)
            padded[:] = mean if mean.ndim == 3 else mean[:, None, None]
            padded[:, :h, :w] = chw
            chw = padded
        if mean.ndim == 3:
            if mean.shape[1:] != chw.shape[1:]:
                raise ProtosegError(
                    f"{name}: the mean file is {mean.shape[2]}x{mean.shape[1]} (WxH) but the input is "
                    f"{chw.shape[2]}x{chw.shape[1]}; a mean_file only fits inputs of its own size "
                    "(pass --mean B,G,R to use a per-channel mean instead)"
                )
            chw -= mean
        else:
            chw -= mean[:, None, None]
        if self.scale != 1.0:
            chw *= np.float32(self.scale)
        return chw, (h, w)

    def padded(self, pad_to: tuple[int, int] | None) -> Preprocess:
        """This preprocessing with another padding target (None: feed images at their own size)."""
        return replace(self, pad_to=pad_to)


def resize_bilinear(chw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``chw`` resized to ``size`` (H, W) as OpenCV's ``INTER_LINEAR`` resizes float images (pixel centres
    aligned, no antialiasing), which is what SegNet's and ENet's test scripts call."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(chw))[None]
    out = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return out[0].numpy()


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An H×W×3 uint8 RGB array of the image at ``path`` (grey replicated, palette expanded, alpha dropped)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise FormatError(
                    f"{path}: {img.mode} images (16-bit or float) are not supported; save it as an 8-bit image"
                )
            rgb = img.convert("RGB") if img.mode != "RGB" else img
            return np.asarray(rgb, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read as an image ({exc}); give a JPEG, PNG or other Pillow format") from None


def parse_mean(text: str) -> np.ndarray:
    """``--mean B,G,R`` (or one value for all channels) as a (3,) float array."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ProtosegError(f"--mean {text!r}: give three numbers B,G,R (0..255 scale), e.g. 104.008,116.669,122.675")
    return np.asarray(values, dtype=np.float64)


#: Largest mean_file read: a 3 x 1024 x 1024 double mean is 25 MB.
MAX_MEAN_FILE = 64 * 2**20


def read_mean_file(path: str | os.PathLike[str]) -> np.ndarray:
    """A binaryproto ``BlobProto`` mean (``mean_file``) as a C×H×W array; only a regular file of sane size."""
    from google.protobuf.message import DecodeError

    from protoseg.proto import caffe_pb2

    path = Path(path)
    try:
        # non-blocking, so a FIFO planted as the mean_file cannot hang the open; fstat then refuses it
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FormatError(f"{path}: the mean_file is not a regular file; give a .binaryproto file, or "
                                  "--mean B,G,R")
            if info.st_size > MAX_MEAN_FILE:
                raise FormatError(f"{path}: the mean_file is {info.st_size:,} bytes, more than a mean image "
                                  f"needs ({MAX_MEAN_FILE:,}); pass --mean B,G,R instead")
            data = f.read(MAX_MEAN_FILE + 1)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read the mean_file ({exc.strerror}); check the path") from None
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise FormatError(f"{path}: not a binaryproto BlobProto mean file ({exc})") from None
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float64)
    dims = tuple(blob.shape.dim) if blob.HasField("shape") else (blob.num, blob.channels, blob.height, blob.width)
    if values.size == 0 or any(d <= 0 for d in dims) or math.prod(dims) != values.size:
        raise FormatError(f"{path}: mean blob holds {values.size} values but its shape says {dims}")
    arr = values.reshape(dims)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise FormatError(f"{path}: mean blob has shape {dims}; expected 3 channels (1x3xHxW)")
    return arr


def data_layers(netparam, fork: str = "bvlc"):
    """The layers of ``netparam`` that are data layers in ``fork`` (their ``transform_param`` tells how images
    were fed), in order."""
    import warnings

    from protoseg.errors import ProtosegWarning
    from protoseg.ir import make_converter

    for lp in netparam.layer:
        if lp.bottom:
            continue
        try:
            with warnings.catch_warnings():  # building the net warns about the same layers, once
                warnings.simplefilter("ignore", ProtosegWarning)
                role = make_converter(lp, fork).role
        except ProtosegError:
            continue
        if role == "input":
            yield lp


def from_netparam(
    netparam,
    *,
    prototxt: str | os.PathLike[str] = "<net>",
    mean: np.ndarray | Sequence[float] | None = None,
    pad_to: tuple[int, int] | None = None,
    fallback_mean: Sequence[float] | None = None,
    fallback_source: str = "",
    fork: str = "bvlc",
    scale: float | None = None,
    resize_to: tuple[int, int] | None = None,
) -> Preprocess:
    """The :class:`Preprocess` of an upgraded V2 ``NetParameter``.

    ``mean`` (from ``--mean``) overrides everything (a ``mean_file`` is then not even opened); otherwise the
    first data layer's ``transform_param`` decides, and for a deploy net with an ``Input`` layer (which has
    none) ``fallback_mean`` (from the zoo). ``pad_to`` (H, W) pads like DeepLab when the data layer has no
    ``crop_size`` of its own (zoo ``fit="pad"``); ``resize_to`` resizes every image (zoo ``fit="resize"``).
    ``scale`` (from ``--scale``) overrides ``transform_param.scale``, multiplied after the mean is subtracted, as
    Caffe does.
    """
    where = str(prototxt)
    layer = next((lp for lp in data_layers(netparam, fork) if lp.HasField("transform_param")), None)
    given_scale, scale, crop, found, source = scale, 1.0, None, None, ""
    if layer is not None:
        t = layer.transform_param
        scale = float(t.scale) if t.HasField("scale") else 1.0
        if t.HasField("crop_size") and t.crop_size > 0:
            crop = (int(t.crop_size), int(t.crop_size))
        if mean is not None:
            pass
        elif len(t.mean_value):
            values = list(t.mean_value)
            if len(values) == 1:
                values *= 3
            if len(values) != 3:
                raise ProtosegError(
                    f"{where}: layer {quote(layer.name)} ({layer.type}) has {len(values)} mean_value entries; "
                    "protoseg feeds 3-channel images, so give one or three"
                )
            found, source = np.asarray(values, dtype=np.float64), f"layer {quote(layer.name)} mean_value"
        elif t.HasField("mean_file"):
            mean_path = Path(t.mean_file)
            if not mean_path.is_absolute():
                mean_path = Path(prototxt).parent / mean_path
            found, source = read_mean_file(mean_path), f"mean_file {mean_path}"
    if mean is not None:
        found, source = np.asarray(mean, dtype=np.float64), "--mean"
    elif found is None and fallback_mean is not None:
        found, source = np.asarray(fallback_mean, dtype=np.float64), fallback_source or "the model registry"
    if given_scale is not None:
        scale = float(given_scale)
    if found is None:
        raise ProtosegError(
            f"{where}: the net has no transform_param mean (an Input-layer deploy net?) and none is known for it; "
            "pass --mean B,G,R (FCN and DeepLab on VOC: 104.008,116.669,122.675), or --mean 0 for none"
        )
    if not np.all(np.isfinite(found)) or (scale != scale or abs(scale) == float("inf")):
        raise ProtosegError(f"{where}: the mean {found.tolist() if found.ndim == 1 else '(mean_file)'} and scale "
                            f"{scale} must be finite numbers")
    if crop is None:
        crop = pad_to
    return Preprocess(mean=found, scale=scale, pad_to=None if resize_to else crop, resize_to=resize_to,
                      source=source)
