"""The one-call path from files to a model: prototxt (+ caffemodel) -> IR -> GraphModule."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from torch import fx

from protoseg.graph import to_graph
from protoseg.io.upgrade import load_net
from protoseg.io.weights import read_weights
from protoseg.ir import Net, build_net
from protoseg.params import WeightReport, match_weights

PathLike = str | os.PathLike


def load_ir(
    prototxt: PathLike,
    weights: PathLike | None = None,
    *,
    defines: Mapping[str, str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
    phase: str = "TEST",
    stages: Sequence[str] = (),
) -> tuple[Net, WeightReport | None]:
    """Parse, upgrade and shape-infer ``prototxt``; match ``weights`` against it when given (problems are
    collected in the report, not raised, so ``info`` can list them all)."""
    netparam = load_net(prototxt, defines, phase=phase, stages=tuple(stages))
    net = build_net(netparam, input_shapes, outputs)
    report = match_weights(net, read_weights(weights)) if weights is not None else None
    return net, report


def convert(
    netparam,
    weights: PathLike,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
) -> tuple[Net, fx.GraphModule]:
    """IR and GraphModule of an upgraded ``NetParameter`` with ``weights`` loaded.

    Raises :class:`~protoseg.errors.WeightMismatchError` when the caffemodel does not fit the net.
    """
    net = build_net(netparam, input_shapes, outputs)
    report = match_weights(net, read_weights(weights))
    report.raise_if_bad(str(weights))
    return net, to_graph(net, report.blobs)


def load(
    prototxt: PathLike,
    weights: PathLike,
    *,
    defines: Mapping[str, str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
) -> fx.GraphModule:
    """The converted net as a ``torch.fx.GraphModule`` in eval mode, weights loaded.

    Raises :class:`~protoseg.errors.WeightMismatchError` when the caffemodel does not fit the prototxt.
    """
    netparam = load_net(prototxt, defines)
    return convert(netparam, weights, input_shapes=input_shapes, outputs=outputs)[1]
