"""A pycaffe-shaped façade over the converted graph, so an evaluation script written for Caffe runs with one
changed import: ``from protoseg import caffe``.

What is supported is the inference subset the FCN and DeepLab scripts use::

    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)   # also Net(p, caffe.TEST, weights=w)
    net.blobs["data"].reshape(1, *img.shape)
    net.blobs["data"].data[...] = img
    net.forward()                       # or net.forward(data=img) -> {output: array}
    labels = net.blobs["score"].data[0].argmax(0)

After a forward every blob (every layer's top, with the value Caffe shows: the last write of an in-place blob)
is in ``net.blobs``. ``net.params[layer][i].data`` are the weights themselves: writing to them changes the net.
A net built without weights has zero parameters (Caffe would run its fillers). ``TRAIN`` only selects the
prototxt's TRAIN include/exclude rules: the forward is always the inference one (Dropout is the identity), and
there is no backward.

What evaluation scripts need beyond the graph is here too, because their nets run layers the converted graph
leaves out: a ``DenseImageData`` layer (SegNet) reads its image list on each ``forward()`` as Caffe's does,
``SoftmaxWithLoss`` tops are computed after each forward (FCN's ``score.py`` reads ``net.blobs['loss']``),
``SGDSolver`` builds a training script's nets (``solver.net``, ``solver.test_nets``) without training them,
and ``caffe.layers``/``caffe.params``/``NetSpec`` write prototxts as pycaffe's ``net_spec`` does (Dilation's
``network.py``).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from protoseg.caffe.data import image_list_readers
from protoseg.caffe.loss import softmax_loss
from protoseg.errors import ProtosegError, ProtosegWarning, quote

__all__ = ["TRAIN", "TEST", "Net", "Blob", "Layer", "SGDSolver", "NetSpec", "layers", "params", "to_proto", "io",
           "proto", "set_mode_cpu", "set_mode_gpu", "set_device"]

#: Phase constants with pycaffe's values (``caffe_pb2.Phase``).
TRAIN = 0
TEST = 1
_PHASE_NAMES = {TRAIN: "TRAIN", TEST: "TEST"}

_MODE = {"gpu": False, "device": 0}


def set_mode_cpu() -> None:
    """Run nets created or forwarded after this on the CPU."""
    _MODE["gpu"] = False


def set_mode_gpu() -> None:
    """Run on CUDA device ``set_device(i)`` (default 0); falls back to the CPU with a warning without CUDA."""
    if not torch.cuda.is_available():
        warnings.warn("caffe.set_mode_gpu(): no CUDA device is available to PyTorch; running on the CPU",
                      ProtosegWarning, stacklevel=2)
        _MODE["gpu"] = False
        return
    _MODE["gpu"] = True


def set_device(device_id: int) -> None:
    """Choose the CUDA device for GPU mode, as ``caffe.set_device``."""
    _MODE["device"] = int(device_id)


def _device() -> torch.device:
    return torch.device(f"cuda:{_MODE['device']}") if _MODE["gpu"] else torch.device("cpu")


class Blob:
    """A named array, as pycaffe's ``Blob``: ``data`` is a writable float32 numpy array."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def count(self) -> int:
        return int(self.data.size)

    def _legacy(self, axis: int) -> int:
        shape = (1,) * (4 - self.data.ndim) + self.shape if self.data.ndim < 4 else self.shape
        return int(shape[axis])

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape: int) -> None:
        """Give the blob a new shape (contents zeroed), as ``net.blobs['data'].reshape(1, 3, H, W)``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        dims = tuple(int(d) for d in shape)
        if not dims or min(dims) < 0:
            raise ProtosegError(f"Blob.reshape{shape}: give non-negative dimensions, e.g. reshape(1, 3, 500, 500)")
        if dims != self.shape:
            self.data = np.zeros(dims, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Blob{self.shape}"


class Layer:
    """pycaffe's ``net.layers[i]``: the layer's Caffe type and its parameter blobs."""

    def __init__(self, type_: str, blobs: list[Blob]) -> None:
        self.type = type_
        self.blobs = blobs

    def __repr__(self) -> str:
        return f"<Layer {self.type}: {len(self.blobs)} blobs>"


def _parse_args(args: tuple[Any, ...], weights: Any, phase: Any) -> tuple[str | None, int]:
    """pycaffe's forms: ``Net(p, weights, phase)``, ``Net(p, phase)``, ``Net(p, phase, weights=w)``."""
    if len(args) > 2:
        raise TypeError(f"Net() takes at most 3 positional arguments ({len(args) + 1} given)")
    for a in args:
        if isinstance(a, (str, os.PathLike)):
            if weights is not None:
                raise TypeError("Net(): weights given twice")
            weights = a
        elif isinstance(a, int) and not isinstance(a, bool):
            if phase is not None:
                raise TypeError("Net(): phase given twice")
            phase = a
        else:
            raise TypeError(f"Net(): {a!r} is neither a weights path nor a phase (caffe.TEST / caffe.TRAIN)")
    phase = TEST if phase is None else phase
    if phase not in _PHASE_NAMES:
        raise ProtosegError(f"Net(): phase must be caffe.TEST ({TEST}) or caffe.TRAIN ({TRAIN}), got {phase!r}")
    return (os.fspath(weights) if weights is not None else None), phase


class Net:
    """A Caffe net with pycaffe's interface, computed by protoseg's converted ``torch.fx`` graph."""

    def __init__(self, prototxt: str | os.PathLike, *args: Any, weights: str | os.PathLike | None = None,
                 phase: int | None = None, defines: Mapping[str, str] | None = None) -> None:
        from protoseg.loader import open_net

        weights, phase = _parse_args(args, weights, phase)
        self._prototxt = os.fspath(prototxt)
        defines = dict(defines) if defines else None
        # Caffe sizes an image-list data layer from its first image when the net is built
        self._readers = image_list_readers(self._prototxt, defines, _PHASE_NAMES[phase])
        sized = {r.tops[0]: r.shape for r in self._readers}
        with warnings.catch_warnings():
            # a data layer without a declared shape warns; its blob is reshaped by the caller, as in pycaffe
            warnings.simplefilter("ignore", ProtosegWarning)
            opened = open_net(prototxt, weights, defines=defines, phase=_PHASE_NAMES[phase],
                              input_shapes=sized or None)
        self._netparam, self._fork, self._net = opened.netparam, opened.net.fork, opened.net
        self.blobs: OrderedDict[str, Blob] = OrderedDict()
        self._init_blobs()
        for reader in self._readers:
            self.blobs[reader.tops[1]] = Blob(np.zeros(reader.label_shape, dtype=np.float32))
        self._losses = [lp for lp in self._netparam.layer
                        if lp.type == "SoftmaxWithLoss" and len(lp.bottom) == 2 and len(lp.top) >= 1
                        and all(b in self.blobs for b in lp.bottom)]
        for lp in self._losses:  # a 0-axis blob, as Caffe's loss tops; NaN until a forward has a label to score
            self.blobs[lp.top[0]] = Blob(np.full((), np.nan, dtype=np.float32))
        self.params: OrderedDict[str, list[Blob]] = OrderedDict()
        self._init_params()
        if weights is not None:
            self.copy_from(weights)

    # ------------------------------------------------------------------------------------------ structure
    def _build(self, input_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        from protoseg.ir import build_net

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProtosegWarning)
            self._net = build_net(self._netparam, input_shapes, fork=self._fork, source=self._prototxt)

    @property
    def inputs(self) -> list[str]:
        """The blobs a caller fills: the net's input blobs (Input layer or data-layer tops the net uses)."""
        return [self._net.caffe_name.get(i, i) for i in self._net.inputs]

    @property
    def outputs(self) -> list[str]:
        """Blobs no layer consumes (losses and other training-only layers are left out)."""
        return [self._net.caffe_name.get(o, o) for o in self._net.outputs]

    @property
    def layer_names(self) -> list[str]:
        """The inference layers in order (pycaffe's ``net._layer_names`` without the data layers)."""
        return [layer.name for layer in self._net.layers]

    @property
    def _layer_names(self) -> list[str]:
        """Every layer of this phase in prototxt order, data and loss layers included, as pycaffe lists them."""
        return [lp.name for lp in self._netparam.layer]

    @property
    def layers(self) -> list[Layer]:
        """pycaffe's ``net.layers``: per layer of this phase its ``type`` and its parameter ``blobs`` (the same
        Blob objects as ``net.params``)."""
        return [Layer(lp.type, self.params.get(lp.name, [])) for lp in self._netparam.layer]

    @property
    def top_names(self) -> OrderedDict[str, list[str]]:
        return OrderedDict((layer.name, list(layer.caffe_tops)) for layer in self._net.layers)

    def _init_blobs(self) -> None:
        for ssa, shape in self._net.inputs.items():
            self.blobs[self._net.caffe_name.get(ssa, ssa)] = Blob(np.zeros(shape, dtype=np.float32))
        for name in self._net.data_tops:  # data tops the inference graph does not use (label): shape unknown
            self.blobs.setdefault(name, Blob(np.zeros((0,), dtype=np.float32)))
        for layer in self._net.layers:
            for ssa, caffe in zip(layer.tops, layer.caffe_tops):
                if ssa == caffe:  # the last write: its shape is the blob's
                    self.blobs[caffe] = Blob(np.zeros(layer.shapes[layer.tops.index(ssa)], dtype=np.float32))

    def _init_params(self) -> None:
        """Zero parameters shared with the graph: ``params[layer][i].data`` is the tensor's own memory."""
        from protoseg.graph import to_graph

        arrays: dict[str, list[np.ndarray]] = {}
        for layer in self._net.layers:
            if any(owner == (layer.name, i) for i, owner in enumerate(layer.owners)):
                arrays[layer.name] = [np.zeros(s, dtype=np.float32) for s in layer.blob_shapes]
        self._gm = to_graph(self._net, arrays)
        in_graph = {t.data_ptr() for t in list(self._gm.parameters()) + list(self._gm.buffers())}
        for layer in self._net.layers:
            if not layer.owners:
                continue
            blobs = []
            for owner in layer.owners:
                arr = arrays[owner[0]][owner[1]]
                if arr.size and arr.ctypes.data not in in_graph:
                    arr.setflags(write=False)  # a converter derived its own tensor: writes would not reach it
                blobs.append(Blob(arr))
            self.params[layer.name] = blobs

    # ------------------------------------------------------------------------------------------ weights
    def copy_from(self, weights: str | os.PathLike) -> None:
        """Load a caffemodel into this net's parameters (pycaffe's ``copy_from``)."""
        from protoseg.io.weights import read_weights
        from protoseg.params import match_weights

        report = match_weights(self._net, read_weights(weights))
        report.raise_if_bad(os.fspath(weights))
        for layer in self._net.layers:
            for i, owner in enumerate(layer.owners):
                if owner != (layer.name, i):
                    continue
                target = self.params[layer.name][i].data
                writable = target.flags.writeable
                target.setflags(write=True)
                np.copyto(target, np.asarray(report.blobs[layer.name][i], dtype=np.float32).reshape(target.shape))
                target.setflags(write=writable)
        if any(not b.data.flags.writeable for blobs in self.params.values() for b in blobs):
            # derived tensors were built from the zero arrays: rebuild the graph from the loaded values
            self._gm = self._rebuild_graph()

    def _rebuild_graph(self):
        from protoseg.graph import to_graph

        arrays = {name: [b.data for b in blobs] for name, blobs in self.params.items()}
        return to_graph(self._net, arrays)

    def share_with(self, other: Net) -> None:
        """pycaffe's ``share_with`` (Caffe's ``ShareTrainedLayersWith``): every layer of this net that ``other``
        has by name uses ``other``'s parameter blobs from now on, the same arrays, so a later write to either
        net's ``params`` reaches both, as in Caffe (a read-only blob, one a converter derives its own tensor
        from, is taken as it is now). A training script's test net calls it to score the weights its solver
        net holds."""
        if not isinstance(other, Net):
            raise TypeError(f"Net.share_with(): give a caffe.Net, not {type(other).__name__}")
        for name, blobs in self.params.items():
            source = other.params.get(name)
            if source is None:
                continue
            if [b.shape for b in blobs] != [b.shape for b in source]:
                raise ProtosegError(f"Net.share_with(): layer {quote(name)} has blobs {[b.shape for b in blobs]} "
                                    f"here but {[b.shape for b in source]} in the other net; Caffe shares only "
                                    "layers of the same shapes")
            self.params[name] = list(source)
        self._gm = self._rebuild_graph()

    def save(self, path: str | os.PathLike) -> None:
        """Write the parameters as a binary V2 caffemodel (pycaffe's ``net.save``)."""
        from protoseg.io.weights import write_weights

        # Caffe writes every layer's blobs, shared ones repeated under each layer that uses them.
        owned = {name: [b.data for b in blobs] for name, blobs in self.params.items()}
        write_weights(path, owned, types={name: self._net.layer(name).type for name in owned})

    # ------------------------------------------------------------------------------------------ running
    def reshape(self) -> None:
        """Propagate the input blobs' shapes to every blob (contents zeroed), as pycaffe's ``net.reshape()``."""
        shapes = {name: self.blobs[name].shape for name in self.inputs}
        self._build(shapes)
        for layer in self._net.layers:
            for ssa, caffe in zip(layer.tops, layer.caffe_tops):
                if ssa == caffe:
                    self.blobs[caffe].reshape(*layer.shapes[layer.tops.index(ssa)])

    def forward(self, blobs: Sequence[str] | None = None, start: str | None = None, end: str | None = None,
                **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the whole net on the input blobs (or the arrays given by input name) and return the outputs
        (or, with ``end``, that layer's tops), plus any ``blobs`` named."""
        from protoseg.verify import run_blobs

        if start is not None:
            raise ProtosegError("Net.forward(start=...): protoseg always runs the whole net; drop start=")
        unknown = sorted(set(kwargs) - set(self.inputs))
        if unknown:
            raise ProtosegError(f"Net.forward(): {', '.join(unknown)} is not an input of {self._prototxt}; "
                                f"its inputs are {', '.join(self.inputs)}")
        if not kwargs:  # as Caffe, an image-list data layer loads its next batch (arrays given by name win)
            for reader in self._readers:
                for name, value in reader.next_batch().items():
                    self.blobs[name].reshape(*value.shape)
                    self.blobs[name].data[...] = value
        for name, value in kwargs.items():
            value = np.asarray(value, dtype=np.float32)
            self.blobs[name].reshape(*value.shape)
            self.blobs[name].data[...] = value
        device = _device()
        self._gm.to(device)
        feeds = {ssa: torch.from_numpy(np.ascontiguousarray(self.blobs[self._net.caffe_name.get(ssa, ssa)].data,
                                                            dtype=np.float32)).to(device)
                 for ssa in self._net.inputs}
        wanted = {t for layer in self._net.layers for t, c in zip(layer.tops, layer.caffe_tops) if t == c}
        values = run_blobs(self._gm, feeds, wanted)
        for name, tensor in values.items():
            arr = tensor.detach().to("cpu", torch.float32).numpy()
            blob = self.blobs[name]
            if blob.data.shape == arr.shape and blob.data.flags.writeable:
                np.copyto(blob.data, arr)
            else:
                blob.data = arr.copy()
        for lp in self._losses:
            self.blobs[lp.top[0]].data = np.asarray(
                softmax_loss(lp, self.blobs[lp.bottom[0]].data, self.blobs[lp.bottom[1]].data), dtype=np.float32)
        if end is not None:
            try:
                outs = list(self._net.layer(end).caffe_tops)
            except KeyError:
                raise ProtosegError(f"Net.forward(end={end!r}): no such layer in the inference net") from None
        else:
            outs = self.outputs
        return {name: self.blobs[name].data for name in list(outs) + list(blobs or [])}

    def forward_all(self, blobs: Sequence[str] | None = None, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """pycaffe's ``forward_all``: the inputs given by name, in batches of the net's batch size (the last one
        padded with zeros), their outputs (and ``blobs``) stacked, the padding dropped."""
        if not kwargs:
            raise ProtosegError("Net.forward_all(): give the inputs by name, e.g. forward_all(data=images)")
        unknown = sorted(set(kwargs) - set(self.inputs))
        if unknown:
            raise ProtosegError(f"Net.forward_all(): {', '.join(unknown)} is not an input; the inputs are "
                                f"{', '.join(self.inputs)}")
        arrays = {name: np.asarray(value, dtype=np.float32) for name, value in kwargs.items()}
        count = {a.shape[0] for a in arrays.values()}
        if len(count) != 1:
            raise ProtosegError(f"Net.forward_all(): inputs of {sorted(count)} items; give them one count")
        total = count.pop()
        batch = max(1, self.blobs[next(iter(arrays))].num)
        collected: dict[str, list[np.ndarray]] = {}
        for start in range(0, max(total, 1), batch):
            chunk = {}
            for name, a in arrays.items():
                part = a[start:start + batch]
                if len(part) < batch:
                    part = np.concatenate([part, np.zeros((batch - len(part),) + a.shape[1:], np.float32)])
                chunk[name] = part
            for name, value in self.forward(blobs=blobs, **chunk).items():
                collected.setdefault(name, []).append(value.copy())
        return {name: np.concatenate(parts)[:total] for name, parts in collected.items()}

    def backward(self, *args: Any, **kwargs: Any) -> None:
        raise ProtosegError("Net.backward(): protoseg converts nets for inference only; train in PyTorch instead")

    def __repr__(self) -> str:
        return f"<protoseg.caffe.Net {self._netparam.name!r}: {len(self._net.layers)} layers>"


from protoseg.caffe import io, proto  # noqa: E402  (pycaffe's caffe.io and caffe.proto, after Net exists)
from protoseg.caffe.net_spec import NetSpec, layers, params, to_proto  # noqa: E402
from protoseg.caffe.solver import SGDSolver  # noqa: E402
