"""NVCaffe's ``BatchNorm`` (NVIDIA/caffe 0.15-0.17, and the Xilinx models built on it): statistics and the
affine part in one layer.

``src/caffe/layers/batch_norm_layer.cpp``: blobs mean[C], variance[C], a one-value correction, and, when
``scale_bias`` is set or a ``scale_filler``/``bias_filler`` is given, scale[C] and bias[C]. At test time
``y = (x - mean) / sqrt(var + eps) * scale + bias`` with ``eps`` at least 1e-5 (cuDNN's minimum, which NVCaffe
enforces); statistics are divided by the correction value as BVLC's scale factor (NVCaffe keeps it at 1; a
3-blob file written by BVLC Caffe loads this way in NVCaffe too). ``use_global_stats: false`` means batch
statistics at test time, as NVCaffe computes them. Files from NVCaffe 0.15 and DIGITS store the five blobs as
scale, bias, mean, variance, reserved[1]; they are reordered on load, as NVCaffe 0.17 does.
"""

from __future__ import annotations

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
        if len(stored) == 5 and stored[4].size == 1 and stored[2].size != 1:  # 0.15 / DIGITS order
            return [stored[2], stored[3], stored[4], stored[0], stored[1]]
        return stored

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        c = shapes[0][1]
        return [(c,), (c,), (1,)] + ([(c,), (c,)] if self.affine else [])

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = BatchNorm(self.eps, self.use_global_stats)
        m.mean, m.variance, m.scale_factor = blobs[:3]
        if self.affine:
            m.weight, m.bias = blobs[3:]
        return m
