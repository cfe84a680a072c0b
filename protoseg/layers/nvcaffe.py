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
"""

from __future__ import annotations

import numpy as np
from torch import nn

from protoseg.layers.base import Bottoms, Shape, register
from protoseg.layers.norm import BatchNorm, BatchNormConverter

#: cuDNN's smallest batch-norm epsilon, which NVCaffe's layer clamps to.
CUDNN_BN_MIN_EPSILON = 1e-5


@register("BatchNorm", fork="nvcaffe")
class NVCaffeBatchNorm(BatchNormConverter):
    """NVCaffe's BatchNorm: 3 or 5 blobs (statistics, then scale and bias), eps at least 1e-5."""

    stored_blobs = (3, 5)

    def setup(self) -> None:
        super().setup()
        p = self.param.batch_norm_param
        self.affine = p.scale_bias or p.HasField("scale_filler") or p.HasField("bias_filler")
        self.eps = max(self.eps, CUDNN_BN_MIN_EPSILON)

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
        m = BatchNorm(self.eps, self.use_global_stats)
        m.mean, m.variance, m.scale_factor = blobs[:3]
        if self.affine:
            m.weight, m.bias = blobs[3:]
        return m
