"""Normalisation layers: BatchNorm (+ Scale) and LRN; the forks' BN layers live with their forks.

Caffe's BatchNorm keeps *unnormalised* running sums: blobs are (mean * f, var * f, f), so the statistics are
``blob / f`` with ``f == 0`` meaning zero statistics (BVLC's ``scale_factor == 0 ? 0 : 1 / f``); ``eps`` is added
to the variance before the square root. The learned affine part lives in a following Scale layer.

In the TRAIN phase (a graph loaded with ``trainable=True``, in ``train()`` mode; :mod:`protoseg.train`),
``use_global_stats`` defaults to false. BVLC ``src/caffe/layers/batch_norm_layer.cpp`` then normalises with this
batch's mean and biased variance (over N and the spatial axes, ``m`` values per channel) and updates its blobs:
``f = maf * f + 1``, ``mean_blob = maf * mean_blob + mean``, ``var_blob = maf * var_blob + m / (m - 1) * var``
(``maf``: ``moving_average_fraction``); with ``use_global_stats: true`` it keeps the stored statistics. Its
LayerSetUp fixes the three blobs' ``lr_mult`` at 0 and refuses another value. DeepLab v2's Caffe (and PSPNet's,
which copies it) changed the layer: with batch statistics its TRAIN forward never computes the variance (it
normalises by whatever the buffer holds), so protoseg refuses that; with ``use_global_stats: true`` and
``update_global_stats: true`` it subtracts the stored mean, normalises by the batch's variance around it (held
constant in the backward) and updates the blobs as above with the stored mean in place of the batch mean. It does
not fix the statistics' ``lr_mult``, so a file must give 0 (its SGD would otherwise decay them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protoseg import forks
from protoseg.layers.base import Bottoms, Converter, Shape, register
from protoseg.train import Spec, TrainPhase


class BatchNorm(TrainPhase):
    """``(x - mean / f) / sqrt(var / f + eps)``, or batch statistics when ``use_global_stats`` is false; then
    ``* weight + bias`` where the layer holds them itself (NVCaffe). ``train_rule`` is the TRAIN phase's:
    ``batch`` (BVLC), ``stored`` or ``stored-update`` (DeepLab v2's ``update_global_stats``); NVCaffe's subclass
    has its own (``cudnn``)."""

    def __init__(self, eps: float, use_global_stats: bool, train_rule: str = "stored", fraction: float = 0.999):
        super().__init__()
        self.eps, self.use_global_stats = eps, use_global_stats
        self.train_rule, self.fraction = train_rule, fraction
        self.mean: nn.Parameter | None = None
        self.variance: nn.Parameter | None = None
        self.scale_factor: nn.Parameter | None = None
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        if self.in_train_phase():
            mean, var = self.train_statistics(x)
        elif self.use_global_stats:
            mean, var = self.stored_statistics()
        else:  # Caffe's training-mode forward: biased statistics of this batch
            mean, var = self.channel_statistics(x)
        y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y

    def stored_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.scale_factor[0]
        inv = torch.where(f == 0, torch.zeros_like(f), 1.0 / f)
        return self.mean * inv, self.variance * inv

    def train_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The statistics the TRAIN phase normalises with; the blobs are updated in place as Caffe updates them."""
        if self.train_rule == "stored":
            return self.stored_statistics()
        m = x.numel() // x.shape[1]
        correction = m / (m - 1) if m > 1 else 1.0
        if self.train_rule == "batch":
            mean, var = self.channel_statistics(x)
            update = mean.detach()
        else:  # stored-update: the stored mean, this batch's variance around it, constant in the backward
            with torch.no_grad():
                mean, var = self.channel_statistics(x, self.stored_statistics()[0])
                update = mean
        with torch.no_grad():
            self.scale_factor.mul_(self.fraction).add_(1.0)
            self.mean.mul_(self.fraction).add_(update)
            self.variance.mul_(self.fraction).add_(var.detach() * correction)
        return mean, var

    def channel_affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(a, b)`` with ``y = a[c] * x + b[c]`` when the layer is that (stored statistics), else None; in
        float64, for folding into the convolution before it (:mod:`protoseg.optimize`)."""
        if not self.use_global_stats:
            return None
        f = float(self.scale_factor.double()[0])
        inv = 0.0 if f == 0 else 1.0 / f
        a = 1.0 / torch.sqrt(self.variance.double() * inv + self.eps)
        b = -self.mean.double() * inv * a
        if self.weight is not None:
            a, b = a * self.weight.double(), b * self.weight.double() + self.bias.double()
        return a, b

    def extra_repr(self) -> str:
        return f"eps={self.eps}, use_global_stats={self.use_global_stats}"


@register("BatchNorm")
class BatchNormConverter(Converter):
    """BVLC BatchNorm: statistics stored times a scale factor (blob 2), ``eps`` added to the variance."""

    preserves_coords = True
    stored_blobs = (3,)

    def setup(self) -> None:
        p = self.param.batch_norm_param
        # Caffe: use_global_stats defaults to (phase == TEST); protoseg builds TEST nets, TRAIN is train() mode.
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else True
        self.eps = p.eps
        self.fraction = p.moving_average_fraction
        self.deeplab = "deeplab-v2" in forks.lineage(self.fork)  # DeepLab v2's and PSPNet's changed layer
        train_global = p.use_global_stats if p.HasField("use_global_stats") else False
        self.train_rule = "batch" if not train_global else "stored-update" if (
            self.deeplab and p.update_global_stats) else "stored"
        self.train_refusal = None
        if self.deeplab and not train_global:
            self.train_refusal = self.error(
                "has no defined TRAIN phase with batch statistics in DeepLab v2's Caffe (nor PSPNet's): its forward "
                "never computes the batch variance; set use_global_stats: true (as DeepLab's prototxts do), with "
                "update_global_stats: true to update the stored statistics")
        elif self.deeplab and not 0 <= self.fraction <= 1:
            self.train_refusal = self.error(f"moving_average_fraction {self.fraction:g} must be in [0, 1] (Caffe's "
                                            "check)")

    def train_specs(self, specs: list[Spec]) -> list[Spec]:
        """BVLC's LayerSetUp gives the statistics ``lr_mult: 0`` and refuses any other value; DeepLab v2's takes
        the file's (1 when unset), so there it must be 0 too or its SGD would decay the statistics."""
        out = []
        for i, spec in enumerate(specs):
            if i >= len(self.param.param) and not self.deeplab:
                spec = Spec(0.0, spec.decay_mult)
            lr = 1.0 if spec.lr_mult is None else spec.lr_mult
            if lr != 0 and self.deeplab:
                raise self.error(f"blob {i} (a statistic) would have lr_mult {lr:g}: DeepLab v2's Caffe does not fix "
                                 "BatchNorm's lr_mult, so its SGD would decay the statistics; give "
                                 "param { lr_mult: 0 } for each of the three blobs, as DeepLab's prototxts do")
            if lr != 0:
                raise self.error(f"blob {i} (a statistic) has lr_mult {lr:g}; Caffe refuses to learn BatchNorm's "
                                 "statistics: give it lr_mult: 0")
            out.append(spec)
        return out

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        c = shapes[0][1]
        return [(c,), (c,), (1,)]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = BatchNorm(self.eps, self.use_global_stats, self.train_rule, self.fraction)
        m.mean, m.variance, m.scale_factor = blobs
        m.refusal = self.train_refusal
        return m


class Scale(nn.Module):
    """``x * scale (+ bias)``, the scale broadcast over the axes starting at ``axis``."""

    def __init__(self, axis: int, shape: tuple[int, ...]):
        super().__init__()
        self.axis, self.shape = axis, shape
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def _broadcast(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.reshape((1,) * self.axis + tuple(t.shape) + (1,) * (ndim - self.axis - t.dim()))

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.weight if scale is None else scale
        y = x * self._broadcast(scale, x.dim())
        if self.bias is not None:
            y = y + self._broadcast(self.bias, x.dim())
        return y

    def channel_affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(scale, bias)`` per channel when this Scale is that (one bottom, axis 1, one value per channel)."""
        if self.weight is None or self.axis != 1 or len(self.shape) != 1:
            return None
        bias = self.bias.double() if self.bias is not None else torch.zeros_like(self.weight, dtype=torch.float64)
        return self.weight.double(), bias

    def extra_repr(self) -> str:
        return f"axis={self.axis}, shape={self.shape}"


@register("Scale")
class ScaleConverter(Converter):
    """Caffe's ScaleLayer: one bottom with a learned scale blob, or two bottoms (the second is the scale)."""

    preserves_coords = True
    bottoms = (1, 2)

    def setup(self) -> None:
        p = self.param.scale_param
        self.bias_term = p.bias_term
        self.raw_axis, self.num_axes = p.axis, p.num_axes
        if self.num_axes < -1:
            raise self.error(f"num_axes {self.num_axes} must be -1 or more")

    def _scale_shape(self, shapes: Bottoms) -> tuple[int, tuple[int, ...]]:
        x = shapes[0]
        if len(shapes) == 2:
            s = shapes[1]
            axis = self.axis(self.raw_axis, len(x)) if len(s) else 0
            if tuple(x[axis : axis + len(s)]) != tuple(s):
                raise self.shape_error(f"scale bottom {s} does not match {x} from axis {axis}")
            return axis, tuple(s)
        axis = self.axis(self.raw_axis, len(x))
        end = len(x) if self.num_axes == -1 else axis + self.num_axes
        if end > len(x):
            raise self.shape_error(f"num_axes {self.num_axes} from axis {axis} exceeds the bottom's {len(x)} axes")
        return axis, tuple(x[axis:end])

    def infer(self, shapes: Bottoms) -> list[Shape]:
        self._scale_shape(shapes)
        return [shapes[0]]

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        _, shape = self._scale_shape(shapes)
        blobs = [] if len(shapes) == 2 else [shape]
        return blobs + [shape] if self.bias_term else blobs

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = Scale(*self._scale_shape(shapes))
        blobs = list(blobs)
        if len(self.param.bottom) == 1:
            m.weight = blobs.pop(0)
        if self.bias_term:
            m.bias = blobs.pop(0)
        return m


class LRN(nn.Module):
    """Caffe's LRN. Across channels: ``x / (k + alpha/n * sum x^2)^beta``; within:
    ``x / (1 + alpha * avg x^2)^beta``."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, within: bool):
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.within = size, alpha, beta, k, within

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.within:
            # a window wider than 2C - 1 channels sums them all, like one of exactly that width: clip it (torch
            # pads the channels by the window) and keep Caffe's alpha / n
            size = min(self.size, 2 * x.shape[1] - 1)
            return F.local_response_norm(x, size, self.alpha * size / self.size, self.beta, self.k)
        pad = (self.size - 1) // 2
        avg = F.avg_pool2d(x * x, self.size, 1, pad, ceil_mode=True, count_include_pad=True)
        return x * torch.pow(1.0 + self.alpha * avg, -self.beta)

    def extra_repr(self) -> str:
        region = "WITHIN_CHANNEL" if self.within else "ACROSS_CHANNELS"
        return f"{region}, size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


@register("LRN")
class LRNConverter(Converter):
    """LRN across or within channels."""

    preserves_coords = True

    def setup(self) -> None:
        p = self.param.lrn_param
        if p.local_size % 2 == 0:
            raise self.error(f"local_size {p.local_size} must be odd (Caffe's rule)")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.within = type(p).NormRegion.Name(p.norm_region) == "WITHIN_CHANNEL"

    def infer(self, shapes: Bottoms) -> list[Shape]:
        if len(shapes[0]) != 4:
            raise self.shape_error(f"expects an N x C x H x W bottom (Caffe's LRN checks 4 axes), got {shapes[0]}")
        return [shapes[0]]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return LRN(self.size, self.alpha, self.beta, self.k, self.within)

