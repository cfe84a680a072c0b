"""The only module that calls protoseg: when protoseg's API changes, update this file alone.

Each target returns "ok", or "ok-too-big" when the net is fine but too big to run under the worker's memory
limit, and raises whatever protoseg raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import fx

import protoseg
from protoseg.errors import ProtosegError
from protoseg.graph import to_graph
from protoseg.io.weights import read_weights
from protoseg.ir import Net
from protoseg.loader import open_net

PACKAGE = Path(protoseg.__file__).resolve().parent
USER_ERROR = ProtosegError
#: Elements (parameters plus every blob) a net may have to be run; 64 M floats are 256 MB, well under the
#: worker's address-space limit. Above it a net is legitimately big: it is built but not run.
BUDGET = 64 * 2**20


class ShapeMismatch(Exception):
    """The IR inferred a negative size, or the forward pass gave a blob another shape than the IR inferred:
    protoseg's shape rule and its torch module disagree. ``where`` ("Interp layer") tells findings apart,
    since no protoseg frame raised it."""

    def __init__(self, layer_type: str, message: str) -> None:
        super().__init__(message)
        self.where = f"{layer_type} layer"


def prototxt(path: Path, defines: Mapping[str, str]) -> str:
    """Parse, detect the fork, upgrade and build the IR; build the graph with zero weights and run it on zeros."""
    net = open_net(path, defines=defines).net
    if net.num_params > BUDGET:
        return "ok-too-big"
    return _run(net, to_graph(net))


def weights(path: Path, prototxt: Path, defines: Mapping[str, str]) -> str:
    """Read the weights alone, then load them into their own net and run it on zeros."""
    read_weights(path)
    opened = open_net(prototxt, path, defines=defines)
    return _run(opened.net, opened.graph())


def _run(net: Net, gm: fx.GraphModule) -> str:
    for blob, shape in net.inputs.items():
        _no_negative_size("Input", f"input {blob!r}", shape)
    for layer in net.layers:
        for top, shape in zip(layer.tops, layer.shapes):
            _no_negative_size(layer.type, f"layer {layer.name!r} ({layer.type}): top {top!r}", shape)
    shapes = list(net.inputs.values()) + [s for layer in net.layers for s in layer.shapes]
    if net.num_params + sum(math.prod(s) for s in shapes) > BUDGET:
        return "ok-too-big"
    with torch.inference_mode():
        _ShapeCheck(gm, net).run(*(torch.zeros(s) for s in net.inputs.values()))
    return "ok"


def _no_negative_size(layer_type: str, what: str, shape: tuple[int, ...]) -> None:
    if any(d < 0 for d in shape):
        raise ShapeMismatch(layer_type, f"{what}: the IR inferred the shape {shape}")


class _ShapeCheck(fx.Interpreter):
    """Run the graph node by node, comparing each blob's shape with the one the IR inferred."""

    def __init__(self, gm: fx.GraphModule, net: Net) -> None:
        super().__init__(gm)
        self.shapes = {t: tuple(s) for layer in net.layers for t, s in zip(layer.tops, layer.shapes)}

    def run_node(self, node: fx.Node):
        value = super().run_node(node)
        want = self.shapes.get(node.meta.get("blob"))
        if want is not None and isinstance(value, torch.Tensor) and tuple(value.shape) != want:
            layer = node.meta.get("caffe_type")
            raise ShapeMismatch(layer, f"layer {node.meta.get('caffe_layer')!r} ({layer}): top {node.name!r} "
                                       f"is {tuple(value.shape)} at run time, the IR inferred {want}")
        return value
