"""``caffe.io`` of pycaffe: loading and resizing images, the ``Transformer`` that turns them into input blobs,
and BlobProto conversions, for scripts that ran on pycaffe.

Differences from pycaffe, on purpose: images are decoded by Pillow (not scikit-image) and resized by Pillow's
filters on each channel as float32 (pycaffe's ``resize_image`` calls ``skimage.transform.resize``): bilinear for
``interp_order`` 1, nearest for 0, bicubic for 3, so values can differ from pycaffe's by interpolation rounding.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from protoseg.errors import ProtosegError
from protoseg.proto import caffe_pb2

__all__ = ["Transformer", "array_to_blobproto", "blobproto_to_array", "load_image", "resize_image"]

_FILTERS = {0: Image.NEAREST, 1: Image.BILINEAR, 3: Image.BICUBIC}


def load_image(filename: str | os.PathLike, color: bool = True) -> np.ndarray:
    """An image as float32 in [0, 1], H x W x 3 RGB (``color``) or H x W x 1, as pycaffe's ``load_image``."""
    from protoseg.run.preprocess import read_image

    rgb = read_image(filename).astype(np.float32) / 255.0
    if color:
        return rgb
    grey = np.asarray(Image.fromarray(read_image(filename)).convert("L"), dtype=np.float32) / 255.0
    return grey[:, :, None]


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """``im`` (H x W x K) resized to ``new_dims`` (height, width), each channel on its own, as float32."""
    if interp_order not in _FILTERS:
        raise ProtosegError(f"resize_image: interp_order {interp_order} is none of 0, 1, 3")
    im = np.asarray(im, dtype=np.float32)
    if im.ndim == 2:
        im = im[:, :, None]
    h, w = int(new_dims[0]), int(new_dims[1])
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(im[:, :, k]), mode="F").resize(
        (w, h), _FILTERS[interp_order])) for k in range(im.shape[2])]
    return np.stack(channels, axis=2)


class Transformer:
    """pycaffe's ``caffe.io.Transformer``: per input blob, how an H x W x K image becomes its K x H x W slice.

    ``preprocess`` resizes to the blob's size, transposes, swaps channels, multiplies by the raw scale,
    subtracts the mean and multiplies by the input scale, in that order; ``deprocess`` undoes it.
    """

    def __init__(self, inputs: Mapping[str, Sequence[int]]) -> None:
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose: dict[str, tuple[int, ...]] = {}
        self.channel_swap: dict[str, tuple[int, ...]] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def _check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise ProtosegError(f"Transformer: {in_!r} is not one of the inputs {', '.join(self.inputs)}")

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ProtosegError("Transformer.set_transpose: give one index per image axis (e.g. (2, 0, 1))")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ProtosegError("Transformer.set_channel_swap: give one index per channel (e.g. (2, 1, 0))")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        self._check_input(in_)
        self.raw_scale[in_] = float(scale)

    def set_input_scale(self, in_: str, scale: float) -> None:
        self._check_input(in_)
        self.input_scale[in_] = float(scale)

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """A per-channel mean (K,) or a K x H x W mean image (resized to the blob's size if it differs)."""
        self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        shape = self.inputs[in_][1:]
        if mean.ndim == 1:
            if mean.shape[0] != shape[0]:
                raise ProtosegError(f"Transformer.set_mean: {mean.shape[0]} values for {shape[0]} channels")
            mean = mean[:, None, None]
        elif mean.shape != shape:
            if mean.shape[0] != shape[0]:
                raise ProtosegError(f"Transformer.set_mean: mean of shape {mean.shape} for input {shape}")
            mean = resize_image(mean.transpose(1, 2, 0), shape[1:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        self._check_input(in_)
        image = np.asarray(data, dtype=np.float32)
        size = self.inputs[in_][2:]
        if image.shape[:2] != tuple(size):
            image = resize_image(image, size)
        if in_ in self.transpose:
            image = image.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            image = image[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            image = image * self.raw_scale[in_]
        if in_ in self.mean:
            image = image - self.mean[in_]
        if in_ in self.input_scale:
            image = image * self.input_scale[in_]
        return np.ascontiguousarray(image, dtype=np.float32)

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        self._check_input(in_)
        image = np.asarray(data, dtype=np.float32).squeeze()
        if in_ in self.input_scale:
            image = image / self.input_scale[in_]
        if in_ in self.mean:
            image = image + self.mean[in_]
        if in_ in self.raw_scale:
            image = image / self.raw_scale[in_]
        if in_ in self.channel_swap:
            image = image[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            image = image.transpose(np.argsort(self.transpose[in_]))
        return image


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    """A BlobProto holding ``arr`` (its shape in ``shape.dim``), and ``diff`` when given."""
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(np.shape(arr))
    blob.data.extend(np.asarray(arr, dtype=np.float32).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff, dtype=np.float32).flat)
    return blob


def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """The array a BlobProto holds (its ``diff`` with ``return_diff``), shaped by ``shape`` or the legacy 4-D
    num/channels/height/width."""
    values = np.asarray(blob.diff if return_diff else blob.data, dtype=np.float32)
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if int(np.prod(shape)) != values.size:
        raise ProtosegError(f"blobproto_to_array: shape {shape} does not hold the {values.size} values stored")
    return values.reshape(shape)
