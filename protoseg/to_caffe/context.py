"""What an emitter sees: the traced node, its recorded sizes, the blobs written so far, and how to refuse."""

from __future__ import annotations

from typing import Any

from torch import fx, nn

from protoseg.errors import UnsupportedLayerError, quote
from protoseg.to_caffe.builder import NetBuilder
from protoseg.to_caffe.trace import TensorInfo


class Context:
    """State of one conversion. ``tops`` maps each tensor node to the Caffe blob holding its value; ``unit``
    holds the nodes that are 1 x 1 at every input size (global pooling and what follows it point-wise)."""

    def __init__(self, gm: fx.GraphModule, info: dict[fx.Node, Any], builder: NetBuilder, dialect: str,
                 names: dict[fx.Node, str] | None = None) -> None:
        self.gm, self.info, self.net, self.dialect = gm, info, builder, dialect
        self.tops: dict[fx.Node, str] = {}
        self.unit: set[fx.Node] = set()
        self._names = names or {}

    # -- messages ------------------------------------------------------------------------------------------
    def describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"{type(self.gm.get_submodule(node.target)).__name__} {quote(node.target)}"
        if node.op == "call_method":
            return f"Tensor.{node.target}"
        if node.op == "call_function":
            module = getattr(node.target, "__module__", None) or ""
            short = {"torch.nn.functional": "F", "_operator": "operator", "torch._C._nn": "F",
                     "torch._C._VariableFunctions": "torch"}.get(module, module)
            return f"{short + '.' if short else ''}{getattr(node.target, '__name__', node.target)}"
        return node.op

    def refuse(self, node: fx.Node, reason: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"node {quote(node.name)} ({self.describe(node)}): {reason}")

    # -- the node's facts ----------------------------------------------------------------------------------
    def module(self, node: fx.Node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def base(self, node: fx.Node) -> str:
        """The name the node's layer should read as (an output's dict key, else the fx node name)."""
        return self._names.get(node, node.name)

    def tensor(self, node: Any) -> TensorInfo | None:
        info = self.info.get(node) if isinstance(node, fx.Node) else None
        return info if isinstance(info, TensorInfo) else None

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        return self.tensor(node).shape

    def value(self, arg: Any) -> Any:
        """A non-tensor argument's value on the example input (a node's recorded result, or the constant)."""
        if isinstance(arg, fx.Node):
            return self.info.get(arg)
        if isinstance(arg, (tuple, list)):
            return type(arg)(self.value(a) for a in arg)
        return arg

    def blob(self, node: fx.Node, arg: Any) -> str:
        """The Caffe blob of a tensor argument of ``node``; refuses a constant or a value Caffe has no blob of."""
        if not isinstance(arg, fx.Node):
            raise self.refuse(node, f"takes a constant {type(arg).__name__} where Caffe needs a blob; compute it "
                                    "from the input or make it a parameter of a supported layer")
        if arg not in self.tops:
            raise self.refuse(node, f"its input {quote(arg.name)} ({self.describe(arg)}) is no tensor a Caffe blob "
                                    "can hold")
        return self.tops[arg]

    @staticmethod
    def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
        """Argument ``index`` (positional) or ``name`` (keyword) of a call, else ``default``."""
        if len(node.args) > index:
            return node.args[index]
        return node.kwargs.get(name, default)

    def pointwise(self, node: fx.Node, *inputs: fx.Node) -> None:
        """``node`` keeps its inputs' spatial size: 1 x 1 at every size if they all are."""
        if inputs and all(i in self.unit for i in inputs):
            self.unit.add(node)
