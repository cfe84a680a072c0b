"""``SoftmaxWithLoss`` for ``protoseg.caffe``: the converted graph prunes loss layers, but scoring scripts
(FCN's ``score.py``) read ``net.blobs['loss']`` after a forward, so the façade computes it from the blobs."""

from __future__ import annotations

import numpy as np
import torch

from protoseg.errors import ProtosegError, quote
from protoseg.proto import caffe_pb2

_LOG_FLT_MIN = float(np.log(np.finfo(np.float32).tiny))


def softmax_loss(lp, scores: np.ndarray, label: np.ndarray) -> float:
    """Caffe's ``SoftmaxWithLoss`` forward: ``-sum(log max(p[label], FLT_MIN)) / normalizer`` over the pixels
    whose label is not ``ignore_label`` (caffe-segnet's ``weight_by_label_freqs`` weighting each by its class's
    ``class_weighting``). NaN when the label blob does not hold one label per pixel (not filled yet)."""
    axis = lp.softmax_param.axis % max(scores.ndim, 1)
    outer, classes = int(np.prod(scores.shape[:axis])), int(scores.shape[axis])
    inner = int(np.prod(scores.shape[axis + 1:]))
    if label.size != outer * inner or not scores.size:
        return float("nan")
    logp = torch.log_softmax(torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
                             .reshape(outer, classes, inner), dim=1)
    labels = torch.from_numpy(np.asarray(label).reshape(outer, inner).astype(np.int64))  # Caffe truncates
    p = lp.loss_param
    valid = labels != p.ignore_label if p.HasField("ignore_label") else torch.ones_like(labels, dtype=torch.bool)
    bad = valid & ((labels < 0) | (labels >= classes))
    if bool(bad.any()):
        raise ProtosegError(f"layer {quote(lp.name)} (SoftmaxWithLoss): label {int(labels[bad][0])} is outside "
                            f"[0, {classes}) and not the ignore_label; is the label blob right?")
    picked = logp.gather(1, labels.clamp(0, classes - 1)[:, None, :])[:, 0, :].clamp(min=_LOG_FLT_MIN).double()
    if p.weight_by_label_freqs:
        if len(p.class_weighting) != classes:
            raise ProtosegError(f"layer {quote(lp.name)} (SoftmaxWithLoss): weight_by_label_freqs needs "
                                f"{classes} class_weighting values, the prototxt gives {len(p.class_weighting)}")
        picked = picked * torch.tensor(list(p.class_weighting), dtype=torch.float64)[labels.clamp(0, classes - 1)]
    loss = -float(picked[valid].sum())
    Mode = caffe_pb2.LossParameter
    mode = (Mode.VALID if p.normalize else Mode.BATCH_SIZE) if p.HasField("normalize") else p.normalization
    normalizer = {Mode.FULL: outer * inner, Mode.VALID: int(valid.sum()), Mode.BATCH_SIZE: outer,
                  Mode.NONE: 1}[mode]
    return loss / max(1.0, float(normalizer))

