"""Slicing, ``x[:, :, a:a + h, b:b + w]``, written as Caffe's Crop.

Caffe's Crop cuts its first bottom to its second bottom's size on every axis from ``axis`` on, starting at
``offset``: the size is another blob's, never a number. So a slice is written where its extent is some blob's:
the tensor the slice's bounds are computed from (``x.shape[2]``, ``ref.size(3)``: FCN's crop to the input), or
else a blob of that size at the example's input size, which the conversion then records as holding only there.
Only BVLC's and NVCaffe's Caffe have a Crop layer; the forks taken before 2016 (DeepLab v2, PSPNet) do not.
"""

from __future__ import annotations

import operator
from typing import Any

from torch import fx

from protoseg.forks import FORKS
from protoseg.layers.crop import CROP_PARAM_FORKS
from protoseg.to_caffe.context import Context
from protoseg.to_caffe.ops import on
from protoseg.to_caffe.trace import dim_of, shape_of


@on(operator.getitem)
def _crop(ctx: Context, node: fx.Node) -> str:
    x, index = node.args
    if ctx.tensor(x) is None:
        raise ctx.refuse(node, "takes an element of something that is no tensor (a module returning a tuple?); "
                               "Caffe layers have blobs as tops: return tensors")
    shape, out = ctx.shape(x), ctx.shape(node)
    slices = _per_axis(ctx, node, index, len(shape))
    starts = [_start(ctx, node, s, size) for s, size in zip(slices, shape)]
    cropped = [i for i, (size, start) in enumerate(zip(shape, starts)) if out[i] != size or start]
    if not cropped:
        return ctx.blob(node, x)
    axis = cropped[0]
    if axis == 0:
        raise ctx.refuse(node, "slices the batch axis; Caffe's Crop cuts the axes of each image")
    if ctx.dialect not in CROP_PARAM_FORKS:
        raise ctx.refuse(node, f"{FORKS[ctx.dialect].title} has no Crop layer; write this module with "
                               "dialect='bvlc'")
    like = _reference(ctx, node, slices[axis:], axis, out)
    offsets = starts[axis:]
    params = {"offset": offsets[:1] if len(set(offsets)) == 1 else offsets}
    if axis != 2:
        params["axis"] = axis
    return ctx.net.layer(ctx.base(node), "Crop", [ctx.blob(node, x), ctx.blob(node, like)], crop_param=params)


def _per_axis(ctx: Context, node: fx.Node, index: Any, ndim: int) -> list[slice]:
    """One slice per axis: ``...`` expanded, missing trailing axes whole; integers and None refused."""
    entries = list(index) if isinstance(index, tuple) else [index]
    if entries.count(Ellipsis) > 1:
        raise ctx.refuse(node, "indexes with two '...'")
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        entries[at:at + 1] = [slice(None)] * (ndim - len(entries) + 1)
    entries += [slice(None)] * (ndim - len(entries))
    for entry in entries:
        if not isinstance(entry, slice):
            raise ctx.refuse(node, f"indexes with {type(entry).__name__}; Caffe's Crop keeps every axis: slice "
                                   "with start:stop")
        if ctx.value(entry.step) not in (None, 1):
            raise ctx.refuse(node, "slices with a step; Caffe's Crop takes every element")
    if len(entries) != ndim:
        raise ctx.refuse(node, f"indexes {len(entries)} axes of a {ndim}-axis tensor")
    return entries


def _start(ctx: Context, node: fx.Node, s: slice, size: int) -> int:
    start = ctx.value(s.start)
    if start is None:
        return 0
    if not isinstance(start, int) or start < 0 or start > size:
        raise ctx.refuse(node, f"starts a slice at {start!r}; Caffe's Crop offsets count from the start (>= 0)")
    return start


def _reference(ctx: Context, node: fx.Node, slices: list[slice], axis: int, out: tuple[int, ...]) -> fx.Node:
    """The blob whose size the slice takes from ``axis`` on: the tensor its bounds are computed from, else one of
    that size at the example's input size (a condition of the conversion)."""
    want = out[axis:]

    def fits(t: fx.Node) -> bool:
        return t in ctx.tops and ctx.tensor(t) is not None and len(ctx.shape(t)) == len(out) \
            and ctx.shape(t)[axis:] == want

    sources: list[fx.Node] = []
    stack = [s.stop for s in slices if isinstance(s.stop, fx.Node)]
    seen: set[fx.Node] = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        t = shape_of(n)
        if t is None and (dim := dim_of(n, len(out))) is not None:
            t = dim[0]
        if t is not None:
            sources.append(t)
        elif ctx.tensor(n) is None:  # size arithmetic: look further up
            stack.extend(n.all_input_nodes)
    for t in sources:
        if fits(t):
            return t
    for t in ctx.tops:
        if fits(t):
            ctx.net.condition(f"crop {node.name!r} takes its size from {t.name!r}, which has the slice's size at "
                              "this input size")
            return t
    raise ctx.refuse(node, f"slices to {list(want)} from axis {axis}, the size of no tensor before it; Caffe's Crop "
                           "takes its size from a second blob: slice to another tensor's size "
                           "(x[:, :, a:a + ref.shape[2], b:b + ref.shape[3]])")
