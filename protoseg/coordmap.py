"""Infer Crop offsets from the net's coordinate mapping, as the Caffe of 2016 did for parameterless Crops.

Every spatial layer maps its top's coordinates to its bottom's by an affine map ``x_bottom = a * x_top + b``
per axis (a convolution or pooling: ``a = stride``, ``b = (kernel - 1) * dilation / 2 - pad``; a deconvolution
the inverse; a crop ``a = 1, b = offset``; point-wise layers the identity). Following first bottoms up through
such layers, every blob descends from a *root* (an input, or the top of a layer with no map) by one composed
map. Two blobs with the same root align: with ``x_R = a * x_big + b1`` and ``x_R = a * x_ref + b2``, the crop
offset is ``(b2 - b1) / a``. (Any common ancestor gives the same offset; the root is the one every blob knows.)
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

__all__ = ["IDENTITY", "Lineage", "Lineages", "Maps", "compose", "crop_offsets"]

Affine = tuple[Fraction, Fraction]  # x_bottom = a * x_top + b
Maps = tuple[Affine, Affine]  # per spatial axis (H, W)
Lineage = tuple[str, Maps]  # (root blob, map from the blob to its root)

IDENTITY: Maps = ((Fraction(1), Fraction(0)), (Fraction(1), Fraction(0)))
#: A composed map with a numerator or denominator this large (2**62; strides multiplying past any blob's
#: size) starts a new root: such a map aligns nothing, and its numbers would grow without bound.
_MAX_TERM = 2**62


def compose(outer: Maps, inner: Maps) -> Maps:
    """``outer`` maps B -> A, ``inner`` maps C -> B; the result maps C -> A."""
    return tuple((a1 * a2, a1 * b2 + b1) for (a1, b1), (a2, b2) in zip(outer, inner))  # type: ignore[return-value]


class Lineages:
    """Each blob's root and map to it, computed when first asked (only Crops ask), each blob once.

    ``add(top, step, parent)`` records a layer's top: ``step()`` gives the layer's map (top -> ``parent``, its
    first bottom) or None where it has none; a blob never added is a root (an input).
    """

    def __init__(self) -> None:
        self._producers: dict[str, tuple[Callable[[], Maps | None], str | None]] = {}
        self._known: dict[str, Lineage] = {}

    def add(self, top: str, step: Callable[[], Maps | None], parent: str | None) -> None:
        self._producers[top] = (step, parent)

    def __call__(self, blob: str) -> Lineage:
        path: list[tuple[str, Maps, str]] = []  # walked up iteratively: a net may be 100k layers deep
        current = blob
        while current not in self._known:
            step, parent = self._producers.get(current, (None, None))
            maps = step() if parent is not None else None
            if maps is None:
                self._known[current] = (current, IDENTITY)
                break
            path.append((current, maps, parent))
            current = parent
        for top, maps, parent in reversed(path):
            root, to_root = self._known[parent]
            composed = compose(to_root, maps)
            if any(abs(t.numerator) > _MAX_TERM or t.denominator > _MAX_TERM for axis in composed for t in axis):
                self._known[top] = (top, IDENTITY)
            else:
                self._known[top] = (root, composed)
        return self._known[blob]


def crop_offsets(big: Lineage | None, ref: Lineage | None) -> list[int] | None:
    """Offsets (H, W) aligning blob ``ref`` inside blob ``big``, given their lineages; None when they descend
    from different roots (or the maps do not align on whole pixels)."""
    if big is None or ref is None or big[0] != ref[0]:
        return None
    offsets = []
    for (a1, b1), (a2, b2) in zip(big[1], ref[1]):
        if a1 != a2:
            return None
        off = (b2 - b1) / a1
        if off.denominator != 1:
            return None
        offsets.append(int(off))
    return offsets


