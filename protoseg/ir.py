"""The one central structure: a Caffe net as ordered layers over SSA-named blobs, with inferred shapes.

Caffe lets a layer write its top into its bottom (in-place ReLU, BatchNorm, Scale, Dropout), so one Caffe blob
name stands for several values over a forward pass. The IR gives every written value its own name so each can
be observed: the last value of a blob keeps the plain Caffe name (the value ``net.blobs`` shows after a
forward), earlier ones get ``NAME__1``, ``NAME__2``… in write order.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from protoseg.coordmap import crop_offsets
from protoseg.errors import ProtosegError, ProtosegWarning, ShapeError, UnsupportedLayerError, layer_error
from protoseg.layers.base import Converter, Shape, converter_for, product, registered_types


@dataclass
class Layer:
    """One compute layer of the inference graph."""

    name: str
    type: str
    converter: Converter
    bottoms: list[str]  # SSA names
    tops: list[str]  # SSA names
    caffe_tops: list[str]  # the tops' Caffe blob names
    shapes: list[Shape] = field(default_factory=list)
    blob_shapes: list[Shape] = field(default_factory=list)
    #: Per parameter blob: the layer and index that owns it (itself unless shared through ``param { name }``).
    owners: list[tuple[str, int]] = field(default_factory=list)

    @property
    def param(self):
        return self.converter.param

    @property
    def num_params(self) -> int:
        """Parameters this layer owns (blobs it shares from another layer count there)."""
        return sum(product(s) for i, s in enumerate(self.blob_shapes) if self.owners[i] == (self.name, i))


@dataclass
class Net:
    name: str
    inputs: dict[str, Shape]  # SSA blob name -> shape, in net order
    layers: list[Layer]
    outputs: list[str]
    #: Layers dropped from the inference graph (losses, accuracies, writers), by name.
    pruned: list[str] = field(default_factory=list)
    #: SSA name -> Caffe blob name, for every value in the graph.
    caffe_name: dict[str, str] = field(default_factory=dict)
    #: Caffe names of every data-layer top, including those the inference graph does not use (``label``).
    data_tops: list[str] = field(default_factory=list)

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def shape(self, blob: str) -> Shape:
        if blob in self.inputs:
            return self.inputs[blob]
        for layer in self.layers:
            if blob in layer.tops:
                return layer.shapes[layer.tops.index(blob)]
        raise KeyError(blob)


def _converter(param) -> Converter:
    cls = converter_for(param.type)
    if cls is None:
        known = registered_types()
        close = difflib.get_close_matches(param.type, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise layer_error(
            UnsupportedLayerError, param.name, param.type,
            f"protoseg has no converter for Caffe type {param.type!r}; {hint}supported: {', '.join(known)}",
        )
    return cls(param)


def _ssa_names(layers: Sequence[tuple[Converter, list[str], list[str]]]) -> Iterable[tuple[list[str], list[str]]]:
    """Yield (bottoms, tops) SSA names per layer: a blob's last write keeps its Caffe name."""
    writes: dict[str, int] = {}
    for _, _, tops in layers:
        for top in tops:
            writes[top] = writes.get(top, 0) + 1
    seen: dict[str, int] = {}

    def name(blob: str, version: int) -> str:
        return blob if version == writes[blob] else f"{blob}__{version}"

    current: dict[str, str] = {}
    for _, bottoms, tops in layers:
        ssa_bottoms = [current[b] for b in bottoms]
        ssa_tops = []
        for t in tops:
            seen[t] = seen.get(t, 0) + 1
            current[t] = name(t, seen[t])
            ssa_tops.append(current[t])
        yield ssa_bottoms, ssa_tops


def build_net(
    netparam,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
) -> Net:
    """Build the inference IR of an upgraded V2 ``NetParameter`` (see :func:`protoseg.io.upgrade.load_net`).

    ``input_shapes`` overrides the shapes of input blobs (by Caffe name); ``outputs`` picks the output blobs
    (default: every blob no compute layer consumes). Layers that do not contribute to the outputs are dropped.
    """
    input_shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    entries = []
    for lp in netparam.layer:
        conv = _converter(lp)
        entries.append((conv, list(lp.bottom), list(lp.top)))
    # Pruned layers neither define nor consume values, so drop them before naming.
    pruned = [c.name for c, _, _ in entries if c.role == "prune"]
    entries = [e for e in entries if e[0].role != "prune"]

    inputs: dict[str, Shape] = {}
    layers: list[Layer] = []
    caffe_name: dict[str, str] = {}
    shapes: dict[str, Shape] = {}
    producers: dict[str, tuple[Converter, list[str]]] = {}
    produced: set[str] = set()
    for conv, bottoms, tops in entries:
        for b in bottoms:
            if b not in produced:
                raise layer_error(
                    ShapeError, conv.name, conv.type,
                    f"bottom {b!r} is not produced by any earlier layer or input; check the bottom names",
                )
        produced.update(tops)
    named = zip(entries, _ssa_names(entries))

    for (conv, _, caffe_tops), (bottoms, tops) in named:
        for ssa, caffe in zip(tops, caffe_tops):
            caffe_name[ssa] = caffe
        if conv.role == "input":
            declared = conv.infer([])
            for top, caffe, shape in zip(tops, caffe_tops, declared):
                shape = input_shapes.get(caffe, shape)
                inputs[top] = shapes[top] = tuple(shape)
            continue
        in_shapes = [shapes[b] for b in bottoms]
        if getattr(conv, "needs_coordmap", False):
            _infer_crop(conv, bottoms, producers)
        try:
            out_shapes = conv.infer(in_shapes)
            blob_shapes = conv.blob_shapes(in_shapes)
        except ProtosegError:
            raise
        except (ValueError, IndexError, ZeroDivisionError) as e:
            raise conv.shape_error(f"cannot infer shapes from bottoms {in_shapes}: {e}") from None
        for top, shape in zip(tops, out_shapes):
            shapes[top] = tuple(shape)
            producers[top] = (conv, bottoms)
        layers.append(Layer(conv.name, conv.type, conv, bottoms, tops, caffe_tops, list(out_shapes), list(blob_shapes)))

    unknown_inputs = set(input_shapes) - {caffe_name[i] for i in inputs}
    if unknown_inputs:
        raise ShapeError(
            f"--input names {', '.join(sorted(unknown_inputs))} but the net's inputs are "
            f"{', '.join(caffe_name[i] for i in inputs) or 'none'}"
        )
    _resolve_sharing(netparam, layers)
    out_names = _outputs(layers, inputs, outputs, caffe_name)
    data_tops = [caffe_name[i] for i in inputs]
    layers, inputs = _prune_unused(layers, inputs, out_names)
    return Net(netparam.name, inputs, layers, out_names, pruned, caffe_name, data_tops)


def _infer_crop(conv: Converter, bottoms: list[str], producers) -> None:
    """A Crop without crop_param: offsets from the coordinate mapping, else 0 as BVLC Caffe does."""
    offsets = crop_offsets(bottoms[0], bottoms[1], producers)
    if offsets is None:
        return
    conv.inferred = offsets
    warnings.warn(
        f"layer {conv.name!r} (Crop) has no crop_param: offsets {offsets} (H, W) inferred from the coordinate "
        f"mapping, as the Caffe of 2016 did; write crop_param {{ axis: 2 offset: ... }} to silence this",
        ProtosegWarning,
        stacklevel=3,
    )


def _outputs(layers: list[Layer], inputs: Mapping[str, Shape], wanted: Sequence[str] | None,
             caffe_name: Mapping[str, str]) -> list[str]:
    produced = [t for layer in layers for t in layer.tops]
    if wanted:
        final = {caffe_name[t]: t for t in produced}  # the last write of each Caffe blob wins
        final.update({caffe_name[t]: t for t in inputs if caffe_name[t] not in final})
        missing = [w for w in wanted if w not in final and w not in caffe_name]
        if missing:
            raise ShapeError(f"no blob named {', '.join(map(repr, missing))}; blobs are: {', '.join(final)}")
        return [final.get(w, w) for w in wanted]
    consumed = {b for layer in layers for b in layer.bottoms}
    return [t for t in produced if t not in consumed and t == caffe_name[t]]


def _prune_unused(layers: list[Layer], inputs: dict[str, Shape], outputs: list[str]):
    needed = set(outputs)
    kept = []
    for layer in reversed(layers):
        if needed.intersection(layer.tops):
            kept.append(layer)
            needed.update(layer.bottoms)
    kept.reverse()
    return kept, {k: v for k, v in inputs.items() if k in needed}


def _resolve_sharing(netparam, layers: list[Layer]) -> None:
    """Caffe's param sharing: the first layer naming a param owns it; later ones must match its shape."""
    specs = {lp.name: [p.name for p in lp.param] for lp in netparam.layer}
    owner_of: dict[str, tuple[Layer, int]] = {}
    for layer in layers:
        names = specs.get(layer.name, [])
        layer.owners = []
        for i, shape in enumerate(layer.blob_shapes):
            pname = names[i] if i < len(names) else ""
            if pname and pname in owner_of:
                owner, j = owner_of[pname]
                if owner.blob_shapes[j] != shape:
                    raise layer_error(
                        ShapeError, layer.name, layer.type,
                        f"shares param {pname!r} with layer {owner.name!r}, but its blob {i} is {shape} "
                        f"and the owner's is {owner.blob_shapes[j]}",
                    )
                layer.owners.append((owner.name, j))
            else:
                if pname:
                    owner_of[pname] = (layer, i)
                layer.owners.append((layer.name, i))

