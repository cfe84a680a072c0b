"""Infer Crop offsets from the net's coordinate mapping, as the Caffe of 2016 did for parameterless Crops.

Every spatial layer maps its top's coordinates to its bottom's by an affine map ``x_bottom = a * x_top + b``
per axis (a convolution or pooling: ``a = stride``, ``b = (kernel - 1) * dilation / 2 - pad``; a deconvolution
the inverse; a crop ``a = 1, b = offset``; point-wise layers the identity). Composing the maps back from both
bottoms of a Crop to a common ancestor blob gives the offset that aligns them: with ``x_C = a * x_big + b1``
and ``x_C = a * x_ref + b2``, the crop offset is ``(b2 - b1) / a``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping

Affine = tuple[Fraction, Fraction]  # x_bottom = a * x_top + b
Maps = tuple[Affine, Affine]  # per spatial axis (H, W)


def compose(outer: Maps, inner: Maps) -> Maps:
    """``outer`` maps B -> A, ``inner`` maps C -> B; the result maps C -> A."""
    return tuple((a1 * a2, a1 * b2 + b1) for (a1, b1), (a2, b2) in zip(outer, inner))  # type: ignore[return-value]


IDENTITY: Maps = ((Fraction(1), Fraction(0)), (Fraction(1), Fraction(0)))


def ancestry(blob: str, producers: Mapping[str, tuple[object, object, list[str]]]) -> dict[str, Maps]:
    """Every blob ``blob`` descends from through first bottoms of spatial layers, with the map from ``blob`` to it.

    ``producers`` maps a blob to ``(converter, bottom shapes, bottom names)`` of the layer that wrote it.
    """
    chain: dict[str, Maps] = {blob: IDENTITY}
    current, acc = blob, IDENTITY
    while current in producers:
        converter, shapes, bottoms = producers[current]
        step = converter.coord_map(shapes) if bottoms else None
        if step is None or bottoms[0] in chain:  # SSA names make a cycle impossible; never loop regardless
            break
        current, acc = bottoms[0], compose(step, acc)
        chain[current] = acc
    return chain


def crop_offsets(big: Mapping[str, Maps], ref: Mapping[str, Maps]) -> list[int] | None:
    """Offsets (H, W) aligning the blob of ancestry ``ref`` inside that of ``big``, or None when they share no
    mapped ancestor (or the maps do not align on whole pixels)."""
    for ancestor, big_map in big.items():
        if ancestor in ref:
            offsets = []
            for (a1, b1), (a2, b2) in zip(big_map, ref[ancestor]):
                if a1 != a2:
                    return None
                off = (b2 - b1) / a1
                if off.denominator != 1:
                    return None
                offsets.append(int(off))
            return offsets
    return None
