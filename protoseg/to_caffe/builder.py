"""The net being written: a V2 ``NetParameter`` grown layer by layer, its blobs, and the limits of its validity.

Emitters (:mod:`protoseg.to_caffe.emit`) only call :meth:`NetBuilder.layer`; names are made unique here, each
layer's parameter blobs are kept as float32 arrays in Caffe's layout, and a fact that holds only at some input
sizes (a pooling whose rounding agrees with torch's only there, a resize by a fixed factor) is recorded with
:meth:`NetBuilder.condition` so that the caller can say it once, rather than approximate silently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from protoseg.errors import ProtosegError, quote
from protoseg.forks import get
from protoseg.proto import assign, caffe_pb2

#: Caffe ``ParamSpec`` of a constant blob: the solver never changes it (BatchNorm statistics, fixed kernels).
FROZEN = {"lr_mult": 0.0, "decay_mult": 0.0}


class NetBuilder:
    """A Caffe net under construction. Layer and blob names share one namespace, so a layer's name is its top's."""

    def __init__(self, name: str) -> None:
        self.netparam = caffe_pb2.NetParameter(name=name)
        self.blobs: dict[str, list[np.ndarray]] = {}
        self.conditions: list[str] = []
        self._taken: set[str] = set()

    def fresh(self, base: str) -> str:
        """A name no layer or blob of this net uses yet, reading like ``base``."""
        base = base or "layer"
        name, i = base, 1
        while name in self._taken:
            i += 1
            name = f"{base}_{i}"
        self._taken.add(name)
        return name

    def input(self, name: str, shape: Sequence[int]) -> str:
        top = self.fresh(name)
        lp = self.netparam.layer.add(name=top, type="Input", top=[top])
        lp.input_param.shape.add().dim.extend(int(d) for d in shape)
        return top

    def layer(self, base: str, type_: str, bottoms: Sequence[str], *, top: str | None = None,
              blobs: Sequence[np.ndarray] = (), frozen: Sequence[bool] = (), **params) -> str:
        """Append a layer and return its top. ``params`` maps a ``*_param`` field to a dict of its values;
        ``top`` (an existing blob) makes the layer work in place; ``frozen[i]`` freezes blob ``i``."""
        name = self.fresh(base)
        lp = self.netparam.layer.add(name=name, type=type_, bottom=list(bottoms), top=[top or name])
        for field, values in params.items():
            assign(lp, field, values)
        if frozen:
            for i in range(len(blobs)):
                spec = lp.param.add()
                if frozen[i]:
                    for key, value in FROZEN.items():
                        assign(spec, key, value)
        if blobs:
            self.blobs[name] = [np.array(b, dtype=np.float32, copy=True) for b in blobs]
        return top or name

    def condition(self, text: str) -> None:
        if text not in self.conditions:
            self.conditions.append(text)


def declare_inputs(netparam, fork: str) -> None:
    """Declare the net's inputs as ``fork``'s Caffe reads them (:attr:`protoseg.forks.Fork.inputs`): Input
    layers stay for BVLC and NVCaffe; the forks taken before 2016 have no Input layer (nor ``input_param``: its
    field number means something else in DeepLab v2's), so there they become net-level ``input`` with
    ``input_shape``, or with four ``input_dim`` for DeepLab v1 and DeconvNet."""
    style = get(fork).inputs
    if style == "layer":
        return
    kept = [lp for lp in netparam.layer if lp.type != "Input"]
    for lp in netparam.layer:
        if lp.type != "Input":
            continue
        shapes = list(lp.input_param.shape)
        for i, top in enumerate(lp.top):
            dims = list(shapes[i if len(shapes) > 1 else 0].dim) if shapes else []
            if style == "dim" and len(dims) != 4:
                raise ProtosegError(f"input {quote(top)} has {len(dims)} axes, but {get(fork).title} declares "
                                    "inputs by four input_dim (N, C, H, W)")
            netparam.input.append(top)
            if style == "dim":
                netparam.input_dim.extend(dims)
            else:
                netparam.input_shape.add().dim.extend(dims)
    del netparam.layer[:]
    netparam.layer.extend(kept)
