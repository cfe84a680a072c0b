"""NVCaffe's ``BatchNorm`` (NVIDIA/caffe 0.15-0.17, and the Xilinx models built on it): statistics and the
affine part in one layer.

``src/caffe/layers/batch_norm_layer.cpp``: blobs mean[C], variance[C], a one-value correction, and, when
``scale_bias`` is set or a ``scale_filler``/``bias_filler`` is given, scale[C] and bias[C]. At test time
``y = (x - mean) / sqrt(var + eps) * scale + bias`` with ``eps`` at least 1e-5 (cuDNN's minimum, which NVCaffe
0.16+ enforces). A 3-blob file (BVLC's layout) has its statistics divided by blob 2, as NVCaffe 0.17 does on
load; in a 5-blob file the statistics are stored as they are and blob 2 is not read. Files from NVCaffe 0.15 and
DIGITS store the five blobs as scale, bias, mean, variance, reserved[1] (saved as 0); they are reordered on load,
as NVCaffe 0.17 does. ``use_global_stats: false`` means batch statistics at test time, as NVCaffe 0.15 and the
DIGITS-era builds compute them (0.16+ ignore the flag at test time).

TRAIN phase (NVCaffe 0.17 ignores ``use_global_stats`` there too): the batch's mean and biased variance normalise;
with the default engine (cuDNN's ``cudnnBatchNormalizationForwardTraining`` in NVCaffe's GPU builds,
``cudnn_batch_norm_layer.cu``) the running statistics become ``(1 - a) * stored + a * batch`` with
``a = 1 - moving_average_fraction``, the variance unbiased (``m / (m - 1)``, as cuDNN keeps it), and ``a = 1`` on
the solver's first iteration, which protoseg takes as the first TRAIN forward after loading. The ``CAFFE`` engine
counts its updates in a member it never sets when the blobs come from a caffemodel, so its TRAIN phase is
undefined for a loaded net and protoseg refuses it. LayerSetUp fixes the statistics' ``lr_mult``/``decay_mult`` at 0
and the scale's and bias's at 1, whatever the file says.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from protoseg.layers.base import Bottoms, Shape, register
from protoseg.layers.norm import BatchNorm, BatchNormConverter
from protoseg.train import Spec

#: cuDNN's smallest batch-norm epsilon, which NVCaffe's layer clamps to.
CUDNN_BN_MIN_EPSILON = 1e-5


class CudnnBatchNorm(BatchNorm):
    """NVCaffe's BatchNorm; in the TRAIN phase, batch statistics and cuDNN's running averages."""

    train_steps = 0  # TRAIN forwards so far: the first replaces the stored statistics

    def train_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = self.channel_statistics(x)
        m = x.numel() // x.shape[1]
        a = 1.0 if self.train_steps == 0 else 1.0 - self.fraction
        with torch.no_grad():
            stored_mean, stored_var = self.stored_statistics()
            self.mean.copy_((1.0 - a) * stored_mean + a * mean)
            self.variance.copy_((1.0 - a) * stored_var + a * var * (m / (m - 1) if m > 1 else 1.0))
            self.scale_factor.fill_(1.0)  # the statistics are now stored as they are
        self.train_steps += 1
        return mean, var


@register("BatchNorm", fork="nvcaffe")
class NVCaffeBatchNorm(BatchNormConverter):
    """NVCaffe's BatchNorm: 3 or 5 blobs (statistics, then scale and bias), eps at least 1e-5."""

    stored_blobs = (3, 5)

    def setup(self) -> None:
        super().setup()
        p = self.param.batch_norm_param
        self.affine = p.scale_bias or p.HasField("scale_filler") or p.HasField("bias_filler")
        self.eps = max(self.eps, CUDNN_BN_MIN_EPSILON)
        self.train_rule = "cudnn"
        self.train_refusal = None
        if p.engine == type(p).CAFFE:
            self.train_refusal = self.error(
                "engine: CAFFE has no defined TRAIN phase for weights loaded from a caffemodel (NVCaffe's layer reads "
                "an update counter it never sets); use engine: DEFAULT or CUDNN, NVCaffe's GPU default")
        elif not 0 <= self.fraction <= 1:
            self.train_refusal = self.error(f"moving_average_fraction {self.fraction:g} must be in [0, 1]")

    def train_specs(self, specs: list[Spec]) -> list[Spec]:
        """NVCaffe's LayerSetUp: statistics at lr_mult = decay_mult = 0, scale and bias at 1, whatever is given."""
        return [Spec(0.0, 0.0) if i < 3 else Spec(1.0, 1.0) for i in range(len(specs))]

    def arrange(self, stored: list) -> list:
        if len(stored) != 5:
            return stored  # 3 blobs: BVLC's layout, the statistics scaled by blob 2 as BVLC keeps them
        if stored[4].size == 1 and stored[2].size != 1:  # 0.15 / DIGITS order: scale, bias, mean, var, reserved
            stored = [stored[2], stored[3], stored[4], stored[0], stored[1]]
        # Five blobs hold the statistics themselves: NVCaffe never reads blob 2 (0.15 saves it as 0).
        return [stored[0], stored[1], np.ones_like(stored[2]), stored[3], stored[4]]

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        c = shapes[0][1]
        return [(c,), (c,), (1,)] + ([(c,), (c,)] if self.affine else [])

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = CudnnBatchNorm(self.eps, self.use_global_stats, self.train_rule, self.fraction)
        m.mean, m.variance, m.scale_factor = blobs[:3]
        if self.affine:
            m.weight, m.bias = blobs[3:]
        m.refusal = self.train_refusal
        return m
