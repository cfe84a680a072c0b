"""PyTorch definitions of segmentation models that never had a Caffe release, made to export to Caffe.

Each builder returns a plain ``nn.Module`` made only of layers :mod:`protoseg.to_caffe` writes exactly, so the
model can be trained in PyTorch and deployed as prototxt + caffemodel.
"""

from __future__ import annotations

from protoseg.models.deeplabv3 import DeepLabV3, deeplabv3_resnet101

__all__ = ["DeepLabV3", "deeplabv3_resnet101"]
