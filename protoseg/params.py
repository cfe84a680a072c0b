"""Match a caffemodel's blobs to the IR's layers, the way Caffe's CopyTrainedLayersFrom does, and say what is off.

Caffe matches source layers to net layers by name, ignores source layers the net lacks, and requires each
blob's shape to equal the net's, where a legacy V1 blob (num, channels, height, width) equals a shape that
is the same once padded with leading 1s. protoseg also accepts FCN's InnerProduct <-> Convolution reshapes
(same values, same output count: ``fc6`` as (4096, 25088) or (4096, 512, 7, 7)), and gives blobs shared through
``param { name }`` one tensor: the owner's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from protoseg.errors import WeightMismatchError
from protoseg.ir import Net
from protoseg.layers.base import Shape, product


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


def _legacy(shape: Sequence[int]) -> tuple[int, ...]:
    return (1,) * (4 - len(shape)) + tuple(shape) if len(shape) <= 4 else tuple(shape)


def _squeeze_leading(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def fits(want: Shape, have: Sequence[int], layer_type: str) -> bool:
    """Whether a stored blob of shape ``have`` can serve where the net wants ``want``."""
    have = tuple(have)
    if have == want:
        return True
    if len(have) == 4 and _legacy(want) == have:  # V1's num/channels/height/width
        return True
    if layer_type in ("Convolution", "InnerProduct") and len(want) > 1 and product(want) == product(have):
        # FCN's fc6/fc7: InnerProduct (N, K) <-> Convolution (N, C, kh, kw); legacy (1, 1, N, K) too.
        return _squeeze_leading(have)[0] == want[0]
    return False


def match_weights(net: Net, weights: Mapping[str, Sequence[np.ndarray]]) -> WeightReport:
    report = WeightReport()
    names = {layer.name for layer in net.layers}
    report.unexpected = [name for name in weights if name not in names]
    for layer in net.layers:
        if not layer.blob_shapes:
            if weights.get(layer.name):
                report.problems.append(
                    f"layer {layer.name!r} ({layer.type}) takes no blobs but the file has {len(weights[layer.name])}"
                )
            continue
        owned = [i for i, o in enumerate(layer.owners) if o == (layer.name, i)]
        stored = weights.get(layer.name)
        if stored is None:
            if owned:
                report.problems.append(f"layer {layer.name!r} ({layer.type}) has no blobs in the file")
            continue
        if len(stored) != len(layer.blob_shapes):
            report.problems.append(
                f"layer {layer.name!r} ({layer.type}) has {len(stored)} blobs in the file but the prototxt "
                f"implies {len(layer.blob_shapes)} ({', '.join(map(str, layer.blob_shapes))})"
            )
            continue
        arrays = []
        for i, want in enumerate(layer.blob_shapes):
            have = tuple(stored[i].shape)
            if not fits(want, have, layer.type):
                report.problems.append(
                    f"layer {layer.name!r} ({layer.type}): blob {i} is {have} but the prototxt implies {want}"
                )
                continue
            if have != want and not (len(have) == 4 and _legacy(want) == have):
                report.reshaped.append(f"{layer.name}[{i}]: {have} -> {want}")
            arrays.append(np.asarray(stored[i]).reshape(want))
        if len(arrays) == len(layer.blob_shapes):
            report.blobs[layer.name] = arrays
    return report
