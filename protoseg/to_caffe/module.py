"""Any fx-traceable module of known layers -> a Caffe net: trace, then one emitter per node, in graph order.

Only nodes that the outputs depend on are written (a dangling top would become an extra output of the Caffe
net); shape arithmetic (``x.shape[-2:]`` feeding a resize) becomes no layer. The input is ``data`` of
the example's shape (several inputs keep the forward's argument names), declared as the dialect's Caffe reads it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import fx, nn

from protoseg.errors import ProtosegError, ProtosegWarning, UnsupportedLayerError, quote
from protoseg.to_caffe.builder import NetBuilder, declare_inputs
from protoseg.to_caffe.context import Context
from protoseg.to_caffe.ops import lookup, supported_modules
from protoseg.to_caffe.trace import Opaque, evaluating, trace


@dataclass
class Conversion:
    builder: NetBuilder
    gm: fx.GraphModule  # the traced module
    tops: dict[fx.Node, str]  # tensor node -> the Caffe blob holding its value
    outputs: list[fx.Node]


def as_inputs(example_input: Any) -> tuple[torch.Tensor, ...]:
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ProtosegError("example_input must be a tensor (or a tuple of tensors), as the module's forward takes it")
    return inputs


def convert(module: nn.Module, inputs: Sequence[torch.Tensor], dialect: str, name: str | None) -> Conversion:
    gm, info = trace(module, tuple(inputs))
    output = next(n for n in gm.graph.nodes if n.op == "output")
    outputs, names = _outputs(output.args[0])
    builder = NetBuilder(name or type(module).__name__)
    ctx = Context(gm, info, builder, dialect, names)
    live = _live(output)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            ctx.tops[node] = builder.input("data" if len(placeholders) == 1 else node.name, info[node].shape)
        elif node.op in ("output", "get_attr") or node not in live:
            continue
        elif ctx.tensor(node) is not None:
            emitter = lookup(ctx, node)
            if emitter is None:
                raise ctx.refuse(node, _unsupported(ctx, node))
            ctx.tops[node] = emitter(ctx, node)
        elif isinstance(info.get(node), Opaque):
            raise ctx.refuse(node, _unsupported(ctx, node))
        # anything else is size arithmetic (x.shape[-2:] for a resize): it becomes no layer
    for out in outputs:
        if out not in ctx.tops:
            raise UnsupportedLayerError(f"output {quote(out.name)} of the module is no tensor; Caffe nets output "
                                        "blobs")
    declare_inputs(builder.netparam, dialect)
    if builder.conditions:
        warnings.warn(f"the Caffe net equals {type(module).__name__} only at some input sizes, the example's among "
                      f"them: {'; '.join(builder.conditions)}", ProtosegWarning, stacklevel=4)
    return Conversion(builder, gm, ctx.tops, outputs)


def _outputs(value: Any) -> tuple[list[fx.Node], dict[fx.Node, str]]:
    """The output nodes in order, and the names a dict output gives them."""
    if isinstance(value, fx.Node):
        return [value], {}
    if isinstance(value, dict):
        nodes = [v for v in value.values() if isinstance(v, fx.Node)]
        names = {}
        for key, v in value.items():
            if isinstance(v, fx.Node) and isinstance(key, str) and key and v not in names and v.op != "placeholder":
                names[v] = key
        return nodes, names
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, fx.Node)], {}
    return [], {}


def _live(output: fx.Node) -> set[fx.Node]:
    live, stack = set(), [output]
    while stack:
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack.extend(node.all_input_nodes)
    return live


def _unsupported(ctx: Context, node: fx.Node) -> str:
    if node.op == "call_module":
        return (f"no Caffe layer protoseg writes computes {type(ctx.module(node)).__name__}; it writes "
                f"{', '.join(supported_modules())} and the matching functions")
    return "has no Caffe layer protoseg writes; see protoseg.to_caffe for what it writes"


def reference(conversion: Conversion, inputs: Sequence[torch.Tensor], every_blob: bool) -> dict[str, np.ndarray]:
    """The module's own values by Caffe blob name: the inputs, the outputs (or with ``every_blob`` every blob
    that holds a node's value), for :func:`protoseg.verify.verify_net` or ``protoseg verify``."""
    wanted = set(conversion.tops) if every_blob else set(conversion.outputs)
    values: dict[str, np.ndarray] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if n in wanted and isinstance(out, torch.Tensor):
                values[conversion.tops[n]] = out.detach().to("cpu").numpy()
            return out

    with torch.no_grad(), evaluating(conversion.gm):
        Recorder(conversion.gm).run(*inputs)
    for node, x in zip((n for n in conversion.gm.graph.nodes if n.op == "placeholder"), inputs):
        values[conversion.tops[node]] = x.detach().to("cpu").numpy()
    return values
