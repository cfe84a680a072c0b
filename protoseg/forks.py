"""The Caffe forks protoseg reads, how they descend from each other, and which one wrote a given file.

The published segmentation models were each written by their own Caffe, and the same words mean different
things in them: ``BN`` is PSPNet's 4-blob layer and SegNet's 2-blob one, ``BatchNorm`` is BVLC's 3 blobs and
NVCaffe's 5. protoseg's schema (``proto/caffe.proto``) is their union; each field and V1 enum value that only
some forks have carries a ``(protoseg_fork)`` option naming them. :func:`detect` reads a file's fork from that
evidence, from the layer types it uses (a type registered only in some forks) and from the blob counts its
caffemodel stores; ``--fork`` overrides it. Parsing knows nothing of torch, and neither does this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from google.protobuf.message import Message

from protoseg.errors import ProtosegError
from protoseg.io.upgrade import V1_TYPE_NAMES

BVLC = "bvlc"


@dataclass(frozen=True)
class Fork:
    name: str  # protoseg's key, used by --fork and in the converter registry
    title: str  # how people call it
    parents: tuple[str, ...]  # forks it inherits layers from, nearest first
    source: str  # the repository its facts were read from
    releases: str  # what was published with it
    #: How its Caffe declares a net's inputs, as read in its caffe.proto: "layer" (an Input layer, BVLC since
    #: 2016), "shape" (net-level ``input`` + ``input_shape``), "dim" (``input`` + four ``input_dim``). Forks taken
    #: before 2016 have no Input layer, and DeepLab v1's and DeconvNet's not even ``input_shape``.
    inputs: str = "shape"
    #: Whether its Caffe reads V2 (``layer {}``) prototxts; DeepLab v1's and DeconvNet's read V1 only.
    reads_v2: bool = True

    def __str__(self) -> str:
        return self.title


#: Every fork protoseg reads, in the order ties are broken (plainer first).
FORKS: dict[str, Fork] = {f.name: f for f in (
    Fork(BVLC, "BVLC Caffe", (), "BVLC/caffe", "FCN, Dilation, HED (deploy), most deploy nets", "layer"),
    Fork("deeplab-v2", "DeepLab v2's Caffe", (BVLC,), "DrSleep/deeplab-public-ver2", "DeepLab v2 (VGG-16, ResNet-101)"),
    Fork("deeplab-v1", "DeepLab v1's Caffe", (BVLC,), "open-cv/deeplab-v1", "DeepLab v1 (LargeFOV, MSc, CRF)", "dim",
         False),
    Fork("pspnet", "PSPNet's Caffe", ("deeplab-v2", BVLC), "hszhao/PSPNet", "PSPNet, ICNet"),
    Fork("segnet", "caffe-segnet", (BVLC,), "alexgkendall/caffe-segnet", "SegNet, Bayesian SegNet, ENet"),
    Fork("deconvnet", "DeconvNet's Caffe", (BVLC,), "HyeonwooNoh/caffe", "DeconvNet", "dim", False),
    Fork("crfasrnn", "CRF-as-RNN's Caffe", (BVLC,), "torrvision/caffe", "CRF-as-RNN"),
    Fork("nvcaffe", "NVCaffe", (BVLC,), "NVIDIA/caffe", "NVCaffe-style nets (e.g. Xilinx's ENet, ESPNet, FPN, UNet)",
         "layer"),
    Fork("xilinx", "caffe-xilinx", ("nvcaffe", BVLC), "Xilinx/Vitis-AI (AI-Model-Zoo/caffe-xilinx)",
         "the Vitis AI model zoo's Caffe nets (FPN, ENet, ESPNet, UNet...)", "layer"),
    Fork("hed", "HED's Caffe", (BVLC,), "s9xie/hed", "HED"),
)}


def get(name: str) -> Fork:
    """The fork called ``name``, or a ProtosegError listing the known ones."""
    try:
        return FORKS[name]
    except KeyError:
        raise ProtosegError(f"unknown Caffe fork {name!r}; protoseg reads: {', '.join(FORKS)}") from None


def lineage(name: str) -> tuple[str, ...]:
    """``name`` and the forks it inherits from, nearest first."""
    fork = get(name)
    return (fork.name, *fork.parents)


def descendants(names: Iterable[str]) -> frozenset[str]:
    """The forks that have any of ``names`` in their lineage: where something of those forks is at home."""
    wanted = set(names)
    return frozenset(f for f in FORKS if wanted.intersection(lineage(f)))


@dataclass
class Detection:
    """Which fork wrote a file, and why."""

    fork: str
    #: One line per piece of evidence, e.g. "field bn_param.bn_mode (layer 'conv1_1_bn'): caffe-segnet".
    evidence: list[str] = field(default_factory=list)
    #: Evidence the chosen fork does not explain (a file mixing forks), for a warning.
    unexplained: list[str] = field(default_factory=list)
    overridden: bool = False

    def describe(self) -> str:
        if self.overridden:
            return f"{FORKS[self.fork].title} (--fork {self.fork})"
        if not self.evidence:
            return f"{FORKS[self.fork].title} (nothing fork-specific in the file)"
        more = f"; and {len(self.evidence) - 3} more" if len(self.evidence) > 3 else ""
        shown = "; ".join(self.evidence[:3]) + more
        return f"{FORKS[self.fork].title} ({shown})"


def fork_option(descriptor) -> tuple[str, ...]:
    """The forks named by a field's or enum value's ``(protoseg_fork)`` option; empty for BVLC's own."""
    from protoseg.proto import caffe_pb2

    options = descriptor.GetOptions()
    ext = caffe_pb2.protoseg_fork if hasattr(descriptor, "message_type") else caffe_pb2.protoseg_value_fork
    if not options.HasExtension(ext):
        return ()
    return tuple(part.strip() for part in options.Extensions[ext].split(",") if part.strip())


def _schema_evidence(message: Message, path: str, layer: str) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(what, layer, forks) for every fork-only field and enum value set anywhere in ``message``."""
    for fd, value in message.ListFields():
        name = f"{path}.{fd.name}" if path else fd.name
        forks_of = fork_option(fd)
        if forks_of:
            yield f"field {name}", layer, forks_of
        if fd.enum_type is not None:
            for number in (value if fd.is_repeated else [value]):
                ev = fd.enum_type.values_by_number.get(number)
                if ev is not None and fork_option(ev):
                    yield f"{fd.enum_type.name} {ev.name}", layer, fork_option(ev)
        if fd.message_type is not None:
            items = value if fd.is_repeated else [value]
            for item in items:
                is_layer = fd.name in ("layer", "layers") and not path
                inner_layer = getattr(item, "name", "") if is_layer else layer
                yield from _schema_evidence(item, "" if is_layer else name, inner_layer)


def detect(netparam: Message, stored_blobs: Mapping[str, int] | None = None, *,
           defined_by: Callable[[str], Sequence[str]] | None = None,
           blob_counts: Callable[[str, str], Sequence[int]] | None = None) -> Detection:
    """The fork that wrote ``netparam`` (the prototxt as parsed, before the upgrade).

    Evidence: fork-only fields and V1 enum values (schema options), V2 type strings that only some forks
    register (``defined_by(type)``), and, when ``stored_blobs`` (layer name -> blob count in the caffemodel)
    is given, blob counts that only some of a type's forks take (``blob_counts(fork, type)``). The fork that
    explains most kinds of evidence wins; ties go to the plainer fork (fewer ancestors, then :data:`FORKS`
    order), so a file with nothing fork-specific reads as BVLC Caffe.
    """
    items: list[tuple[str, str, frozenset[str]]] = []  # (kind, layer, forks where it is at home)
    for what, layer, forks_of in _schema_evidence(netparam, "", ""):
        known = [f for f in forks_of if f in FORKS]
        if known:
            items.append((f"{what}: {', '.join(known)}", layer, descendants(known)))
    layers = list(getattr(netparam, "layer", [])) + list(getattr(netparam, "layers", []))
    for lp in layers:
        kind = _type_string(lp)
        if defined_by is None or not kind:
            continue
        owners = [f for f in defined_by(kind) if f in FORKS]
        if owners and BVLC not in owners and isinstance(lp.type, str):  # a V1 enum value's home is schema evidence
            items.append((f"type {kind}: {', '.join(owners)}", lp.name, descendants(owners)))
        if stored_blobs and blob_counts is not None and len(owners) > 1 and lp.name in stored_blobs:
            n = stored_blobs[lp.name]
            fitting = [f for f in owners if n in blob_counts(f, kind)]
            if fitting and len(fitting) < len(owners):
                items.append((f"{kind} with {n} stored blobs: {', '.join(fitting)}", lp.name,
                              descendants(fitting)))
    return _choose(items)


def _type_string(lp: Message) -> str:
    """A layer's V2 type string; a V1 ``layers {}`` entry's enum value through the upgrade's table."""
    if isinstance(lp.type, str):
        return lp.type
    value = lp.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number.get(lp.type)
    return V1_TYPE_NAMES.get(value.name, "") if value is not None else ""


def _choose(items: list[tuple[str, str, frozenset[str]]]) -> Detection:
    # Each kind of evidence counts once, so a hundred BN layers do not outvote one layer type.
    kinds: dict[str, frozenset[str]] = {}
    layers: dict[str, list[str]] = {}
    for kind, layer, allowed in items:
        kinds.setdefault(kind, allowed)
        layers.setdefault(kind, []).append(layer)
    order = list(FORKS)

    def score(f: str) -> tuple[int, int, int]:
        return (sum(f in allowed for allowed in kinds.values()), -len(FORKS[f].parents), -order.index(f))

    best = max(FORKS, key=score)

    def line(kind: str) -> str:
        names = [n for n in layers[kind] if n]
        if not names:
            return kind
        where = f"layer {names[0]!r}" if len(names) == 1 else f"layers {names[0]!r} and {len(names) - 1} more"
        return f"{kind} ({where})"

    return Detection(best, [line(k) for k in kinds], [line(k) for k, allowed in kinds.items() if best not in allowed])
