"""Turn the IR into a ``torch.fx.GraphModule`` that reads like the prototxt.

One ``call_module`` per Caffe layer, the submodule named after the layer and the node after its top blob, so
``print(gm.code)`` shows ``conv1_1 = self.conv1_1(data)`` and :mod:`protoseg.verify` can tap any blob. Every
such name goes through :func:`protoseg.names.identifier` (names from files never become code); each node's
``meta`` keeps the real ones: ``caffe_layer``, ``caffe_type``, ``caffe_blob`` and ``blob`` (the IR's SSA
name). Weights shared through ``param { name }`` are one ``nn.Parameter`` held by every layer that shares it.
With ``trainable`` the graph owns copies of the weights (graphs made from the same arrays share them otherwise),
those Caffe learns require grad, and the layers follow Caffe's TRAIN phase in ``train()`` mode
(:mod:`protoseg.train`).
"""

from __future__ import annotations

import operator
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import fx, nn

from protoseg.ir import Net
from protoseg.names import class_name, identifier
from protoseg.train import enable, resolve_specs


def _parameter(array: np.ndarray, copy: bool) -> nn.Parameter:
    array = np.array(array, dtype=np.float32) if copy else np.ascontiguousarray(array, dtype=np.float32)
    return nn.Parameter(torch.from_numpy(array), requires_grad=False)


def to_graph(net: Net, blobs: Mapping[str, Sequence[np.ndarray]] | None = None, *,
             trainable: bool = False) -> fx.GraphModule:
    """Build the GraphModule of ``net``; ``blobs`` maps layer name -> arrays shaped as ``layer.blob_shapes``
    (see :func:`protoseg.params.match_weights`). Without ``blobs``, parameters are zeros of the right shape.

    ``gm.meta["owners"]`` maps each parameter's qualified name to the ``(layer, blob index)`` that owns it. With
    ``trainable``, ``gm.meta["param_specs"]`` maps each owner to its ``(lr_mult, decay_mult)``
    (:func:`protoseg.train.resolve_specs`), and parameters with ``lr_mult`` not 0 require grad.
    """
    specs = resolve_specs(net) if trainable else None
    root = nn.Module()
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    names: set[str] = set()  # node names: the forward's local variables
    attrs: set[str] = set()  # submodule names: attributes of the GraphModule
    for ssa in net.inputs:
        node = graph.placeholder(identifier(ssa, names))
        node.meta.update(blob=ssa, caffe_blob=net.caffe_name.get(ssa, ssa), caffe_layer=None, caffe_type="Input",
                         shape=net.inputs[ssa])
        env[ssa] = node

    params: dict[tuple[str, int], nn.Parameter] = {}
    owner_of: dict[int, tuple[str, int]] = {}  # id(parameter) -> owner
    owners: dict[str, tuple[str, int]] = {}
    for layer in net.layers:
        tensors = []
        for i, owner in enumerate(layer.owners):
            if owner not in params:
                if blobs is None:
                    params[owner] = nn.Parameter(torch.zeros(layer.blob_shapes[i]), requires_grad=False)
                else:
                    params[owner] = _parameter(blobs[owner[0]][owner[1]], copy=trainable)
                owner_of[id(params[owner])] = owner
            tensors.append(params[owner])
        attr = identifier(layer.name, attrs, fallback="layer")
        module = layer.converter.module(layer.bottom_shapes, tensors)
        if trainable:
            enable(module, layer, net.caffe_name.get(layer.bottoms[0], "") if layer.bottoms else "")
        root.add_module(attr, module)
        for pname, p in module.named_parameters(remove_duplicate=False):
            if id(p) in owner_of:
                owners[f"{attr}.{pname}"] = owner_of[id(p)]
        args = tuple(env[b] for b in layer.bottoms)
        meta = dict(caffe_layer=layer.name, caffe_type=layer.type)
        if not layer.converter.multi_output:
            node = graph.create_node("call_module", attr, args, name=identifier(layer.tops[0], names))
            node.meta.update(meta, blob=layer.tops[0], caffe_blob=layer.caffe_tops[0])
            env[layer.tops[0]] = node
            continue
        group = graph.create_node("call_module", attr, args, name=identifier(f"{attr}_out", names))
        group.meta.update(meta, blob=None, caffe_blob=None)
        for i, (top, caffe) in enumerate(zip(layer.tops, layer.caffe_tops)):
            node = graph.create_node("call_function", operator.getitem, (group, i), name=identifier(top, names))
            node.meta.update(meta, blob=top, caffe_blob=caffe)
            env[top] = node

    outs = [env[o] for o in net.outputs]
    # Output keys are Caffe names: fx writes them as string literals (repr), never as code.
    graph.output(outs[0] if len(outs) == 1 else {net.caffe_name.get(o, o): env[o] for o in net.outputs})
    graph.lint()
    gm = fx.GraphModule(root, graph, class_name=class_name(net.name))
    gm.meta["owners"] = owners
    if specs is not None:
        for owner, p in params.items():
            p.requires_grad_(specs[owner][0] != 0)
        gm.meta["param_specs"] = specs
    gm.eval()
    return gm
