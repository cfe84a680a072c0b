"""Turn the IR into a ``torch.fx.GraphModule`` that reads like the prototxt.

One ``call_module`` per Caffe layer, the submodule named after the layer and the node after its top blob, so
``print(gm.code)`` shows ``conv1_1 = self.conv1_1(data)`` and :mod:`protoseg.verify` can tap any blob.
Each node's ``meta`` keeps ``caffe_layer``, ``caffe_type``, ``caffe_blob`` and ``blob`` (the IR's SSA name; fx renames
nodes that would shadow a Python builtin, such as ``abs`` or ``sum``). Weights shared through
``param { name }`` are one ``nn.Parameter`` held by every layer that shares it.
"""

from __future__ import annotations

import keyword
import operator
import re
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import fx, nn

from protoseg.ir import Net


def attr_name(layer_name: str, taken: set[str]) -> str:
    """A Python identifier for a submodule, from a Caffe layer name (``conv5_3_pool1/conv`` -> ``conv5_3_pool1_conv``)."""
    base = re.sub(r"\W", "_", layer_name) or "layer"
    if base[0].isdigit() or keyword.iskeyword(base):
        base = "_" + base
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _parameter(array: np.ndarray) -> nn.Parameter:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return nn.Parameter(tensor, requires_grad=False)


def to_graph(net: Net, blobs: Mapping[str, Sequence[np.ndarray]] | None = None) -> fx.GraphModule:
    """Build the GraphModule of ``net``; ``blobs`` maps layer name -> arrays shaped as ``layer.blob_shapes``
    (see :func:`protoseg.params.match_weights`). Without ``blobs``, parameters are zeros of the right shape."""
    root = nn.Module()
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for name in net.inputs:
        node = graph.placeholder(name)
        node.meta.update(blob=name, caffe_blob=net.caffe_name.get(name, name), caffe_layer=None, caffe_type="Input")
        env[name] = node

    params: dict[tuple[str, int], nn.Parameter] = {}
    taken: set[str] = set()
    for layer in net.layers:
        tensors = []
        for i, owner in enumerate(layer.owners):
            if owner not in params:
                if blobs is None:
                    params[owner] = nn.Parameter(torch.zeros(layer.blob_shapes[i]), requires_grad=False)
                else:
                    params[owner] = _parameter(blobs[owner[0]][owner[1]])
            tensors.append(params[owner])
        attr = attr_name(layer.name, taken)
        root.add_module(attr, layer.converter.module(tensors))
        args = tuple(env[b] for b in layer.bottoms)
        meta = dict(caffe_layer=layer.name, caffe_type=layer.type)
        if len(layer.tops) == 1:
            node = graph.create_node("call_module", attr, args, name=layer.tops[0])
            node.meta.update(meta, blob=layer.tops[0], caffe_blob=layer.caffe_tops[0])
            env[layer.tops[0]] = node
            continue
        group = graph.create_node("call_module", attr, args, name=attr)
        group.meta.update(meta, blob=None, caffe_blob=None)
        for i, (top, caffe) in enumerate(zip(layer.tops, layer.caffe_tops)):
            node = graph.create_node("call_function", operator.getitem, (group, i), name=top)
            node.meta.update(meta, blob=top, caffe_blob=caffe)
            env[top] = node

    outs = [env[o] for o in net.outputs]
    graph.output(outs[0] if len(outs) == 1 else {net.caffe_name.get(o, o): env[o] for o in net.outputs})
    graph.lint()
    gm = fx.GraphModule(root, graph, class_name=_class_name(net.name))
    gm.eval()
    return gm


def _class_name(name: str) -> str:
    parts = re.split(r"\W+|_", name or "")
    return "".join(p[:1].upper() + p[1:] for p in parts if p) or "CaffeNet"
