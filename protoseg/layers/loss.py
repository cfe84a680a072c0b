"""Losses, accuracies and writers: dropped from the inference graph.

Their tops are never consumed, so a blob that only fed a loss (FCN's ``score``) becomes a net output.
"""

from __future__ import annotations

from protoseg.layers.base import Converter, Shape, register


@register(
    "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss",
    "MultinomialLogisticLoss", "ContrastiveLoss", "Accuracy", "SegAccuracy", "MatWrite", "Silence",
    "HDF5Output",
)
class TrainingOnly(Converter):
    """Losses, accuracies and writers: not part of the inference graph (their tops are never consumed)."""

    role = "prune"
    bottoms = (0, None)
    tops = (0, None)

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        return [()] * len(self.param.top)
