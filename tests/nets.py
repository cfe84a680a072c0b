"""Test nets with weights that fit them: published prototxts thinned to test size, and random caffemodels
whose activations survive deep nets (no caffemodel is published beside the prototxts)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format

from protoseg.io.weights import write_weights
from protoseg.loader import open_net
from protoseg.proto import caffe_pb2

#: (type, blob count, index) of the variance blobs of each fork's batch norm: they must stay positive.
VARIANCES = {("BN", 4, 3), ("BatchNorm", 3, 1), ("BatchNorm", 5, 3)}
#: Channel divisor for VGG-sized nets (FCN, SegNet, Dilation, CRF-RNN): 64 -> 8, 4096 -> 512.
THIN = 8


def thin(src: Path, dst: Path, factor: int = THIN, edit: Callable[[Any], None] | None = None,
         keep: Collection[int] = ()) -> Path:
    """``src`` with every ``num_output`` >= 64 divided by ``factor`` (and ``edit`` applied), written to ``dst``;
    counts in ``keep`` (a class count: ADE20K's 150) stay."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(src.read_text(), net)
    for layer in net.layer:
        if layer.HasField("convolution_param") and 64 <= layer.convolution_param.num_output not in keep:
            layer.convolution_param.num_output //= factor
    if edit is not None:
        edit(net)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text_format.MessageToString(net))
    return dst


def random_weights(prototxt: Path, dst: Path, seed: int = 0, **open_args: Any) -> Path:
    """A caffemodel of random float32 blobs of the shapes ``prototxt`` implies. Kernels are scaled by
    sqrt(2 / fan-in) and BN scales drawn near 1 (not a flat 0.01) so activations survive 15+ layers and the
    argmax changes across the image: a net that predicts one class everywhere would let a wrong forward pass."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = open_net(prototxt, **open_args).net
    rng = np.random.default_rng(seed)
    blobs = {}
    for layer in net.layers:
        arrays = []
        for i, shape in enumerate(layer.blob_shapes):
            if (layer.type, len(layer.blob_shapes), i) in VARIANCES:
                value = 1.0 + 0.1 * np.abs(rng.standard_normal(shape))
            elif layer.type == "BN":
                value = (1.0 if i == 0 else 0.0) + 0.1 * rng.standard_normal(shape)
            elif layer.type == "BatchNorm":  # mean 0, and a scale factor of 1 (BVLC) or counter (NVCaffe)
                value = np.ones(shape) if i == len(layer.blob_shapes) - 1 else 0.1 * rng.standard_normal(shape)
            elif i == 0 and len(shape) == 4:
                value = rng.standard_normal(shape) * np.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))
            else:
                value = 0.1 * rng.standard_normal(shape)
            arrays.append(value.astype(np.float32))
        if arrays:
            blobs[layer.name] = arrays
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_weights(dst, blobs)
    return dst
