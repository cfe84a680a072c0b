"""Emitters of the layers that map one to one: convolution, pooling, BatchNorm, activations, merges, heads.

Each writes the Caffe layer that computes what the torch op computes, checked against Caffe's arithmetic as
protoseg's converters model it (:mod:`protoseg.layers`), and refuses, naming the node, whatever Caffe computes
differently: torch's floor-mode pooling where Caffe's ceil rounding gives another size, ``count_include_pad=False``
with padding (Caffe divides by the padded window), asymmetric ``'same'`` padding, broadcasting arithmetic.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from protoseg.layers.pool import caffe_pool_size
from protoseg.to_caffe.context import Context
from protoseg.to_caffe.ops import array, hw_fields, on, pair
from protoseg.to_caffe.resize import broadcast, scale_by

# -- convolution ----------------------------------------------------------------------------------------------


def _conv_padding(ctx: Context, node: fx.Node, m: nn.Module) -> tuple[int, int]:
    if m.padding == "valid":
        return 0, 0
    if m.padding == "same":
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        if any(t % 2 for t in total):
            raise ctx.refuse(node, f"padding='same' with kernel {m.kernel_size} and dilation {m.dilation} pads one "
                                   "side more than the other; Caffe pads both sides alike")
        return total[0] // 2, total[1] // 2
    return pair(m.padding)


@on(nn.Conv2d, nn.ConvTranspose2d)
def _convolution(ctx: Context, node: fx.Node) -> str:
    m = ctx.module(node)
    transposed = isinstance(m, nn.ConvTranspose2d)
    if len(node.args) + len(node.kwargs) != 1:
        raise ctx.refuse(node, "is called with an output_size; Caffe's Deconvolution has one output size per input")
    if m.padding_mode != "zeros":
        raise ctx.refuse(node, f"padding_mode={m.padding_mode!r}: Caffe pads with zeros only")
    if transposed and any(m.output_padding):
        raise ctx.refuse(node, f"output_padding {m.output_padding}: Caffe's Deconvolution gives "
                               "(H - 1) * stride - 2 * pad + dilation * (kernel - 1) + 1, with no extra rows")
    pad = _conv_padding(ctx, node, m)
    dilation = pair(m.dilation)
    param = dict(num_output=m.out_channels, **hw_fields("kernel_size", pair(m.kernel_size), None, repeated=True),
                 **hw_fields("pad", pad, 0, repeated=True), **hw_fields("stride", pair(m.stride), 1, repeated=True))
    if dilation != (1, 1):
        param["dilation"] = [dilation[0]] if dilation[0] == dilation[1] else list(dilation)
    if m.groups != 1:
        param["group"] = m.groups
    if m.bias is None:
        param["bias_term"] = False
    blobs = [array(m.weight)] + ([array(m.bias)] if m.bias is not None else [])
    x = node.args[0]
    top = ctx.net.layer(ctx.base(node), "Deconvolution" if transposed else "Convolution", [ctx.blob(node, x)],
                        blobs=blobs, convolution_param=param)
    if not transposed and pair(m.kernel_size) == (1, 1) and pair(m.stride) == (1, 1) and pad == (0, 0):
        ctx.pointwise(node, x)
    return top


# -- pooling --------------------------------------------------------------------------------------------------

def torch_pool_size(size: int, kernel: int, pad: int, stride: int, ceil: bool) -> int:
    """torch's pooling output size (dilation 1): floor or ceil, a last window starting in the padding dropped."""
    out = (size + 2 * pad - kernel + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _check_rounding(ctx: Context, node: fx.Node, hw: tuple[int, int], kernel, pad, stride, ceil: bool) -> None:
    """Refuse a pooling whose output size differs from Caffe's at the example's size; record the sizes where it
    agrees when that is not every size (both rules repeat with period ``stride``)."""
    clip = any(pad)
    mode = "ceil_mode=True" if ceil else "floor rounding (ceil_mode=False)"
    for axis, size, k, p, s in zip(("height", "width"), hw, kernel, pad, stride):
        ours, caffes = torch_pool_size(size, k, p, s, ceil), caffe_pool_size(size, k, p, s, clip)
        if ours != caffes:
            hint = "; ceil_mode=True matches Caffe" if not ceil and _agrees_always(k, p, s, True, clip) else ""
            raise ctx.refuse(node, f"torch's {mode} pools {axis} {size} to {ours}, Caffe's ceil rounding to "
                                   f"{caffes}: Caffe cannot reproduce it at this input size{hint}")
        if not _agrees_always(k, p, s, ceil, clip):
            good = [r for r in range(s) if torch_pool_size(size + r, k, p, s, ceil)
                    == caffe_pool_size(size + r, k, p, s, clip)]
            sizes = " or ".join(f"{size + r} + {s}n" for r in good)
            ctx.net.condition(f"pooling {node.name!r} rounds like Caffe only where its input {axis} is {sizes}")


def _agrees_always(k: int, p: int, s: int, ceil: bool, clip: bool) -> bool:
    base = max(k, 1) + s  # any size at which a window fits; the rules repeat with period s
    return all(torch_pool_size(base + r, k, p, s, ceil) == caffe_pool_size(base + r, k, p, s, clip)
               for r in range(s))


def _pooling(ctx: Context, node: fx.Node, x: fx.Node, method: str, kernel, stride, pad, ceil: bool) -> str:
    kernel, pad = pair(kernel), pair(pad)
    stride = pair(stride) if stride not in (None, []) else kernel  # torch: stride defaults to the kernel
    if any(2 * p > k for p, k in zip(pad, kernel)):
        raise ctx.refuse(node, f"pad {pad} is more than half the kernel {kernel}")
    _check_rounding(ctx, node, ctx.shape(x)[2:], kernel, pad, stride, ceil)
    param = dict(pool=method, **hw_fields("kernel_size", kernel, None, repeated=False),
                 **hw_fields("pad", pad, 0, repeated=False), **hw_fields("stride", stride, 1, repeated=False))
    return ctx.net.layer(ctx.base(node), "Pooling", [ctx.blob(node, x)], pooling_param=param)


@on(nn.MaxPool2d)
def _max_pool_module(ctx: Context, node: fx.Node) -> str:
    m = ctx.module(node)
    if pair(m.dilation) != (1, 1):
        raise ctx.refuse(node, f"dilation {m.dilation}: Caffe's Pooling has no dilation")
    if m.return_indices:
        raise ctx.refuse(node, "return_indices: Caffe's MAX mask top holds other indices (float, per plane)")
    return _pooling(ctx, node, node.args[0], "MAX", m.kernel_size, m.stride, m.padding, m.ceil_mode)


@on(F.max_pool2d)
def _max_pool_function(ctx: Context, node: fx.Node) -> str:
    a = lambda i, name, default=None: ctx.arg(node, i, name, default)  # noqa: E731
    if pair(a(4, "dilation", 1)) != (1, 1) or a(6, "return_indices", False):
        raise ctx.refuse(node, "dilation and return_indices have no Caffe counterpart")
    return _pooling(ctx, node, node.args[0], "MAX", a(1, "kernel_size"), a(2, "stride"), a(3, "padding", 0),
                    a(5, "ceil_mode", False))


def _ave(ctx: Context, node: fx.Node, kernel, stride, pad, ceil: bool, include_pad: bool, divisor) -> str:
    if divisor is not None:
        raise ctx.refuse(node, f"divisor_override={divisor}: Caffe divides by the (clipped) window size")
    if not include_pad and any(pair(pad)):
        raise ctx.refuse(node, "count_include_pad=False with padding: Caffe's AVE pooling divides by the window "
                               "including its padding; use count_include_pad=True")
    return _pooling(ctx, node, node.args[0], "AVE", kernel, stride, pad, ceil)


@on(nn.AvgPool2d)
def _ave_pool_module(ctx: Context, node: fx.Node) -> str:
    m = ctx.module(node)
    return _ave(ctx, node, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)


@on(F.avg_pool2d)
def _ave_pool_function(ctx: Context, node: fx.Node) -> str:
    a = lambda i, name, default=None: ctx.arg(node, i, name, default)  # noqa: E731
    return _ave(ctx, node, a(1, "kernel_size"), a(2, "stride"), a(3, "padding", 0), a(4, "ceil_mode", False),
                a(5, "count_include_pad", True), a(6, "divisor_override"))


def _global(ctx: Context, node: fx.Node, method: str) -> str:
    top = ctx.net.layer(ctx.base(node), "Pooling", [ctx.blob(node, node.args[0])],
                        pooling_param=dict(pool=method, global_pooling=True))
    ctx.unit.add(node)
    return top


def _adaptive(ctx: Context, node: fx.Node, size, method: str) -> str:
    if size not in (1, (1, 1), [1, 1]) or len(ctx.shape(node.args[0])) != 4:
        raise ctx.refuse(node, f"adaptive pooling to {size}: Caffe pools to a size only through fixed windows; "
                               "protoseg writes adaptive pooling to 1 x 1 (global pooling)")
    return _global(ctx, node, method)


@on(nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
def _adaptive_module(ctx: Context, node: fx.Node) -> str:
    m = ctx.module(node)
    if getattr(m, "return_indices", False):
        raise ctx.refuse(node, "return_indices has no Caffe counterpart")
    return _adaptive(ctx, node, m.output_size, "AVE" if isinstance(m, nn.AdaptiveAvgPool2d) else "MAX")


@on(F.adaptive_avg_pool2d)
def _adaptive_function(ctx: Context, node: fx.Node) -> str:
    return _adaptive(ctx, node, ctx.arg(node, 1, "output_size"), "AVE")


@on(torch.mean, "mean")
def _mean(ctx: Context, node: fx.Node) -> str:
    dims = ctx.arg(node, 1, "dim")
    ndim = len(ctx.shape(node.args[0]))
    axes = {d % ndim for d in dims} if isinstance(dims, (tuple, list)) else None
    if ndim != 4 or axes != {2, 3} or not ctx.arg(node, 2, "keepdim", False) or ctx.arg(node, 3, "dtype"):
        raise ctx.refuse(node, "Caffe averages only whole planes of an N x C x H x W blob (global AVE pooling): "
                               "use mean(dim=(2, 3), keepdim=True)")
    return _global(ctx, node, "AVE")


# -- normalisation --------------------------------------------------------------------------------------------

@on(nn.BatchNorm2d)
def _batch_norm(ctx: Context, node: fx.Node) -> str:
    """BVLC's BatchNorm (statistics, scale factor 1) + Scale (the affine part), or PSPNet's one BN layer."""
    m = ctx.module(node)
    if m.running_mean is None:
        raise ctx.refuse(node, "track_running_stats=False: there are no running statistics for Caffe to store")
    c = m.num_features
    weight = array(m.weight) if m.affine else np.ones(c, np.float32)
    bias = array(m.bias) if m.affine else np.zeros(c, np.float32)
    x = ctx.blob(node, node.args[0])
    ctx.pointwise(node, node.args[0])
    if ctx.dialect == "pspnet":
        param = {"eps": m.eps}
        if m.momentum is not None:
            param["momentum"] = 1.0 - m.momentum  # PSPNet keeps momentum * old + (1 - momentum) * batch
        blobs = [b.reshape(1, c, 1, 1) for b in (weight, bias, array(m.running_mean), array(m.running_var))]
        return ctx.net.layer(ctx.base(node), "BN", [x], blobs=blobs, frozen=(not m.affine,) * 2 + (True, True),
                             bn_param=param)
    # BVLC keeps statistics times a factor (blob 2): factor 1 stores them as they are. Caffe's moving average is
    # normalised by its own running factor, so only a decay of 1 (torch's momentum=None, a cumulative average)
    # updates alike while training; 1 - momentum is the nearest decay otherwise.
    param = {"eps": m.eps, "moving_average_fraction": 1.0 - m.momentum if m.momentum is not None else 1.0}
    top = ctx.net.layer(ctx.base(node), "BatchNorm", [x], blobs=[array(m.running_mean), array(m.running_var),
                        np.ones(1, np.float32)], frozen=(True,) * 3, batch_norm_param=param)
    if not m.affine:
        return top
    return ctx.net.layer(f"{ctx.base(node)}_scale", "Scale", [top], top=top, blobs=[weight, bias],
                         scale_param={"bias_term": True})


# -- point-wise -----------------------------------------------------------------------------------------------

def _unary(ctx: Context, node: fx.Node, type_: str, **params) -> str:
    x = node.args[0]
    ctx.pointwise(node, x)
    return ctx.net.layer(ctx.base(node), type_, [ctx.blob(node, x)], **params)


@on(nn.ReLU, F.relu, torch.relu, torch.relu_, F.relu_, "relu", "relu_")
def _relu(ctx: Context, node: fx.Node) -> str:
    return _unary(ctx, node, "ReLU")


@on(nn.LeakyReLU)
def _leaky_module(ctx: Context, node: fx.Node) -> str:
    return _unary(ctx, node, "ReLU", relu_param={"negative_slope": ctx.module(node).negative_slope})


@on(F.leaky_relu)
def _leaky_function(ctx: Context, node: fx.Node) -> str:
    return _unary(ctx, node, "ReLU", relu_param={"negative_slope": ctx.arg(node, 1, "negative_slope", 0.01)})


@on(nn.PReLU)
def _prelu(ctx: Context, node: fx.Node) -> str:
    m = ctx.module(node)
    x = node.args[0]
    ctx.pointwise(node, x)
    shared = m.num_parameters == 1
    if not shared and (len(ctx.shape(x)) < 2 or ctx.shape(x)[1] != m.num_parameters):
        raise ctx.refuse(node, f"{m.num_parameters} slopes for an input of shape {ctx.shape(x)}")
    slope = array(m.weight).reshape(()) if shared else array(m.weight)  # Caffe: a 0-d blob when shared
    return ctx.net.layer(ctx.base(node), "PReLU", [ctx.blob(node, x)], blobs=[slope],
                         **({"prelu_param": {"channel_shared": True}} if shared else {}))


@on(nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid")
def _sigmoid(ctx: Context, node: fx.Node) -> str:
    return _unary(ctx, node, "Sigmoid")


@on(nn.Tanh, torch.tanh, F.tanh, "tanh")
def _tanh(ctx: Context, node: fx.Node) -> str:
    return _unary(ctx, node, "TanH")


@on(nn.Dropout)
def _dropout_module(ctx: Context, node: fx.Node) -> str:
    return _unary(ctx, node, "Dropout", dropout_param={"dropout_ratio": ctx.module(node).p})


@on(F.dropout)
def _dropout_function(ctx: Context, node: fx.Node) -> str:
    if ctx.arg(node, 2, "training", True):
        raise ctx.refuse(node, "dropout with training=True drops at inference too; pass training=self.training")
    return _unary(ctx, node, "Dropout", dropout_param={"dropout_ratio": ctx.arg(node, 1, "p", 0.5)})


@on(nn.Identity, "contiguous", "clone", "detach")
def _identity(ctx: Context, node: fx.Node) -> str:
    ctx.pointwise(node, node.args[0])
    return ctx.blob(node, node.args[0])


# -- merges and arithmetic ------------------------------------------------------------------------------------

@on(torch.cat, torch.concat)
def _concat(ctx: Context, node: fx.Node) -> str:
    tensors = list(ctx.arg(node, 0, "tensors"))
    ndim = len(ctx.shape(node))
    axis = ctx.arg(node, 1, "dim", 0) % ndim
    if len(tensors) == 1:
        return _identity(ctx, node)
    ctx.pointwise(node, *tensors)
    return ctx.net.layer(ctx.base(node), "Concat", [ctx.blob(node, t) for t in tensors],
                         **({"concat_param": {"axis": axis}} if axis != 1 else {}))


_ADD = (operator.add, operator.iadd, torch.add, "add", "add_")
_SUB = (operator.sub, operator.isub, torch.sub, "sub", "sub_")
_MUL = (operator.mul, operator.imul, torch.mul, "mul", "mul_")


@on(*_ADD, *_SUB, *_MUL)
def _arithmetic(ctx: Context, node: fx.Node) -> str:
    a, b = node.args[0], ctx.arg(node, 1, "other")
    alpha = node.kwargs.get("alpha", 1)
    op = "mul" if node.target in _MUL else "sub" if node.target in _SUB else "add"
    tensors = [t for t in (a, b) if ctx.tensor(t) is not None]
    if len(tensors) == 1:
        return _with_number(ctx, node, op, a, b)
    if ctx.shape(a) != ctx.shape(b):
        return _broadcasting(ctx, node, op, a, b, alpha)
    ctx.pointwise(node, a, b)
    bottoms = [ctx.blob(node, a), ctx.blob(node, b)]
    if op == "mul":
        return ctx.net.layer(ctx.base(node), "Eltwise", bottoms, eltwise_param={"operation": "PROD"})
    coeff = -alpha if op == "sub" else alpha
    param = {"operation": "SUM", **({"coeff": [1.0, float(coeff)]} if coeff != 1 else {})}
    return ctx.net.layer(ctx.base(node), "Eltwise", bottoms, eltwise_param=param)


def _broadcasting(ctx: Context, node: fx.Node, op: str, a: fx.Node, b: fx.Node, alpha) -> str:
    """A map and an N x C x 1 x 1 vector (a squeeze-excitation gate, a global context): the product is Caffe's
    Scale by the flattened vector; a sum or difference adds the vector broadcast over the map's planes."""
    sa, sb = ctx.shape(a), ctx.shape(b)
    big, small = (a, b) if len(sa) == 4 and sb == sa[:2] + (1, 1) else (b, a)
    if len(ctx.shape(big)) != 4 or ctx.shape(small) != ctx.shape(big)[:2] + (1, 1):
        raise ctx.refuse(node, f"broadcasts {sa} with {sb}; Caffe combines equal shapes, or an N x C x H x W map "
                               "with an N x C x 1 x 1 vector")
    ctx.pointwise(node, big)
    if op == "mul":
        return scale_by(ctx, node, ctx.blob(node, big), small, ctx.base(node))
    spread = broadcast(ctx, node, small, big, f"{ctx.base(node)}_{small.name}")
    ca, cb = 1.0, float(-alpha if op == "sub" else alpha)  # the result is ca * a + cb * b
    coeffs = [ca, cb] if big is a else [cb, ca]  # in the order of the bottoms: the map, then the spread vector
    param = {"operation": "SUM", **({"coeff": coeffs} if coeffs != [1.0, 1.0] else {})}
    return ctx.net.layer(ctx.base(node), "Eltwise", [ctx.blob(node, big), spread], eltwise_param=param)


def _with_number(ctx: Context, node: fx.Node, op: str, a, b) -> str:
    """A tensor and a number: Caffe's Power layer, ``(shift + scale * x) ^ 1``, computes ``x + c``, ``c - x``
    and ``c * x`` exactly."""
    x, c = (a, b) if ctx.tensor(a) is not None else (b, a)
    c = ctx.value(c)
    if not isinstance(c, (int, float)) or isinstance(c, bool):
        raise ctx.refuse(node, f"combines a tensor with {type(c).__name__}; Caffe needs a number or an equal blob")
    c = c * node.kwargs.get("alpha", 1)
    if op == "mul":
        scale, shift = float(c), 0.0
    elif op == "add":
        scale, shift = 1.0, float(c)
    else:
        scale, shift = (1.0, -float(c)) if x is a else (-1.0, float(c))
    ctx.pointwise(node, x)
    return ctx.net.layer(ctx.base(node), "Power", [ctx.blob(node, x)], power_param={"scale": scale, "shift": shift})


# -- heads ----------------------------------------------------------------------------------------------------

def _softmax(ctx: Context, node: fx.Node, dim) -> str:
    if dim is None:
        raise ctx.refuse(node, "softmax without dim; give dim (Caffe's Softmax axis)")
    axis = dim % len(ctx.shape(node))
    return _unary(ctx, node, "Softmax", **({"softmax_param": {"axis": axis}} if axis != 1 else {}))


@on(nn.Softmax)
def _softmax_module(ctx: Context, node: fx.Node) -> str:
    return _softmax(ctx, node, ctx.module(node).dim)


@on(F.softmax, torch.softmax, "softmax")
def _softmax_function(ctx: Context, node: fx.Node) -> str:
    if ctx.arg(node, 3 if node.op == "call_function" and node.target is F.softmax else 2, "dtype") is not None:
        raise ctx.refuse(node, "softmax with a dtype: Caffe computes in the blob's float type")
    return _softmax(ctx, node, ctx.arg(node, 1, "dim"))


@on(torch.argmax, "argmax")
def _argmax(ctx: Context, node: fx.Node) -> str:
    """Caffe's ArgMax gives indices as floats; among equal maxima it names the last, torch the first."""
    x, dim = node.args[0], ctx.arg(node, 1, "dim")
    if dim is None or not ctx.arg(node, 2, "keepdim", False):
        raise ctx.refuse(node, "Caffe's ArgMax keeps the reduced axis: use argmax(dim=..., keepdim=True)")
    axis = dim % len(ctx.shape(x))
    return ctx.net.layer(ctx.base(node), "ArgMax", [ctx.blob(node, x)], argmax_param={"axis": axis})
