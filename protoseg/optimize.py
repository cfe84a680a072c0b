"""The fast form of a converted net, for running it rather than inspecting it.

:func:`optimize` rewrites the faithful graph (one node per Caffe layer, every blob observable) into one that
computes the same outputs with fewer, faster passes:

* every convolution absorbs the per-channel affine layers that follow it (BatchNorm with stored statistics,
  Scale, PSPNet's and SegNet's BN — each layer says what affine it is: ``channel_affine()``) and a ReLU after
  them, folded in float64 and rounded once;
* on CPU the convolution weights are re-laid out once for oneDNN (``mkldnn._reorder_convolution_weight``) and run
  with the ReLU fused (``mkldnn._convolution_pointwise``): no per-call weight reorder, no separate ReLU pass;
* fp32 convolutions with large kernels on many channels (FCN's 7 x 7 fc6), and 1 x 1 ones on 4096 channels or
  more (its fc7), run as oneDNN inner products of the input's patches and the weights, which reach more of the
  GEMM peak than oneDNN's convolution kernels there;
* layers with a faster equivalent for these layouts use it (``fast()``: MAX pooling as maxima over strided
  window views, compared as integers in bf16/fp16 where the graph knows the input is a ReLU's output;
  Deconvolutions whose kernel is whole strides as a convolution and a pixel shuffle);
* activations stay ``channels_last`` from the first convolution to the output, so oneDNN never converts layouts
  between layers (outputs may stay channels_last too: the same N x C x H x W tensors to any reader); an fp32
  RGB image enters planar, which oneDNN's first-layer kernels read faster;
* ``precision`` ``bf16``/``fp16`` casts weights and activations (bf16 uses AVX512-BF16/AMX on CPUs with them),
  and the outputs come back as float32.

The intermediate blobs are gone, so ``verify`` uses the faithful graph; the fp32 fast graph matches Caffe's
outputs within the fixtures' tolerances (``tests/test_optimize.py``).
"""

from __future__ import annotations

import collections
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn

from protoseg.errors import ProtosegError, ProtosegWarning
from protoseg.layers.activation import ReLU
from protoseg.layers.conv import Conv2d, ConvTranspose2d
from protoseg.layers.eltwise import Eltwise
from protoseg.layers.pool import Pool2d

__all__ = ["PRECISIONS", "native_bf16", "optimize"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: fp32 images with at most this many channels enter the fast graph planar (see ``_enter``).
PLANAR_INPUT_CHANNELS = 4


def native_bf16() -> bool:
    """Whether oneDNN runs bf16 on this CPU: it needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, and refuses the
    prepacked bf16 kernels elsewhere; PyTorch's own kernels still compute bf16 there, emulated and slowly."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _mkldnn_ok(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and (
        dtype == torch.float32 or (dtype == torch.bfloat16 and native_bf16()))


class FusedConv(nn.Module):
    """A convolution with its following per-channel affines folded in and an optional ReLU fused.

    On CPU the weight is laid out for oneDNN once per input shape (oneDNN picks its kernel by shape: without it
    a bf16 1x1 convolution on a small map can run 50x slower) and kept for the last few shapes seen: a cache of
    layouts, never of results.
    """

    #: Input shapes whose weight layout is kept.
    CACHED_SHAPES = 4
    #: Below this many output channels a k x k convolution runs as one 1 x 1 convolution giving every tap's
    #: contribution, then k*k shifted sums: oneDNN's direct kernels are slow for so few outputs (DeepLab v2's
    #: 21-class ASPP heads on 2048 channels: 2-4x faster this way).
    TAPS_BELOW = 64
    #: ... and only for small kernels on many input channels, where the k*k planes of partial sums cost less
    #: than the direct convolution's slow path (a 7 x 7 head on 3 channels would hold 49 planes per output).
    TAPS_MAX_KERNEL, TAPS_INPUTS_PER_PLANE = 25, 4
    #: An fp32 convolution with a kernel of this many taps or more, on many channels, runs as matrix products of
    #: the input's patches and the weights (im2col): on FCN's 7 x 7 fc6 over a 22 x 22 map oneDNN's direct
    #: kernel reaches ~55 % of the GEMM peak on an AVX-512 Xeon and the product ~80 %; the 3 x 3 layers and all
    #: bf16 (AMX) convolutions are faster direct. Patches are gathered a block of output rows at a time, at most
    #: GEMM_MAX_PATCHES values, so a large map costs bounded memory.
    GEMM_MIN_TAPS, GEMM_MIN_CHANNELS, GEMM_MAX_PATCHES = 25, 64, 1 << 24
    #: A 1 x 1 fp32 convolution on this many input channels (a fully connected layer made convolutional: FCN's
    #: fc7) is the same matrix product with the input itself as the patches: oneDNN's 1 x 1 kernel falls to
    #: ~30 % of the GEMM peak there on AVX2 (4096 -> 4096 channels on 14 x 14 to 32 x 32 maps), its inner
    #: product stays at ~90-100 %.
    GEMM_MIN_INPUTS_1X1 = 4096

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, conv: Conv2d, relu: float | None,
                 dtype: torch.dtype, device: torch.device, accumulate: bool = False):
        super().__init__()
        #: At a shortcut join, write the sum into the shortcut's tensor (the graph's last use of it): oneDNN's
        #: in-place sum is ~10 % faster than its add post-op in fp32 (ResNet's 256 -> 1024 joins at 65 x 65), the
        #: same values; in bf16 it is slower.
        self.accumulate = accumulate and dtype == torch.float32
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu  # None: no activation; otherwise the negative slope
        self.packed = _mkldnn_ok(device, dtype)
        out, inputs, kh, kw = weight.shape
        self.taps = (kh, kw) if (self.packed and out < self.TAPS_BELOW and 1 < kh * kw <= self.TAPS_MAX_KERNEL
                                 and inputs >= self.TAPS_INPUTS_PER_PLANE * out * kh * kw
                                 and self.groups == 1 and self.stride == [1, 1]) else None
        wide = (kh * kw >= self.GEMM_MIN_TAPS and min(inputs, out) >= self.GEMM_MIN_CHANNELS) or (
            kh * kw == 1 and inputs >= self.GEMM_MIN_INPUTS_1X1)
        self.gemm = (kh, kw) if (self.packed and dtype == torch.float32 and wide
                                 and self.groups == 1 and self.stride == [1, 1]) else None
        if self.taps is not None:  # tap-major: channel (i * kw + j) * out + o holds w[o, :, i, j]
            weight = weight.permute(2, 3, 0, 1).reshape(kh * kw * out, -1, 1, 1)
        if self.gemm is not None:  # an out x (kh * kw * inputs) matrix, columns in the patches' (i, j, c) order
            weight = weight.permute(0, 2, 3, 1).reshape(out, -1)
        self.register_buffer("weight", weight.to(device, dtype).contiguous(
            memory_format=torch.contiguous_format if self.gemm else torch.channels_last))
        self.register_buffer("bias", bias.to(device, dtype))
        self._layouts: dict[tuple[int, ...], torch.Tensor] = {}

    def _layout(self, shape: tuple[int, ...]) -> torch.Tensor:
        if shape not in self._layouts:
            if len(self._layouts) >= self.CACHED_SHAPES:
                self._layouts.pop(next(iter(self._layouts)))
            one = self.taps is not None
            self._layouts[shape] = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, [0, 0] if one else self.padding, self.stride, [1, 1] if one else self.dilation,
                self.groups, list(shape))
        return self._layouts[shape]

    def _by_taps(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (ph, pw), (dh, dw) = self.taps, self.padding, self.dilation
        parts = torch.ops.mkldnn._convolution_pointwise(x, self._layout(tuple(x.shape)), None, [0, 0], [1, 1],
                                                        [1, 1], 1, "none", [], "")
        parts = F.pad(parts.float(), (pw, pw, ph, ph))
        out_h, out_w = parts.shape[2] - dh * (kh - 1), parts.shape[3] - dw * (kw - 1)
        outs = self.bias.numel()
        y = self.bias.float().reshape(1, -1, 1, 1).expand(x.shape[0], outs, out_h, out_w)
        for i in range(kh):
            for j in range(kw):
                k = (i * kw + j) * outs
                y = y + parts[:, k:k + outs, i * dh:i * dh + out_h, j * dw:j * dw + out_w]
        return y.to(x.dtype)

    def _by_gemm(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The convolution as oneDNN inner products of patch rows and the weight matrix (its brgemm kernels
        reach ~95 % of the GEMM peak on these shapes on an AVX2 EPYC, MKL's sgemm 70-85 %)."""
        (kh, kw), (ph, pw), (dh, dw) = self.gemm, self.padding, self.dilation
        x = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        n, c, h, w = x.shape
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        out_h, out_w, outs = h - span_h + 1, w - span_w + 1, self.bias.numel()
        # a 1 x 1 kernel's patches are the channels_last input itself: no copy, so no need for blocks
        rows = out_h if kh * kw == 1 else max(1, self.GEMM_MAX_PATCHES // (out_w * c * kh * kw))
        attr, scalars = self._post_op() if residual is None else ("none", [])
        nhwc = x.permute(0, 2, 3, 1)
        pieces = []
        for i in range(n):
            for r in range(0, out_h, rows):
                r_end = min(out_h, r + rows)
                patches = nhwc[i, r:r_end + span_h - 1].unfold(0, span_h, 1).unfold(1, span_w, 1)[..., ::dh, ::dw]
                patches = patches.permute(0, 1, 3, 4, 2).reshape(-1, kh * kw * c)  # (row, col) x (i, j, c)
                pieces.append(torch.ops.mkldnn._linear_pointwise(patches, self.weight, self.bias, attr, scalars, ""))
        y = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        y = y.view(n, out_h, out_w, outs).permute(0, 3, 1, 2)  # N x C x H x W, laid out channels_last
        return y if residual is None else self._activate(y.add_(residual))

    def _post_op(self) -> tuple[str, list[float]]:
        """The fused ReLU as oneDNN's post-op name and scalars."""
        if self.relu is None:
            return "none", []
        return ("relu", []) if self.relu == 0 else ("leaky_relu", [self.relu])

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        """The fused ReLU, in place: ``y`` is always a tensor this layer has just made."""
        if self.relu is None:
            return y
        return F.relu_(y) if self.relu == 0 else F.leaky_relu_(y, self.relu)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``relu(conv(x) [+ residual])``, the residual being a shortcut join's other blob (ResNet)."""
        if self.gemm is not None:
            return self._by_gemm(x, residual)
        if self.taps is None and self.packed:
            attr, scalars = self._post_op()
            args = (self._layout(tuple(x.shape)), self.bias, self.padding, self.stride, self.dilation, self.groups)
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(x, *args, attr, scalars, "")
            unary = None if attr == "none" else attr  # the binary ops name "no activation" None
            if self.accumulate and residual.is_contiguous(memory_format=torch.channels_last):
                return torch.ops.mkldnn._convolution_pointwise_.binary(residual, x, *args, "add", 1.0, unary,
                                                                       scalars, "")
            return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, *args, "add", None, unary, scalars, "")
        y = self._by_taps(x) if self.taps is not None else F.conv2d(x, self.weight, self.bias, self.stride,
                                                                    self.padding, self.dilation, self.groups)
        return self._activate(y if residual is None else y + residual)

    def extra_repr(self) -> str:
        relu = "" if self.relu is None else (", relu" if self.relu == 0 else f", leaky_relu({self.relu})")
        return (f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, dilation={tuple(self.dilation)}, "
                f"groups={self.groups}{relu}{self._kernel_note()}")

    def _kernel_note(self) -> str:
        return ", im2col GEMM" if self.gemm else ", oneDNN prepacked" if self.packed else ""


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].op == "call_module" and users[0].args == (node,) else None


def _fold(gm: fx.GraphModule, conv_node: fx.Node) -> tuple[torch.Tensor, torch.Tensor, float | None, list[fx.Node]]:
    """Weights and bias of ``conv_node`` with the affines after it folded in, the ReLU slope (or None), and the
    nodes the fused convolution replaces (the convolution first, the one whose value it gives last)."""
    conv = gm.get_submodule(conv_node.target)
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    chain, relu = [conv_node], None
    while (user := _only_user(chain[-1])) is not None:
        module = gm.get_submodule(user.target)
        affine = getattr(module, "channel_affine", lambda: None)()
        if affine is not None and affine[0].numel() == weight.shape[0]:
            a, b = (t.detach().double().flatten() for t in affine)
            weight, bias = weight * a.reshape(-1, 1, 1, 1), bias * a + b
            chain.append(user)
            continue
        if isinstance(module, ReLU):
            relu = float(module.negative_slope)
            chain.append(user)
        break
    return weight, bias, relu, chain


def _is_conv(module) -> bool:
    return isinstance(module, Conv2d) and not isinstance(module, ConvTranspose2d) and module.weight.dim() == 4


def _residual(gm: fx.GraphModule, node: fx.Node, ends: dict[fx.Node, fx.Node]) -> tuple[fx.Node, fx.Node,
                                                                                          list[fx.Node]] | None:
    """For an Eltwise SUM of two blobs where one is a folded convolution's value used only here (ResNet's
    shortcut join): (that convolution, the other blob, the nodes fused: the Eltwise and a plain ReLU after it;
    a leaky one stays a layer of its own)."""
    module = gm.get_submodule(node.target)
    if not isinstance(module, Eltwise) or module.op != "SUM" or len(node.args) != 2 or set(module.coeffs) != {1.0}:
        return None
    for mine, other in (node.args, node.args[::-1]):
        conv = ends.get(mine)
        if conv is not None and len(mine.users) == 1 and other is not mine:
            fused = [node]
            user = _only_user(node)
            relu = gm.get_submodule(user.target) if user is not None else None
            if isinstance(relu, ReLU) and relu.negative_slope == 0:  # oneDNN's add post-op takes a plain ReLU
                fused.append(user)
            return conv, other, fused
    return None


def optimize(gm: fx.GraphModule, *, precision: str = "fp32", device: str | torch.device = "cpu",
             fuse: bool = True) -> fx.GraphModule:
    """The fast form of a faithful protoseg graph ``gm`` (left unchanged; unchanged layers are shared).

    With ``fuse=False`` only the precision and layout change: the layers and their parameter names stay the
    faithful graph's, and nothing device-specific is used (what ``convert --precision`` exports).
    """
    if precision not in PRECISIONS:
        raise ProtosegError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    dtype, device = PRECISIONS[precision], torch.device(device)
    if fuse and dtype == torch.bfloat16 and device.type == "cpu" and not native_bf16():
        warnings.warn("this CPU has no bf16 instructions oneDNN can use (AVX-512 BW/VL/DQ or AVX-NE-CONVERT): bf16 "
                      "runs in PyTorch's emulated kernels, slower than fp32; choose --precision fp32 here",
                      ProtosegWarning, stacklevel=2)
    modules = dict(gm.named_modules())
    # Plan first: each convolution with what folds into it, then the shortcut joins that take one of them.
    folds = {n: _fold(gm, n) for n in gm.graph.nodes
             if fuse and n.op == "call_module" and _is_conv(modules[n.target])}
    ends = {chain[-1]: conv for conv, (_, _, relu, chain) in folds.items() if relu is None}
    joins = {n: plan for n in gm.graph.nodes if fuse and device.type == "cpu" and n.op == "call_module"
             and (plan := _residual(gm, n, ends)) is not None}
    graph, root = fx.Graph(), nn.Module()
    env: dict[fx.Node, fx.Node] = {}
    # a join's convolution is emitted at the join, once the other blob exists: skip its chain until then
    replaced: set[fx.Node] = {n for conv, _, _ in joins.values() for n in folds[conv][3]}
    nonnegative: set[fx.Node] = set()  # new nodes whose values are known to be >= 0 (what a layer's fast() may use)
    made: set[fx.Node] = set()  # new nodes whose tensors a fused convolution makes (never an input's)
    calls = collections.Counter(n.target for n in gm.graph.nodes if n.op == "call_module")

    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    runs_at = {conv: join for join, (conv, _, _) in joins.items()}  # a join's convolution runs at the join

    def last_use(value: fx.Node, at: fx.Node) -> bool:
        """Whether ``at`` is the last reader of ``value``, every other reader a convolution (which makes a new
        tensor, never a view of its input) that runs before it: then ``at`` may overwrite it."""
        return all(u is at or (u in folds and order[runs_at.get(u, u)] < order[at]) for u in value.users)

    def emit(conv: fx.Node, args: tuple, last: fx.Node, relu: float | None, covered: list[fx.Node],
             accumulate: bool = False) -> None:
        weight, bias, own_relu, chain = folds[conv]
        name = last.target.replace(".", "_")
        relu = relu if relu is not None else own_relu
        root.add_module(name, FusedConv(weight, bias, modules[conv.target], relu, dtype, device,
                                        accumulate=accumulate))
        new = graph.call_module(name, args)
        new.meta.update(last.meta, fused=[n.meta.get("caffe_layer") for n in chain + covered])
        replaced.update(chain + covered)
        env[last] = new
        made.add(new)
        if relu == 0:
            nonnegative.add(new)

    for node in gm.graph.nodes:
        if node in replaced:
            continue
        if node.op == "placeholder":
            new = graph.placeholder(node.target)
            new.meta.update(node.meta)
            env[node] = graph.call_function(_enter, (new, dtype)) if is_image(node.meta.get("shape")) else new
            continue
        if node.op == "output":
            graph.output(fx.node.map_arg(node.args[0], lambda n: graph.call_function(_leave, (env[n],))))
            continue
        if node in folds:
            emit(node, (env[node.args[0]],), folds[node][3][-1], None, [])
            continue
        if node in joins:
            conv, other, fused = joins[node]
            relu = float(modules[fused[-1].target].negative_slope) if len(fused) == 2 else None
            emit(conv, (env[conv.args[0]], env[other]), fused[-1], relu, fused,
                 accumulate=env[other] in made and last_use(other, node))
            continue
        new = graph.node_copy(node, lambda n: env[n])
        if node.op == "call_module" and node.target not in dict(root.named_children()):
            module = modules[node.target]
            source = node.args[0] if node.args else None  # a layer called at several places gets no hint
            positive_input = calls[node.target] == 1 and isinstance(source, fx.Node) and env[source] in nonnegative
            if _keeps_nonnegative(module, positive_input):
                nonnegative.add(new)
            if fuse and hasattr(module, "fast"):
                module = module.fast(nonnegative=positive_input)
            root.add_module(node.target, _cast(module, dtype, device))
        env[node] = new
    graph.lint()
    fast = fx.GraphModule(root, graph, class_name=f"{type(gm).__name__}Fast")
    fast.meta.update(gm.meta, precision=precision, fused=fuse)
    return fast.eval()


def _keeps_nonnegative(module: nn.Module, positive_input: bool) -> bool:
    """Whether a layer's output is >= 0: a ReLU's always, MAX pooling's when its input is (it only picks)."""
    if isinstance(module, ReLU):
        return module.negative_slope == 0
    return positive_input and isinstance(module, Pool2d) and module.mode == "MAX"


def _cast(module: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """``module`` on ``device`` in ``dtype``: shared when nothing changes, else a copy (the faithful graph keeps
    its float32 weights)."""
    tensors = list(module.parameters()) + list(module.buffers())
    if all(t.dtype == dtype and t.device == device for t in tensors):
        return module
    import copy

    return copy.deepcopy(module).to(device, dtype)


def is_image(shape) -> bool:
    """Whether an input of this declared shape is an image batch (N x C x H x W, more than 1 x 2): images go in
    the working precision and layout; small side inputs (DeepLab's ``data_dim`` sizes) stay exact."""
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 2


@torch.fx.wrap
def _enter(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An image input in the working precision and in channels_last, except an fp32 image of a few planes:
    oneDNN's fp32 first-layer kernels read those planar faster (LargeFOV's conv1_1 on two cores: 5.7 ms
    planar, 9.0 channels_last; in bf16 the other way round: 24 and 3.0 ms). Their outputs are channels_last."""
    if dtype == torch.float32 and x.dim() == 4 and x.shape[1] <= PLANAR_INPUT_CHANNELS:
        return x.to(dtype).contiguous()
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


@torch.fx.wrap
def _leave(x):
    """Graph outputs as float32, whatever the working precision (the layout may stay channels_last: the same
    N x C x H x W tensor to every reader, without a copy)."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.float()
    return x

