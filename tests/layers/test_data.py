"""Data layers become graph inputs; nothing they name is imported or opened; unused inputs drop out."""

from __future__ import annotations

import sys
import warnings

import pytest

from protoseg.errors import LayerParamError, ProtosegWarning
from protoseg.io.prototxt import parse_prototxt
from protoseg.io.upgrade import upgrade_net
from protoseg.ir import build_net

HEAD = 'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n'


def _net(data_layer: str, **kw):
    return build_net(upgrade_net(parse_prototxt(data_layer + HEAD)), **kw)


def test_python_layer_is_an_input_and_never_imported() -> None:
    layer = ('layer { name: "data" type: "Python" top: "data" top: "label" '
             'python_param { module: "protoseg_must_not_import_this" layer: "X" } }\n')
    with pytest.warns(ProtosegWarning, match="--input data="):
        net = _net(layer)
    assert "protoseg_must_not_import_this" not in sys.modules
    assert net.inputs == {"data": (1, 3, 500, 500)}  # label: nothing uses it
    assert net.data_tops == ["data", "label"]


def test_input_shapes_from_the_layer_and_overrides() -> None:
    dummy = ('layer { name: "d" type: "DummyData" top: "data" top: "x" '
             'dummy_data_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }\n')
    assert _net(dummy).inputs == {"data": (2, 3, 4, 5)}
    memory = ('layer { name: "d" type: "MemoryData" top: "data" top: "label" '
              'memory_data_param { batch_size: 2 channels: 3 height: 7 width: 6 } }\n')
    assert _net(memory).inputs == {"data": (2, 3, 7, 6)}
    seg = ('layer { name: "d" type: "ImageSegData" top: "data" top: "label" top: "data_dim" '
           'transform_param { crop_size: 321 } }\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _net(seg).inputs == {"data": (1, 3, 321, 321)}
    assert _net(seg, input_shapes={"data": (1, 3, 9, 9)}).inputs == {"data": (1, 3, 9, 9)}


def test_input_layer_needs_one_shape_or_one_per_top() -> None:
    bad = ('layer { name: "in" type: "Input" top: "data" top: "b" top: "c" '
           'input_param { shape { dim: 1 } shape { dim: 2 } } }\n')
    with pytest.raises(LayerParamError, match="layer 'in' \\(Input\\): gives 2 shapes for 3 tops"):
        _net(bad)


def test_losses_are_pruned_and_their_bottom_becomes_the_output() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
            'input: "label" input_shape { dim: 1 dim: 1 dim: 3 dim: 3 }\n' + HEAD +
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss" }\n'
            'layer { name: "acc" type: "SegAccuracy" bottom: "out" bottom: "label" top: "acc" }\n')
    net = build_net(upgrade_net(parse_prototxt(text)))
    assert net.outputs == ["out"] and list(net.inputs) == ["data"] and net.pruned == ["loss", "acc"]


TRAIN_ONLY = ('layer { name: "data" type: "ImageData" top: "data" top: "label" include { phase: TRAIN } }\n'
              'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n')


def test_train_only_data_layer_takes_its_shape_from_input_and_says_so() -> None:
    from protoseg.errors import ShapeError
    from protoseg.io.upgrade import filter_net

    netparam = filter_net(upgrade_net(parse_prototxt(TRAIN_ONLY)), "TEST")
    with pytest.raises(ShapeError, match=r"no layer of this phase writes it \(a TRAIN-only data layer\?\).*"
                                         r"--input data=N,C,H,W"):
        build_net(netparam)
    net = build_net(netparam, {"data": (1, 3, 8, 8)})
    assert net.inputs == {"data": (1, 3, 8, 8)} and [layer.name for layer in net.layers] == ["relu"]
