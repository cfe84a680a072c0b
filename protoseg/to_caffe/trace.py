"""Trace a PyTorch module with torch.fx and record, per node, what it gives on the example input.

Emitters need sizes (a pooling's rounding, a resize's factor) and need to know where a size came from (a
resize to another tensor's size stays dynamic in Caffe), so the traced graph is run once on the example input
and every node's result is summarised: a tensor by its shape and dtype, shape arithmetic by its value.
"""

from __future__ import annotations

import builtins
import contextlib
import operator
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import fx, nn

from protoseg.errors import ProtosegError, UnsupportedLayerError, quote


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


class Opaque:
    """A result that is neither a tensor nor plain shape arithmetic (a module returning a tuple, an object)."""


def summarise(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(value.shape), value.dtype)
    if isinstance(value, (bool, int, float, str, type(None), slice)):
        return value
    if isinstance(value, (tuple, list)):  # torch.Size is a tuple
        return tuple(summarise(v) for v in value)
    return Opaque()


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.info: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.info[n] = summarise(out)
        return out


class _Holder(nn.Module):
    """A torch layer given as the whole module: fx traces into its root, so the layer goes one level down."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.attr = type(layer).__name__.lower()
        self.add_module(self.attr, layer)

    def forward(self, x):
        return getattr(self, self.attr)(x)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (BatchNorm's running statistics, Dropout off), then restore every flag."""
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def trace(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[fx.GraphModule, dict[fx.Node, Any]]:
    """The fx graph of ``module`` (in eval mode) and each node's summarised result on ``inputs``."""
    name = type(module).__name__
    if fx.Tracer().is_leaf_module(module, ""):
        module = _Holder(module)
    with evaluating(module):
        try:
            gm = fx.symbolic_trace(module)
        except (fx.proxy.TraceError, TypeError, RuntimeError, NotImplementedError, AttributeError, ValueError) as e:
            raise UnsupportedLayerError(
                f"module {quote(name)} cannot be traced by torch.fx ({type(e).__name__}: {e}); to_caffe writes "
                "fx-traceable modules: move data-dependent control flow out of forward") from None
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(inputs):
            raise UnsupportedLayerError(
                f"module {quote(name)} takes {len(placeholders)} inputs ({', '.join(n.name for n in placeholders)}) "
                f"but the example gives {len(inputs)}")
        recorder = _Recorder(gm)
        try:
            with torch.no_grad():
                recorder.run(*inputs)
        except (RuntimeError, TypeError, ValueError, IndexError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise ProtosegError(f"module {quote(name)} fails on the example input ({type(e).__name__}: {first}); "
                                "give an input its forward takes") from None
    return gm, recorder.info


# -- where a size comes from ----------------------------------------------------------------------------------

def shape_of(node: Any) -> fx.Node | None:
    """``t`` for a node computing ``t.shape`` or ``t.size()``."""
    if not isinstance(node, fx.Node):
        return None
    if node.op == "call_function" and node.target is builtins.getattr and node.args[1:] == ("shape",):
        return node.args[0]
    if node.op == "call_method" and node.target == "size" and len(node.args) == 1 and not node.kwargs:
        return node.args[0]
    return None


def dim_of(node: Any, ndim: int) -> tuple[fx.Node, int] | None:
    """``(t, axis)`` for a node computing ``t.shape[axis]`` or ``t.size(axis)`` (axis made non-negative)."""
    if not isinstance(node, fx.Node):
        return None
    if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int):
        t = shape_of(node.args[0])
        return (t, node.args[1] % ndim) if t is not None else None
    if node.op == "call_method" and node.target == "size" and len(node.args) == 2 and isinstance(node.args[1], int):
        return node.args[0], node.args[1] % ndim
    return None


def spatial_source(size: Any) -> fx.Node | None:
    """The 4-D tensor whose height and width ``size`` (an argument of a resize) is, if it is one: ``t.shape[2:]``,
    ``t.shape[-2:]``, ``t.size()[2:]`` or ``(t.shape[2], t.shape[3])`` and the like. None for anything else."""
    if isinstance(size, fx.Node) and size.op == "call_function" and size.target is operator.getitem:
        t, index = shape_of(size.args[0]), size.args[1]
        if t is not None and isinstance(index, slice) and index.step in (None, 1) and index.stop is None \
                and index.start in (2, -2):
            return t
        return None
    if isinstance(size, (tuple, list)) and len(size) == 2:
        dims = [dim_of(s, 4) for s in size]
        if all(dims) and dims[0][0] is dims[1][0] and (dims[0][1], dims[1][1]) == (2, 3):
            return dims[0][0]
    return None

