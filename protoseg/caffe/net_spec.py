"""pycaffe's ``net_spec``: ``caffe.layers``, ``caffe.params``, ``NetSpec`` and ``to_proto`` write prototxts from
Python (Dilation's ``network.py`` builds its nets this way), on protoseg's schema so every fork's fields exist."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

from protoseg.errors import ProtosegError
from protoseg.proto import assign, caffe_pb2


def _param_fields() -> dict[str, str]:
    """Layer type -> its ``*_param`` field, from the message type's name (``ConvolutionParameter`` ->
    ``convolution_param``), as pycaffe's ``net_spec`` finds where a keyword argument goes."""
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields
    return {f.message_type.name[:-len("Parameter")]: f.name for f in fields
            if f.name.endswith("_param") and f.message_type is not None and f.message_type.name.endswith("Parameter")}


class Top:
    """One output of a layer being specified (``caffe.layers.X(...)`` returns these)."""

    def __init__(self, fn: Function, n: int) -> None:
        self.fn, self.n = fn, n

    def to_proto(self) -> Any:
        return to_proto(self)

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer being specified: its type, bottoms and keyword parameters (``ntop``, ``in_place`` are special)."""

    def __init__(self, type_name: str, inputs: Sequence[Top], params: dict[str, Any]) -> None:
        for i, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError(f"{type_name} input {i} is a {type(bottom).__name__}, not a Top")
        self.type_name, self.inputs = type_name, tuple(inputs)
        self.params = dict(params)
        self.ntop = int(self.params.pop("ntop", 1))
        self.in_place = bool(self.params.pop("in_place", False))
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _auto(self, key: Any, names: dict, autonames: Counter) -> str:
        if key not in names:
            autonames[self.type_name] += 1
            names[key] = f"{self.type_name}{autonames[self.type_name]}"
        return names[key]

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        if self in layers:
            return
        bottoms = []
        for top in self.inputs:
            top.fn._to_proto(layers, names, autonames)
            bottoms.append(layers[top.fn].top[top.n])
        layer = caffe_pb2.LayerParameter(type=self.type_name)
        layer.bottom.extend(bottoms)
        layer.top.extend(bottoms if self.in_place else [self._auto(t, names, autonames) for t in self.tops])
        if self not in names:
            names[self] = self._auto(self.tops[0], names, autonames) if self.tops else self._auto(self, names,
                                                                                                 autonames)
        layer.name = names[self]
        own = _PARAM_FIELDS.get(self.type_name)
        for key, value in self.params.items():
            if key.endswith("param") or own is None or not hasattr(getattr(layer, own), key):
                assign(layer, key, value)  # a *_param, or a LayerParameter field such as loss_weight
            else:
                assign(getattr(layer, own), key, value)
        layers[self] = layer


def to_proto(*tops: Top) -> Any:
    """The ``NetParameter`` computing ``tops`` (layers named after their type: ``Convolution1``...)."""
    layers: OrderedDict = OrderedDict()
    names: dict = {}
    autonames: Counter = Counter()
    for top in tops:
        top._to_proto(layers, names, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """pycaffe's ``NetSpec``: assign layers' tops as attributes (``n.conv1 = L.Convolution(n.data, ...)``) and
    ``to_proto()`` names each layer and top after its attribute."""

    def __init__(self) -> None:
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value: Top) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str) -> Top:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    __setitem__ = __setattr__

    def __getitem__(self, name: str) -> Top:
        return self.tops[name]

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def keys(self) -> list[str]:
        return list(self.tops)

    def vals(self) -> list[Top]:
        return list(self.tops.values())

    def to_proto(self) -> Any:
        names: dict = {top: name for name, top in self.tops.items()}
        layers: OrderedDict = OrderedDict()
        autonames: Counter = Counter()
        for top in self.tops.values():  # a Top, or a Function of no tops (ntop=0)
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class _Layers:
    """``caffe.layers``: ``L.Convolution(bottom, ..., ntop=1)`` specifies a layer of that type and returns its
    top (its tops for ``ntop`` > 1, the layer itself for ``ntop=0``)."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer(*inputs: Top, **params: Any):
            fn = Function(type_name, inputs, params)
            return fn if fn.ntop == 0 else fn.tops[0] if fn.ntop == 1 else fn.tops

        return layer


class _Params:
    """``caffe.params``: ``P.Pooling.MAX`` is ``caffe_pb2.PoolingParameter.MAX``."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(caffe_pb2, name + "Parameter")
        except AttributeError:
            raise ProtosegError(f"caffe.params.{name}: protoseg's Caffe schema has no {name}Parameter (it holds "
                                "the messages of the forks protoseg reads)") from None




_PARAM_FIELDS = _param_fields()
layers = _Layers()
params = _Params()
