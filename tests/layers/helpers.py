"""What every layer test needs: a one-layer net from prototxt text, a run on NumPy arrays, named tolerances,
and the two pieces of Caffe arithmetic several families share (the MAX pooling mask and the scatter by it).

A test names its layer ``L``, its bottoms after the input blobs and its tops ``y`` (or as it says), so an error
message reads ``layer 'L' (Type): ...`` and a test can check that it names the layer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import torch

from protoseg.graph import to_graph
from protoseg.io.prototxt import parse_prototxt
from protoseg.io.upgrade import upgrade_net
from protoseg.ir import Net, build_net

#: float32 arithmetic in torch against a float64 NumPy oracle of the same formula.
RTOL = 1e-5
ATOL = 1e-5

Shape = Sequence[int]


def inputs_text(shapes: Mapping[str, Shape]) -> str:
    """``input:`` + ``input_shape`` lines, one per blob (the upgrade makes them one Input layer)."""
    return "".join(f'input: "{name}" input_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}\n'
                   for name, shape in shapes.items())


def layer_text(type_: str, params: str = "", bottoms: Sequence[str] = ("x",), tops: Sequence[str] = ("y",),
               name: str = "L") -> str:
    blobs = [f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops]
    return f'layer {{ name: "{name}" type: "{type_}" {" ".join(blobs)} {params} }}\n'


def build(text: str, fork: str = "bvlc", **kw) -> Net:
    """The IR of a prototxt written in a test (``kw``: :func:`build_net`'s ``input_shapes``, ``outputs``...)."""
    return build_net(upgrade_net(parse_prototxt(text)), fork=fork, **kw)


def one_layer(type_: str, params: str, shapes: Mapping[str, Shape], *, tops: Sequence[str] = ("y",),
              fork: str = "bvlc") -> Net:
    """A net of inputs ``shapes`` feeding layer ``L`` (bottoms: every input, in order)."""
    return build(inputs_text(shapes) + layer_text(type_, params, tuple(shapes), tops), fork)


def run(net: Net, inputs: Mapping[str, np.ndarray], blobs: Mapping[str, Sequence[np.ndarray]] | None = None,
        gm=None) -> dict[str, np.ndarray]:
    """Every output of ``net`` (or of an already built ``gm``) by Caffe blob name, fed ``inputs`` by name."""
    gm = to_graph(net, blobs) if gm is None else gm
    with torch.no_grad():
        out = gm(*(torch.from_numpy(np.ascontiguousarray(inputs[net.caffe_name[i]])) for i in net.inputs))
    if not isinstance(out, dict):
        out = {net.caffe_name[net.outputs[0]]: out}
    return {name: value.numpy() for name, value in out.items()}


def forward(type_: str, params: str, inputs: Mapping[str, np.ndarray], blobs: Sequence[np.ndarray] | None = None,
            *, tops: Sequence[str] = ("y",), fork: str = "bvlc") -> list[np.ndarray]:
    """Layer ``L``'s tops, in order, for ``inputs`` (also its bottoms, in order) and its parameter ``blobs``."""
    net = one_layer(type_, params, {k: v.shape for k, v in inputs.items()}, tops=tops, fork=fork)
    out = run(net, inputs, None if blobs is None else {"L": list(blobs)})
    return [out[t] for t in tops]


def expect_error(error: type[Exception], match: str, type_: str, params: str, shapes: Mapping[str, Shape],
                 **kw) -> None:
    """Building the one-layer net fails with ``error``, a message that names the layer and matches ``match``."""
    with pytest.raises(error, match=f"^layer 'L' \\({re.escape(type_)}\\): .*{match}"):
        one_layer(type_, params, shapes, **kw)


def rand(*shape: int, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Uniform float32 values: distinct almost surely, so maxima and sort orders have no ties."""
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def max_pool_mask(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's MAX pooling without padding, with its mask top: per window (clipped to the plane, ceil-sized)
    the maximum and the flat ``h * W + w`` of its first occurrence in raster order (``>`` replaces)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = -(-(h - kh) // sh) + 1, -(-(w - kw) // sw) + 1
    top = np.full((n, c, oh, ow), -np.inf, np.float32)
    mask = np.full((n, c, oh, ow), -1.0, np.float32)
    for i in range(oh):
        for j in range(ow):
            for hh in range(i * sh, min(i * sh + kh, h)):
                for ww in range(j * sw, min(j * sw + kw, w)):
                    better = x[:, :, hh, ww] > top[:, :, i, j]
                    top[:, :, i, j] = np.where(better, x[:, :, hh, ww], top[:, :, i, j])
                    mask[:, :, i, j] = np.where(better, hh * w + ww, mask[:, :, i, j])
    return top, mask


def scatter(x: np.ndarray, mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """SegNet's Upsample / DeconvNet's Unpooling loop: ``top[mask[i]] = bottom[i]`` per plane, raster order."""
    n, c = x.shape[:2]
    top = np.zeros((n, c, out_h * out_w), np.float32)
    for b in range(n):
        for ch in range(c):
            for value, index in zip(x[b, ch].ravel(), mask[b, ch].ravel()):
                top[b, ch, int(index)] = value
    return top.reshape(n, c, out_h, out_w)
