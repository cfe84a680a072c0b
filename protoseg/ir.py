"""The one central structure: a Caffe net as ordered layers over SSA-named blobs, with inferred shapes.

Caffe lets a layer write its top into its bottom (in-place ReLU, BatchNorm, Scale, Dropout), so one Caffe blob
name stands for several values over a forward pass. The IR gives every written value its own name so each can
be observed: the last value of a blob keeps the plain Caffe name (the value ``net.blobs`` shows after a
forward), earlier ones get ``NAME__1``, ``NAME__2``… in write order, lengthened where a file already uses
that name for another blob, so SSA names are unique by construction.
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from protoseg import forks
from protoseg.coordmap import Lineages
from protoseg.errors import ProtosegError, ProtosegWarning, ShapeError, UnsupportedLayerError, layer_error, quote
from protoseg.layers.base import Bottoms, Converter, Shape, converter_for, forks_defining, product, registered

#: Layer types of Caffe forks protoseg does not read, so an error can say where a file comes from.
FOREIGN_TYPES = {
    "ROIPooling": "py-faster-rcnn's Caffe", "Proposal": "py-faster-rcnn's Caffe", "PSROIPooling": "R-FCN's Caffe",
    "PriorBox": "SSD's Caffe", "DetectionOutput": "SSD's Caffe", "MultiBoxLoss": "SSD's Caffe",
    "Normalize": "SSD's Caffe", "Permute": "SSD's Caffe", "AnnotatedData": "SSD's Caffe",
    "Region": "YOLO ports of Caffe", "Reorg": "YOLO ports of Caffe", "Yolo": "YOLO ports of Caffe",
    "ShuffleChannel": "ShuffleNet ports of Caffe", "DepthwiseConvolution": "MobileNet ports of Caffe",
    "ConvolutionDepthwise": "MobileNet ports of Caffe", "Axpy": "SENet's Caffe", "CTCLoss": "warp-ctc Caffe",
}


@dataclass
class Layer:
    """One compute layer of the inference graph."""

    name: str
    type: str
    converter: Converter
    bottoms: list[str]  # SSA names
    tops: list[str]  # SSA names
    caffe_tops: list[str]  # the tops' Caffe blob names
    bottom_shapes: Bottoms = field(default_factory=lambda: Bottoms(()))
    shapes: list[Shape] = field(default_factory=list)  # of the tops
    blob_shapes: list[Shape] = field(default_factory=list)
    #: Per parameter blob: the layer and index that owns it (itself unless shared through ``param { name }``).
    owners: list[tuple[str, int]] = field(default_factory=list)

    @property
    def param(self):
        return self.converter.param

    @property
    def where(self) -> str:
        return self.converter.where

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
    fork: str = forks.BVLC
    source: str = ""  # the prototxt's path, for messages

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


def where(source: str, param) -> str:
    """``file:line`` of a layer (its line is recorded by the prototxt reader), or just the file."""
    line = getattr(param, "protoseg_line", 0)
    return f"{source}:{line}" if source and line else source


def make_converter(param, fork: str = forks.BVLC, source: str = "") -> Converter:
    """The converter of one upgraded ``LayerParameter`` in ``fork``, with an error that says where its type
    comes from when protoseg has none."""
    at = where(source, param)
    cls = converter_for(param.type, fork)
    if cls is None:
        owners = forks_defining(param.type)
        classes = {registered()[(f, param.type)] for f in owners}
        if len(classes) == 1:
            owners = [f for f in forks.FORKS if f in owners]
            titles = " and ".join(forks.FORKS[f].title for f in owners)
            warnings.warn(f"{at + ': ' if at else ''}layer {quote(param.name)} ({param.type}) is a layer of {titles}, "
                          f"but the rest of the file reads as {forks.FORKS[fork].title}; converting it as "
                          f"{'that Caffe does' if len(owners) == 1 else 'those Caffes do'}", ProtosegWarning,
                          stacklevel=3)
            return classes.pop()(param, where=at, fork=owners[0])
        raise layer_error(UnsupportedLayerError, param.name, param.type, _unknown_type(param.type, fork, owners), at)
    return cls(param, where=at, fork=fork)


def _unknown_type(type_name: str, fork: str, owners: list[str]) -> str:
    if owners:
        titles = " and ".join(forks.FORKS[f].title for f in owners)
        return (f"{quote(type_name)} means different layers in {titles}, and nothing tells which wrote this file; "
                f"pass --fork {' or --fork '.join(owners)}")
    if type_name in FOREIGN_TYPES:
        return (f"{quote(type_name)} is a layer of {FOREIGN_TYPES[type_name]}, which protoseg does not read "
                f"(it reads {', '.join(f.title for f in forks.FORKS.values())})")
    known = sorted({t for _, t in registered()})
    close = [t for t in known if t.lower() == type_name.lower()] or difflib.get_close_matches(type_name, known, 1, 0.85)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"no Caffe protoseg reads ({', '.join(forks.FORKS)}) has a layer type {quote(type_name)}; {hint}"
            "see docs/layers.md for the supported types")


def _ssa_names(entries: Sequence[tuple[Converter, list[str], list[str]]]) -> Iterable[tuple[list[str], list[str]]]:
    """Yield (bottoms, tops) SSA names per layer: a blob's last write keeps its Caffe name; earlier writes get
    ``NAME__N``, made longer if that collides with a name the file uses."""
    writes = Counter(top for _, _, tops in entries for top in tops)
    taken = set(writes) | {b for _, bottoms, _ in entries for b in bottoms}
    seen: Counter[str] = Counter()

    def version(blob: str, n: int) -> str:
        if n == writes[blob]:
            return blob
        name = f"{blob}__{n}"
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    current: dict[str, str] = {}
    for _, bottoms, tops in entries:
        ssa_bottoms = [current.get(b, b) for b in bottoms]
        ssa_tops = []
        for t in tops:
            seen[t] += 1
            current[t] = version(t, seen[t])
            ssa_tops.append(current[t])
        yield ssa_bottoms, ssa_tops


def build_net(
    netparam,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
    *,
    fork: str | None = None,
    source: str = "",
    strict_inputs: bool = True,
) -> Net:
    """Build the inference IR of an upgraded V2 ``NetParameter`` (see :func:`protoseg.io.upgrade.load_net`).

    ``input_shapes`` overrides the shapes of input blobs (by Caffe name), and gives the shape of a blob no
    layer of this phase produces (a TRAIN-only data layer); ``outputs`` picks the output blobs (default:
    every blob no compute layer consumes). Layers that do not contribute to the outputs are dropped.
    ``fork`` chooses the converters (:mod:`protoseg.forks`; default: detected from ``netparam``, though the
    loader detects it better, before the upgrade and with the caffemodel); ``source`` names the file. With
    ``strict_inputs`` false, names in ``input_shapes`` that are no input are ignored (Caffe's ``reshape`` to a
    reference's arrays).
    """
    input_shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    if fork is None:
        from protoseg.loader import detect_fork

        fork = detect_fork(netparam).fork
    entries = [(make_converter(lp, fork, source), list(lp.bottom), list(lp.top)) for lp in netparam.layer]
    # Pruned layers neither define nor consume values, so drop them before naming.
    pruned = [c.name for c, _, _ in entries if c.role == "prune"]
    entries = [e for e in entries if e[0].role != "prune"]
    external = _external_inputs(entries, input_shapes, netparam)
    if external:  # blobs of a TRAIN-only data layer, shaped by --input: a data layer of their own
        from protoseg.proto import caffe_pb2

        lp = caffe_pb2.LayerParameter(name="--input", type="Input", top=external)
        for b in external:
            lp.input_param.shape.add().dim.extend(input_shapes[b])
        entries.insert(0, (make_converter(lp, fork, source), [], external))

    inputs: dict[str, Shape] = {}
    resized: list[tuple[str, Shape | None]] = []  # inputs sized unlike their layer declares (None: it declares none)
    layers: list[Layer] = []
    caffe_name: dict[str, str] = {}
    shapes: dict[str, Shape] = {}
    lineages = Lineages()

    for (conv, _, caffe_tops), (bottoms, tops) in zip(entries, _ssa_names(entries)):
        for ssa, caffe in zip(tops, caffe_tops):
            caffe_name[ssa] = caffe
        if conv.role == "input":
            for top, caffe, shape in zip(tops, caffe_tops, conv.declared()):
                if caffe in input_shapes:
                    if shape is not None and tuple(shape[2:]) != tuple(input_shapes[caffe][2:]):
                        resized.append((caffe, tuple(shape)))
                    shape = input_shapes[caffe]
                elif shape is None:
                    shape = conv.default_shape(caffe)
                    resized.append((caffe, None))
                    warnings.warn(f"{conv.where + ': ' if conv.where else ''}layer {quote(conv.name)} ({conv.type}) "
                                  f"does not say the shape of {quote(caffe)}: assuming {shape}; pass --input "
                                  f"{caffe}=N,C,H,W to set it", ProtosegWarning, stacklevel=2)
                inputs[top] = shapes[top] = conv.check_shape(tuple(shape), f"input {quote(caffe)}")
            continue
        in_shapes = Bottoms([shapes[b] for b in bottoms], lambda k, names=bottoms: lineages(names[k]))
        try:
            out_shapes = [conv.check_shape(tuple(s), f"top {quote(t)}")
                          for s, t in zip(conv.infer(in_shapes), caffe_tops)]
            blob_shapes = [conv.check_shape(tuple(s), f"parameter blob {i}")
                           for i, s in enumerate(conv.blob_shapes(in_shapes))]
        except ShapeError as e:
            raise _fixed_size_hint(e, resized, [c for c, _, _ in entries]) from None
        except ProtosegError:
            raise
        except (ValueError, IndexError, ZeroDivisionError, OverflowError, TypeError) as e:
            raise conv.shape_error(f"cannot infer shapes from bottoms {list(in_shapes)}: {e}") from None
        if len(out_shapes) != len(tops):
            raise conv.shape_error(f"gives {len(out_shapes)} top shapes for {len(tops)} tops")
        for top, shape in zip(tops, out_shapes):
            shapes[top] = shape
            lineages.add(top, lambda conv=conv, s=in_shapes: conv.coord_map(s), bottoms[0] if bottoms else None)
        layers.append(Layer(conv.name, conv.type, conv, bottoms, tops, list(caffe_tops), in_shapes, out_shapes,
                            blob_shapes))

    unknown_inputs = set(input_shapes) - {caffe_name[i] for i in inputs}
    if unknown_inputs and strict_inputs:
        raise ShapeError(
            f"{source + ': ' if source else ''}--input names {', '.join(map(quote, sorted(unknown_inputs)))} but the "
            f"net's inputs are {', '.join(quote(caffe_name[i]) for i in inputs) or 'none'}"
        )
    _check_unique_names(layers)
    _resolve_sharing(netparam, layers)
    out_names = _outputs(layers, inputs, outputs, caffe_name, source)
    data_tops = [caffe_name[i] for i in inputs]
    layers, inputs = _prune_unused(layers, inputs, out_names)
    return Net(netparam.name, inputs, layers, out_names, pruned, caffe_name, data_tops, fork, source)


def _fixed_size_hint(error: ShapeError, resized: list[tuple[str, Shape | None]],
                     converters: list[Converter]) -> ShapeError:
    """A shape error after an input was resized, in a net with layers that fix a spatial size (PSPNet's pyramid
    Interps, SegNet's upsample_h/w): say that the net takes only the size it was built for, and why."""
    fixed = [(c, why) for c in converters if (why := c.fixed_size()) is not None]
    if not resized or not fixed:
        return error
    conv, why = fixed[0]
    name, declared = resized[0]
    size = f" (its prototxt declares {quote(name)} {'x'.join(map(str, declared))})" if declared else ""
    return ShapeError(f"{error}; this net takes only the input size it was built for{size}, because layer "
                      f"{quote(conv.name)} ({conv.type}) fixes a size ({why}): give that size with --input "
                      f"{name}=N,C,H,W")


def _external_inputs(entries, input_shapes: Mapping[str, Shape], netparam) -> list[str]:
    """Blobs consumed before any layer of this phase produces them: inputs if ``--input`` gives their shape."""
    produced: set[str] = set()
    external: list[str] = []
    for conv, bottoms, tops in entries:
        for b in bottoms:
            if b in produced:
                continue
            if b in input_shapes:
                external.append(b)
                produced.add(b)
                continue
            elsewhere = [lp.name for lp in netparam.layer if b in lp.top]
            hint = (f"the layer that writes it, {quote(elsewhere[0])}, comes later" if elsewhere else
                    "no layer of this phase writes it (a TRAIN-only data layer?)")
            raise conv.shape_error(f"bottom {quote(b)} is not produced by any earlier layer or input: {hint}; "
                                   f"check the bottom names, or give its shape with --input {b}=N,C,H,W")
        produced.update(tops)
    return external


def _outputs(layers: list[Layer], inputs: Mapping[str, Shape], wanted: Sequence[str] | None,
             caffe_name: Mapping[str, str], source: str) -> list[str]:
    produced = [t for layer in layers for t in layer.tops]
    if wanted:
        final = {caffe_name[t]: t for t in produced}  # the last write of each Caffe blob wins
        final.update({caffe_name[t]: t for t in inputs if caffe_name[t] not in final})
        missing = [w for w in wanted if w not in final]
        if missing:
            listed = ", ".join(map(quote, list(final)[:20])) + (", ..." if len(final) > 20 else "")
            raise ShapeError(f"{source + ': ' if source else ''}no blob named {', '.join(map(quote, missing))}; "
                             f"blobs are: {listed}")
        return [final[w] for w in wanted]
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


def _check_unique_names(layers: list[Layer]) -> None:
    """Caffe finds a layer's weights by its name, so two layers with parameters cannot share one (HED's five
    parameterless Crops all called "crop" are fine)."""
    seen: dict[str, Layer] = {}
    for layer in layers:
        if not layer.blob_shapes:
            continue
        if layer.name in seen:
            first = seen[layer.name]
            raise layer_error(ShapeError, layer.name, layer.type,
                              f"a layer with parameters of the same name comes earlier"
                              f"{' (' + first.where + ')' if first.where else ''}; Caffe matches weights to layers "
                              "by name, so rename one of them", layer.where)
        seen[layer.name] = layer


def _resolve_sharing(netparam, layers: list[Layer]) -> None:
    """Caffe's param sharing: the first layer naming a param owns it; later ones must match its shape."""
    specs: dict[str, list[str]] = {}
    for lp in netparam.layer:
        specs.setdefault(lp.name, [p.name for p in lp.param])
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
                        f"shares param {quote(pname)} with layer {quote(owner.name)}, but its blob {i} is {shape} "
                        f"and the owner's is {owner.blob_shapes[j]}", layer.where,
                    )
                layer.owners.append((owner.name, j))
            else:
                if pname:
                    owner_of[pname] = (layer, i)
                layer.owners.append((layer.name, i))
