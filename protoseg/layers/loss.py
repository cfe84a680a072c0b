"""Losses, accuracies and writers: dropped from the inference graph.

Their tops are never consumed, so a blob that only fed a loss (FCN's ``score``) becomes a net output.
"""

from __future__ import annotations

from protoseg.layers.base import Bottoms, Converter, Shape, register


@register(
    "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss",
    "MultinomialLogisticLoss", "ContrastiveLoss", "Accuracy", "Silence", "HDF5Output",
)
@register("SegAccuracy", "MatWrite", fork=("deeplab-v1", "deeplab-v2"))
@register("EltwiseAccuracy", "RedSoftmaxWithLoss", "RedAccuracy", "BinaryAccuracy", fork="deconvnet")
@register("SegmentPixelIOU", fork="nvcaffe")  # Xilinx's vai_q_caffe (NVCaffe-based) scoring layer
class TrainingOnly(Converter):
    """Losses, accuracies and writers: dropped from the inference graph (their tops are never consumed)."""

    bottoms = (0, None)
    tops = (0, None)

    def setup(self) -> None:
        self.role = "prune"

    def infer(self, shapes: Bottoms) -> list[Shape]:
        return [()] * len(self.param.top)
