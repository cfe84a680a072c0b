"""Match a caffemodel's blobs to the IR's layers, the way Caffe's CopyTrainedLayersFrom does, and say what is off.

Caffe matches source layers to net layers by name, ignores source layers the net lacks, and requires each
blob's shape to fit the net's. Which stored shapes fit is the layer's own knowledge
(:meth:`~protoseg.layers.base.Converter.accepts`: legacy 4-D V1 shapes everywhere, FCN's InnerProduct <->
Convolution reshapes in those two families). Blobs shared through ``param { name }`` become one tensor: the
owner's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from protoseg.errors import WeightMismatchError, quote
from protoseg.ir import Net
from protoseg.layers.base import legacy_equal, product


@dataclass
class WeightReport:
    """Outcome of matching: ``blobs`` per layer (owners only, shaped as the net wants) and every problem found."""

    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # layers in the file that the net lacks (Caffe ignores them)
    reshaped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_bad(self, source: str) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise WeightMismatchError(
                f"{source}: {self.problems[0]}{more}; is this the caffemodel for this prototxt?"
            )


def _describe(layer) -> str:
    at = f" at {layer.where}" if layer.where else ""
    return f"layer {quote(layer.name)} ({layer.type}){at}"


def match_weights(net: Net, weights: Mapping[str, Sequence[np.ndarray]]) -> WeightReport:
    """Each layer's stored blobs, checked against and reshaped to what the net implies."""
    report = WeightReport()
    names = {layer.name for layer in net.layers}
    # Caffe writes an entry for every layer, data layers too; only entries with blobs are ignored data
    report.unexpected = [name for name, blobs in weights.items() if name not in names and len(blobs)]
    for layer in net.layers:
        stored = weights.get(layer.name)
        if stored is not None:
            stored = layer.converter.arrange(list(stored))
        if not layer.blob_shapes:
            if stored:
                report.problems.append(f"{_describe(layer)} takes no blobs but the file has {len(stored)}")
            continue
        owned = [i for i, o in enumerate(layer.owners) if o == (layer.name, i)]
        if stored is None:
            if owned:
                report.problems.append(f"{_describe(layer)} has no blobs in the file")
            continue
        if len(stored) != len(layer.blob_shapes):
            report.problems.append(
                f"{_describe(layer)} has {len(stored)} blobs in the file but the prototxt implies "
                f"{len(layer.blob_shapes)} ({', '.join(map(str, layer.blob_shapes))})"
            )
            continue
        arrays = []
        for i, want in enumerate(layer.blob_shapes):
            have = tuple(stored[i].shape)
            if product(have) != product(want) or not layer.converter.accepts(i, want, have):
                report.problems.append(f"{_describe(layer)}: blob {i} is {have} but the prototxt implies {want}")
                continue
            if have != want and not legacy_equal(want, have):
                report.reshaped.append(f"{layer.name}[{i}]: {have} -> {want}")
            arrays.append(np.asarray(stored[i]).reshape(want))
        if len(arrays) == len(layer.blob_shapes):
            report.blobs[layer.name] = arrays
    return report
