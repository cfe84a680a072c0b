"""Crop: explicit offsets as BVLC's CropLayer reads them, and the 2016 parameterless Crop whose offsets come from
the coordinate mapping between its bottoms (FCN's ``score`` cut back to the image)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ProtosegWarning, ShapeError
from tests.layers.helpers import build, expect_error, forward, inputs_text, layer_text, rand, run


def caffe_crop(big: np.ndarray, ref_shape, axis: int, offsets) -> np.ndarray:
    """CropLayer::Reshape + crop_copy: axes before ``axis`` kept, each later one ``[offset, offset + ref)``,
    ``offset`` the one value for all axes, one per axis, or 0."""
    axis %= big.ndim
    count = big.ndim - axis
    offsets = list(offsets) * count if len(offsets) == 1 else list(offsets) or [0] * count
    cut = [slice(None)] * axis + [slice(o, o + ref_shape[axis + i]) for i, o in enumerate(offsets)]
    return big[tuple(cut)]


@pytest.mark.parametrize("axis, offsets, big, ref", [
    pytest.param(2, [1], (2, 3, 8, 9), (2, 3, 5, 6), id="one-offset-for-h-and-w"),
    pytest.param(2, [1, 3], (1, 2, 6, 7), (1, 2, 4, 4), id="offset-per-axis"),
    pytest.param(2, [], (1, 2, 6, 7), (1, 2, 4, 4), id="no-offsets"),
    pytest.param(1, [1, 0, 2], (1, 4, 6, 7), (1, 2, 5, 3), id="channels-too"),
    pytest.param(0, [1, 1, 0, 2], (3, 3, 4, 5), (1, 2, 4, 3), id="every-axis"),
    pytest.param(-1, [2], (1, 2, 4, 7), (1, 2, 4, 3), id="negative-axis"),
])
def test_explicit_offsets(axis: int, offsets: list[int], big, ref) -> None:
    a, b = rand(*big), rand(*ref, seed=1)
    params = f"crop_param {{ axis: {axis} {' '.join(f'offset: {o}' for o in offsets)} }}"
    (y,) = forward("Crop", params, {"a": a, "b": b})
    np.testing.assert_array_equal(y, caffe_crop(a, ref, axis, offsets))


CONV = 'layer {{ name: "{0}" type: "{1}" bottom: "{2}" top: "{0}" convolution_param {{ num_output: 1 {3} }} }}\n'


@pytest.mark.parametrize("layers, offset", [
    # x_data = x_big + (k - 1) / 2 - pad = x_big + 1 - 5: the image starts at 4 in "big"
    pytest.param([("big", "Convolution", "data", "kernel_size: 3 pad: 5")], 4, id="padded-conv"),
    # conv: x_data = 2 x_down + 1 - 10; deconv (the inverse map): x_down = (x_big - 1) / 2; so x_data = x_big - 10
    pytest.param([("down", "Convolution", "data", "kernel_size: 3 stride: 2 pad: 10"),
                  ("big", "Deconvolution", "down", "kernel_size: 3 stride: 2")], 10, id="fcn-down-and-up"),
])
def test_parameterless_crop_infers_offsets_from_the_coordinate_map(layers, offset: int) -> None:
    text = inputs_text({"data": (1, 1, 11, 12)}) + "".join(CONV.format(*layer) for layer in layers)
    text += layer_text("Crop", "", ("big", "data"), ("y",))
    with pytest.warns(ProtosegWarning, match=f"offsets \\[{offset}, {offset}\\] \\(H, W\\) inferred"):
        net = build(text, outputs=["big", "y"])  # the uncropped blob too
    x = rand(1, 1, 11, 12)
    rng = np.random.default_rng(3)
    blobs = {layer.name: [rng.standard_normal(s).astype(np.float32) for s in layer.blob_shapes]
             for layer in net.layers}
    out = run(net, {"data": x}, blobs)
    np.testing.assert_array_equal(out["y"], out["big"][:, :, offset:offset + 11, offset:offset + 12])


@pytest.mark.parametrize("fork", ["hed", "crfasrnn"])
def test_parameterless_crop_is_silent_in_the_forks_that_only_infer(fork: str) -> None:
    """HED's and CRF-as-RNN's Caffe have no crop_param: inferring the offsets is their only reading, not a guess."""
    text = inputs_text({"data": (1, 1, 11, 12)}) + CONV.format("big", "Convolution", "data", "kernel_size: 3 pad: 5")
    text += layer_text("Crop", "", ("big", "data"), ("y",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = build(text, fork=fork)
    assert net.layers[-1].converter.resolve(net.layers[-1].bottom_shapes) == (2, (4, 4))


def test_each_layers_coordinate_map_is_asked_once(monkeypatch) -> None:
    """A deep chain with a parameterless Crop after every layer costs one map per layer, not one walk to the
    input per Crop (which was quadratic in depth)."""
    from protoseg.layers.base import Converter

    calls = []
    plain = Converter.coord_map
    monkeypatch.setattr(Converter, "coord_map", lambda self, shapes: calls.append(self.name) or plain(self, shapes))
    depth = 300
    text = inputs_text({"data": (1, 1, 6, 6)})
    for i in range(depth):
        text += layer_text("ReLU", "", (f"r{i - 1}" if i else "data",), (f"r{i}",), name=f"r{i}")
        text += layer_text("Crop", "", (f"r{i}", "data"), (f"c{i}",), name=f"c{i}")
    build(text, outputs=[f"c{i}" for i in range(depth)])
    assert len(calls) == len(set(calls)) <= depth


def test_maps_whose_numbers_explode_start_a_new_root() -> None:
    """Strides multiplying past 2**62 align nothing: the blob becomes a root rather than carry ever larger
    numbers down a deep net."""
    from fractions import Fraction

    from protoseg.coordmap import IDENTITY, Lineages

    lineages = Lineages()
    stride = ((Fraction(2**31), Fraction(0)), (Fraction(1), Fraction(0)))
    for i in range(1000):
        lineages.add(f"b{i}", lambda: stride, f"b{i - 1}" if i else "data")
    assert lineages("b0") == ("data", stride)
    assert lineages("b1")[0] == "data" and lineages("b1")[1][0][0] == 2**62
    assert lineages("b2") == ("b2", IDENTITY)  # 2**93: a new root
    root, maps = lineages("b999")
    assert max(abs(t.numerator) for axis in maps for t in axis) <= 2**62 and root != "data"


def test_parameterless_crop_of_unrelated_inputs_is_at_zero_silently() -> None:
    a, b = rand(1, 2, 7, 8), rand(1, 2, 4, 5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (y,) = forward("Crop", "", {"a": a, "b": b})
    np.testing.assert_array_equal(y, a[:, :, :4, :5])


@pytest.mark.parametrize("params, big, ref, error, match", [
    pytest.param("axis: 2 offset: 1 offset: 2 offset: 3", (1, 1, 5, 5), (1, 1, 2, 2), LayerParamError,
                 "gives 3 offsets for 2 cropped axes", id="offset-count"),
    pytest.param("axis: 2 offset: 3", (1, 1, 5, 5), (1, 1, 3, 3), ShapeError, "cannot crop 3 at offset 3 out of 5",
                 id="past-the-end"),
    pytest.param("axis: 1", (1, 1, 5, 5), (1, 2, 5, 5), ShapeError, "cannot crop 2 at offset 0 out of 1",
                 id="reference-larger"),
    pytest.param("axis: 2", (1, 1, 5, 5), (1, 5, 5), ShapeError, "different ranks", id="ranks"),
    pytest.param("axis: 4", (1, 1, 5, 5), (1, 1, 3, 3), ShapeError, "axis 4 is out of range", id="axis"),
])
def test_invalid(params: str, big, ref, error, match: str) -> None:
    expect_error(error, match, "Crop", f"crop_param {{ {params} }}", {"a": big, "b": ref})
