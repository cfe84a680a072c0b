"""The one path from files to a model: prototxt (+ caffemodel) -> fork -> V2 net -> IR -> GraphModule.

``info``, ``verify``, ``convert``, ``run`` and the pycaffe façade all open nets through :func:`open_net`, so a
file reads the same way everywhere: the prototxt is parsed as written, its fork detected (from the prototxt's
fields and layer types and the caffemodel's blob counts) unless given, then upgraded to V2 and filtered by
phase, and its shapes inferred with that fork's converters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

from protoseg import forks
from protoseg.errors import ProtosegError
from protoseg.io.prototxt import read_prototxt
from protoseg.io.upgrade import filter_net, upgrade_net
from protoseg.io.weights import WeightsFile, open_weights
from protoseg.ir import Net, build_net
from protoseg.layers.base import converter_for, forks_defining
from protoseg.params import WeightReport, match_weights

PathLike = str | os.PathLike


@dataclass
class OpenNet:
    """A prototxt read as its fork reads it, with its weights matched (problems collected, not raised)."""

    netparam: object  # the upgraded, phase-filtered caffe_pb2.NetParameter
    net: Net
    detection: forks.Detection
    weights: WeightsFile | None = None
    report: WeightReport | None = None

    def graph(self, *, fast: bool = False, precision: str = "fp32", device: str = "cpu", trainable: bool = False):
        """The GraphModule with the weights loaded; raises WeightMismatchError when they do not fit.

        By default the faithful graph (one node per Caffe layer, every blob observable, float32); with ``fast``
        its fast form in ``precision`` on ``device`` (:func:`protoseg.optimize.optimize`). With ``trainable``,
        the faithful graph ready to train as Caffe trains it (:mod:`protoseg.train`).
        """
        from protoseg.graph import to_graph

        if trainable and fast:
            raise ProtosegError("trainable=True needs the faithful graph (the fast one folds BatchNorm and Scale into "
                                "the convolutions): drop fast=True")
        if self.report is None:
            gm = to_graph(self.net, trainable=trainable)
        else:
            self.report.raise_if_bad(str(self.weights.path))
            gm = to_graph(self.net, self.report.blobs, trainable=trainable)
        from protoseg.to_caffe.source import record

        record(gm, self.netparam, self.net.fork)  # the net it came from, for writing it back (protoseg.to_caffe)
        if not fast:
            if precision != "fp32":
                raise ProtosegError(f"precision {precision!r} needs the fast graph: pass fast=True")
            return gm
        from protoseg.optimize import optimize

        return optimize(gm, precision=precision, device=device)


def blob_counts(fork: str, type_name: str) -> tuple[int, ...]:
    """How many blobs a caffemodel stores for a ``type_name`` layer of ``fork`` (for fork detection)."""
    cls = converter_for(type_name, fork)
    return tuple(getattr(cls, "stored_blobs", ())) if cls is not None else ()


def detect_fork(raw_netparam, weights: WeightsFile | None = None) -> forks.Detection:
    """The fork that wrote a prototxt as parsed (before the upgrade), with its caffemodel when there is one."""
    stored = {layer.name: len(layer.blobs) for layer in weights.layers} if weights is not None else None
    return forks.detect(raw_netparam, stored, defined_by=forks_defining, blob_counts=blob_counts)


def open_net(
    prototxt: PathLike,
    weights: PathLike | None = None,
    *,
    defines: Mapping[str, object] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
    phase: str = "TEST",
    stages: Sequence[str] = (),
    fork: str | None = None,
    strict_inputs: bool = True,
) -> OpenNet:
    """Read ``prototxt`` (and ``weights``) into an :class:`OpenNet`; ``fork`` overrides detection (see
    :func:`protoseg.ir.build_net` for the other arguments)."""
    raw = read_prototxt(prototxt, defines)
    wf = open_weights(weights) if weights is not None else None
    if fork is None:
        detection = detect_fork(raw, wf)
    else:
        detection = forks.Detection(forks.get(fork).name, overridden=True)
    netparam = filter_net(upgrade_net(raw), phase, tuple(stages))
    net = build_net(netparam, input_shapes, outputs, fork=detection.fork, source=str(prototxt),
                    strict_inputs=strict_inputs)
    report = match_weights(net, {layer.name: layer.blobs for layer in wf.layers}) if wf is not None else None
    return OpenNet(netparam, net, detection, wf, report)


def load(
    prototxt: PathLike,
    weights: PathLike,
    *,
    defines: Mapping[str, str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
    fork: str | None = None,
    fast: bool = False,
    precision: str = "fp32",
    device: str = "cpu",
    trainable: bool = False,
):
    """The converted net as a ``torch.fx.GraphModule`` in eval mode, weights loaded: the faithful graph (reads
    like the prototxt, every blob observable), or with ``fast`` the fast form in ``precision``
    (``fp32``, ``bf16``, ``fp16``) on ``device``. A process that runs it on many large images should also call
    :func:`protoseg.run.memory.keep_freed_memory` once, as ``protoseg run`` does.

    With ``trainable`` the parameters Caffe learns (``lr_mult`` not 0) require grad and ``gm.train()`` switches
    every layer to its Caffe's TRAIN phase (batch statistics, Dropout); :func:`protoseg.train.param_groups`
    gives the optimizer groups. Raises :class:`~protoseg.errors.WeightMismatchError` when the caffemodel does not
    fit the prototxt.
    """
    return open_net(prototxt, weights, defines=defines, input_shapes=input_shapes, outputs=outputs,
                    fork=fork).graph(fast=fast, precision=precision, device=device, trainable=trainable)
