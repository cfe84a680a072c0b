"""Resizes: ``F.interpolate`` and ``nn.Upsample``, written as the Caffe layers that compute them exactly.

Caffe's resize is the DeepLab and PSPNet forks' Interp: bilinear with aligned corners (torch's
``align_corners=True``), sized by ``zoom_factor`` (``(h - 1) * z + 1``), ``shrink_factor`` (``(h - 1) // s + 1``)
or a fixed ``height`` and ``width``; in both forks it takes exactly one bottom (``ExactNumBottomBlobs() == 1``),
so it cannot follow another blob's size. What is written:

* the identity, where the sizes already agree;
* a 1 x 1 source (image-level pooling) resized to another tensor's size: a broadcast that follows that tensor at
  every size, from BVLC layers: a zero 1 x 1 Convolution to one plane of the tensor's size, Power with scale 0
  (ones, whatever its input), a 1 x 1 Convolution of ones to C planes, and Scale by the flattened source;
* Interp by zoom or shrink factor when the example's sizes are such a factor apart; Interp by fixed height and
  width otherwise (exact at any input size when torch's size is a constant too);
* in BVLC Caffe, which has no Interp, a fixed bilinear Deconvolution (kernel 2z - 1, stride z, pad z - 1, one
  group per channel): it computes the aligned-corners resize by an integer factor z exactly; any other resize is
  refused.

Where the Caffe size rule matches torch's only at some input sizes, the conversion records that condition.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import fx, nn

from protoseg.to_caffe.context import Context
from protoseg.to_caffe.ops import on
from protoseg.to_caffe.trace import spatial_source

#: Modes whose resize of a single pixel is that pixel everywhere.
_BROADCASTING = ("bilinear", "nearest", "nearest-exact", "area")


@on(F.interpolate)
def _interpolate(ctx: Context, node: fx.Node) -> str:
    a = lambda i, name, default=None: ctx.arg(node, i, name, default)  # noqa: E731
    return _resize(ctx, node, node.args[0], a(1, "size"), a(2, "scale_factor"), a(3, "mode", "nearest"),
                   a(4, "align_corners"), a(6, "antialias", False))


@on(nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d)
def _upsample(ctx: Context, node: fx.Node) -> str:
    m = ctx.module(node)
    return _resize(ctx, node, node.args[0], m.size, m.scale_factor, m.mode, m.align_corners, False)


def _resize(ctx: Context, node: fx.Node, x: fx.Node, size, scale, mode: str, align_corners, antialias) -> str:
    if len(ctx.shape(x)) != 4:
        raise ctx.refuse(node, f"resizes a {len(ctx.shape(x))}-D tensor; Caffe resizes N x C x H x W blobs")
    in_hw, out_hw = ctx.shape(x)[2:], ctx.shape(node)[2:]
    like = spatial_source(size) if isinstance(size, fx.Node) or isinstance(size, (tuple, list)) else None
    like = like if ctx.tensor(like) is not None else None
    fixed = like is None and scale is None  # torch's output size is a constant
    how = (f"the size of {like.name!r}" if like is not None else f"{out_hw[0]} x {out_hw[1]}" if fixed
           else f"scale_factor {scale}")
    if in_hw == out_hw and not antialias:
        if not (scale is not None and all(float(s) == 1.0 for s in np.atleast_1d(scale))):
            ctx.net.condition(f"resize {node.name!r} to {how} is the identity only while its input is "
                              f"{in_hw[0]} x {in_hw[1]} too")
        ctx.pointwise(node, x)
        return ctx.blob(node, x)
    if in_hw == (1, 1) and mode in _BROADCASTING and not antialias:
        return _broadcast(ctx, node, x, like, fixed, how)
    if mode != "bilinear" or not align_corners or antialias:
        raise ctx.refuse(node, f"{mode} resize with align_corners={align_corners}: Caffe's only resize (the DeepLab "
                               "and PSPNet forks' Interp) is bilinear with align_corners=True")
    zoom = [_factor(o, i) for i, o in zip(in_hw, out_hw)]
    shrink = [_factor(i, o) for i, o in zip(in_hw, out_hw)]
    if ctx.dialect == "bvlc":
        if None in zoom:
            raise ctx.refuse(node, f"BVLC Caffe has no Interp, and its bilinear Deconvolution resizes by an integer "
                                   f"factor z (out = (in - 1) * z + 1), which {in_hw} -> {out_hw} is not; write the "
                                   "deeplab-v2 or pspnet dialect")
        zh, zw = zoom
        ctx.net.condition(f"resize {node.name!r} to {how} is a fixed bilinear Deconvolution by {zh} x {zw}: it "
                          f"follows torch only where the output is (h - 1) * {zh} + 1 by (w - 1) * {zw} + 1")
        return _bilinear_deconvolution(ctx, node, x, zoom)
    if not fixed and zoom[0] is not None and zoom[0] == zoom[1]:
        ctx.net.condition(f"resize {node.name!r} to {how} is Interp zoom_factor {zoom[0]}: it follows torch only "
                          f"where the output is (h - 1) * {zoom[0]} + 1 by (w - 1) * {zoom[0]} + 1")
        return _interp(ctx, node, x, zoom_factor=zoom[0])
    if not fixed and shrink[0] is not None and shrink[0] == shrink[1]:
        ctx.net.condition(f"resize {node.name!r} to {how} is Interp shrink_factor {shrink[0]}: it follows torch only "
                          f"where the output is (h - 1) // {shrink[0]} + 1 by (w - 1) // {shrink[0]} + 1")
        return _interp(ctx, node, x, shrink_factor=shrink[0])
    if not fixed:
        ctx.net.condition(f"resize {node.name!r} to {how} is Interp to a fixed {out_hw[0]} x {out_hw[1]}: the "
                          "Caffe net takes only the example's input size")
    return _interp(ctx, node, x, height=out_hw[0], width=out_hw[1])


def _factor(big: int, small: int) -> int | None:
    """z with ``big - 1 == z * (small - 1)``, z > 1, if there is one."""
    if small <= 1 or big <= small or (big - 1) % (small - 1):
        return None
    return (big - 1) // (small - 1)


def _interp(ctx: Context, node: fx.Node, x: fx.Node, **param) -> str:
    return ctx.net.layer(ctx.base(node), "Interp", [ctx.blob(node, x)], interp_param=param)


def _bilinear_deconvolution(ctx: Context, node: fx.Node, x: fx.Node, zoom: list[int]) -> str:
    """Output row ``q z + r`` is ``(1 - r/z) x[q] + (r/z) x[q + 1]``: the triangle kernel ``1 - |k - (z - 1)| / z``,
    k = 0 .. 2z - 2, at stride z and pad z - 1, separable over the two axes, one group per channel."""
    c = ctx.shape(x)[1]
    tri = [1.0 - np.abs(np.arange(2 * z - 1) - (z - 1)) / z for z in zoom]
    kernel = np.outer(tri[0], tri[1]).astype(np.float32)
    weight = np.broadcast_to(kernel, (c, 1, *kernel.shape))
    kh, kw = kernel.shape
    param = dict(num_output=c, group=c, bias_term=False, kernel_h=kh, kernel_w=kw, stride_h=zoom[0],
                 stride_w=zoom[1], pad_h=zoom[0] - 1, pad_w=zoom[1] - 1)
    return ctx.net.layer(ctx.base(node), "Deconvolution", [ctx.blob(node, x)], blobs=[weight], frozen=(True,),
                         convolution_param=param)


def _broadcast(ctx: Context, node: fx.Node, x: fx.Node, like: fx.Node | None, fixed: bool, how: str) -> str:
    """A 1 x 1 source at every position of the output: exact (value times one)."""
    h, w = ctx.shape(node)[2:]
    if like is not None:
        return broadcast(ctx, node, x, like, ctx.base(node))
    if x not in ctx.unit:
        ctx.net.condition(f"resize {node.name!r} broadcasts {x.name!r}, which is 1 x 1 at this input size only")
    if not fixed:
        ctx.net.condition(f"resize {node.name!r} to {how} is written for a fixed {h} x {w} output")
    if ctx.dialect != "bvlc":
        return _interp(ctx, node, x, height=h, width=w)
    c = ctx.shape(x)[1]
    ones = np.ones((c, 1, h, w), np.float32)  # a 1 x 1 input spread over an h x w kernel
    return ctx.net.layer(ctx.base(node), "Deconvolution", [ctx.blob(node, x)], blobs=[ones], frozen=(True,),
                         convolution_param=dict(num_output=c, group=c, bias_term=False, kernel_h=h, kernel_w=w))


def broadcast(ctx: Context, node: fx.Node, x: fx.Node, like: fx.Node, base: str) -> str:
    """``x`` (N x C x 1 x 1) at every position of ``like``'s planes, following ``like``'s size at any input size:
    Scale (axis 0) of a C-plane map of ones by the flattened ``x``. The ones come from BVLC layers: a zero 1 x 1
    Convolution of ``like`` to one plane, Power with scale 0 (ones whatever its input), a 1 x 1 Convolution of
    ones to C planes."""
    if x not in ctx.unit:
        ctx.net.condition(f"node {node.name!r} broadcasts {x.name!r}, which is 1 x 1 at this input size only")
    net = ctx.net
    c = ctx.shape(x)[1]
    plane = ctx.blob(node, like)
    depth = ctx.shape(like)[1]
    if depth != 1:  # one plane of the target's size; its values do not matter (Power below ignores them)
        plane = net.layer(f"{base}_plane", "Convolution", [plane], blobs=[np.zeros((1, depth, 1, 1), np.float32)],
                          frozen=(True,), convolution_param=dict(num_output=1, kernel_size=[1], bias_term=False))
    ones = net.layer(f"{base}_ones", "Power", [plane], power_param=dict(power=1.0, scale=0.0, shift=1.0))
    if c != 1:
        ones = net.layer(f"{base}_spread", "Convolution", [ones], blobs=[np.ones((c, 1, 1, 1), np.float32)],
                         frozen=(True,), convolution_param=dict(num_output=c, kernel_size=[1], bias_term=False))
    return scale_by(ctx, node, ones, x, base)


def scale_by(ctx: Context, node: fx.Node, blob: str, x: fx.Node, base: str) -> str:
    """Caffe's Scale of ``blob`` (N x C x H x W) by ``x`` (N x C x 1 x 1), flattened to N x C to match from axis 0."""
    flat = ctx.net.layer(f"{base}_flat", "Flatten", [ctx.blob(node, x)])
    return ctx.net.layer(base, "Scale", [blob, flat], scale_param=dict(axis=0))
