"""A protoseg graph back to the Caffe files it came from, with the parameters it holds now (after fine-tuning).

:meth:`protoseg.loader.OpenNet.graph` keeps the V2 ``NetParameter`` and the fork in ``gm.meta["caffe_source"]``
(:func:`record`); ``gm.meta["owners"]`` maps each parameter to the ``(layer, blob index)`` that owns it. The
net's IR is rebuilt from the record (no tensors: shapes and sharing only) to know every layer's blobs in Caffe's
order and shapes: each layer gets its blobs as Caffe's ``Net::ToProto`` writes them, shared blobs repeated at
every layer that shares them, each in the shape the prototxt implies (the shape the graph's parameter has).
"""

from __future__ import annotations

import warnings

import numpy as np
from torch import fx

from protoseg.errors import ProtosegError, ProtosegWarning, quote
from protoseg.forks import FORKS
from protoseg.ir import Net, build_net
from protoseg.layers.base import converter_for
from protoseg.proto import caffe_pb2
from protoseg.to_caffe.builder import declare_inputs
from protoseg.to_caffe.ops import array

SOURCE_KEY = "caffe_source"


def is_protoseg_graph(module) -> bool:
    return isinstance(module, fx.GraphModule) and "owners" in module.meta


def record(gm: fx.GraphModule, netparam, fork: str) -> None:
    """Record on ``gm`` the net it was built from (:meth:`protoseg.loader.OpenNet.graph` does): the V2 net as
    bytes, so that the graph still pickles (``torch.save(gm)``) and copies cheaply, and its fork."""
    gm.meta[SOURCE_KEY] = {"netparam": netparam.SerializeToString(), "fork": fork}


def deploy_netparam(net: Net):
    """A V2 net of the IR's inputs (as Input layers) and layers: the deploy form of a net whose prototxt is not
    at hand (a ``.pt2``, whose record rebuilds the IR)."""
    netparam = caffe_pb2.NetParameter(name=net.name)
    if net.inputs:
        taken = {layer.name for layer in net.layers}
        name = next(n for n in ("input", *(f"input_{i}" for i in range(2, len(taken) + 3))) if n not in taken)
        lp = netparam.layer.add(name=name, type="Input", top=[net.caffe_name.get(i, i) for i in net.inputs])
        for shape in net.inputs.values():
            lp.input_param.shape.add().dim.extend(shape)
    for layer in net.layers:
        netparam.layer.add().CopyFrom(layer.converter.param)
    return netparam


def from_graph(gm: fx.GraphModule, dialect: str | None, name: str | None):
    """``(netparam, blobs)`` of a protoseg graph: its own net, its parameters' current values."""
    source = gm.meta.get(SOURCE_KEY)
    if source is None:
        raise ProtosegError("this protoseg graph does not record the net it was built from; build it with "
                            "protoseg.load (or protoseg.loader.open_net(...).graph())")
    if "precision" in gm.meta:
        raise ProtosegError("this is a fast graph (BatchNorm and Scale folded into the convolutions); write the "
                            "faithful one: protoseg.load(..., fast=False)")
    netparam = caffe_pb2.NetParameter.FromString(source["netparam"])
    if name:
        netparam.name = name
    fork = source["fork"]
    if dialect is not None:
        _check_dialect(netparam, fork, dialect)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    shapes = {n.meta["caffe_blob"]: tuple(n.meta["shape"]) for n in placeholders if "shape" in n.meta}
    net = build_net(netparam, shapes, fork=fork, source=netparam.name)
    params = {owner: fqn for fqn, owner in gm.meta["owners"].items()}
    blobs: dict[str, list[np.ndarray]] = {}
    for layer in net.layers:
        arrays = []
        for i, owner in enumerate(layer.owners):
            if owner not in params:
                raise ProtosegError(f"layer {quote(layer.name)} ({layer.type}): the graph holds no parameter for "
                                    f"its blob {i}; it was built without this layer (outputs=...): load the whole "
                                    "net to write it")
            value = array(gm.get_parameter(params[owner]))
            if value.shape != tuple(layer.blob_shapes[i]):
                raise ProtosegError(f"layer {quote(layer.name)} ({layer.type}): parameter {quote(params[owner])} is "
                                    f"{value.shape} but Caffe's blob {i} is {layer.blob_shapes[i]}")
            arrays.append(value)
        if arrays:
            blobs[layer.name] = arrays
    declare_inputs(netparam, dialect or fork)
    if not FORKS[dialect or fork].reads_v2:
        warnings.warn(f"{FORKS[dialect or fork].title} reads V1 prototxts (layers {{}}) only; the V2 net written here "
                      "is read alike by protoseg (and by a later Caffe that has its layers), not by that Caffe",
                      ProtosegWarning, stacklevel=3)
    return netparam, blobs


def _check_dialect(netparam, fork: str, dialect: str) -> None:
    """A graph is written in its own fork; another dialect is fine only where it reads every layer alike."""
    for lp in netparam.layer:
        if converter_for(lp.type, dialect) is not converter_for(lp.type, fork):
            raise ProtosegError(f"layer {quote(lp.name)} ({lp.type}) is a layer of {FORKS[fork].title}, which "
                                f"{FORKS[dialect].title} reads otherwise or not at all; write this net with "
                                f"dialect={fork!r} (or None: its own)")


def load_parameters(gm: fx.GraphModule, path) -> None:
    """Replace ``gm``'s parameter values with those of a ``.safetensors`` file keyed by the graph's parameter
    names, as ``safetensors.torch.save_model(gm, path)`` writes them after fine-tuning (one name per shared
    tensor). Every Caffe blob must get a value, and every tensor in the file must be one of the graph's."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ProtosegError(f"{path}: cannot be read as .safetensors ({e})") from None
    owners = gm.meta["owners"]
    unknown = sorted(set(tensors) - set(owners))
    if unknown:
        raise ProtosegError(f"{path}: {', '.join(map(quote, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} "
                            "name no parameter of this net; save the graph's own state (save_model(gm, FILE))")
    missing = sorted({f"{layer}[{i}]" for fqn, (layer, i) in owners.items()}
                     - {f"{owners[k][0]}[{owners[k][1]}]" for k in tensors})
    if missing:
        raise ProtosegError(f"{path}: holds no value for blob(s) {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''}")
    with torch.no_grad():
        for key, value in tensors.items():
            target = gm.get_parameter(key)
            if tuple(value.shape) != tuple(target.shape):
                raise ProtosegError(f"{path}: {quote(key)} is {tuple(value.shape)} but the net's parameter is "
                                    f"{tuple(target.shape)}; is this file from this net?")
            target.copy_(value.to(target.dtype))
