"""Python layers: protoseg never imports the module a prototxt names. A bottomless one is a data layer (its tops
become inputs), ENet's SpatialDropout is the identity at test time, and any other is refused by name."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from protoseg.errors import LayerParamError, UnsupportedLayerError
from protoseg.graph import to_graph
from tests.layers.helpers import build, expect_error, forward, layer_text, rand

SPATIAL_DROPOUT = 'python_param { module: "spatial_dropout" layer: "SpatialDropoutLayer" param_str: "p: 0.1" }'


def test_data_layer_tops_become_inputs() -> None:
    text = (layer_text("Python", 'python_param { module: "never_imported_data" layer: "DataLayer" }', (),
                       ("data", "label")) +
            layer_text("ReLU", "", ("data",), ("y",), name="relu"))
    net = build(text, input_shapes={"data": (1, 3, 6, 6), "label": (1, 1, 6, 6)})
    assert net.inputs == {"data": (1, 3, 6, 6)} and net.data_tops == ["data", "label"]
    assert [n.target for n in to_graph(net).graph.nodes if n.op == "placeholder"] == ["data"]
    assert "never_imported_data" not in sys.modules


def test_spatial_dropout_is_the_identity() -> None:
    x = rand(2, 3, 4, 5)
    (y,) = forward("Python", SPATIAL_DROPOUT, {"x": x})
    np.testing.assert_array_equal(y, x)
    assert "spatial_dropout" not in sys.modules


@pytest.mark.parametrize("params, shapes, error, match", [
    pytest.param('python_param { module: "never_imported_op" layer: "Mystery" }', {"x": (1, 2, 3, 3)},
                 UnsupportedLayerError, "module 'never_imported_op', class 'Mystery'.*spatial_dropout."
                 "SpatialDropoutLayer", id="unknown-layer"),
    pytest.param(SPATIAL_DROPOUT, {"x": (1, 2, 3, 3), "z": (1, 2, 3, 3)}, LayerParamError,
                 "takes one bottom and one top", id="spatial-dropout-two-bottoms"),
])
def test_invalid(params: str, shapes: dict, error, match: str) -> None:
    expect_error(error, match, "Python", params, shapes)
    assert "never_imported_op" not in sys.modules
