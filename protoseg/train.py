"""Training a converted net as its Caffe trains it: the TRAIN phase of each layer, and ``lr_mult``/``decay_mult``.

``protoseg.load(..., trainable=True)`` builds the faithful graph with every parameter Caffe learns (``lr_mult``
not 0) requiring grad, and with each layer that computes differently in Caffe's TRAIN phase following that
phase while the graph is in ``train()`` mode; ``eval()`` is the TEST phase, exactly the inference graph. Without
``trainable``, ``train()`` changes nothing. The layers carry their own TRAIN arithmetic (each is a
:class:`TrainPhase`): BatchNorm's batch statistics and moving averages in BVLC's, DeepLab v2's and NVCaffe's
forms (:mod:`protoseg.layers.norm`, :mod:`protoseg.layers.nvcaffe`), PSPNet's ``BN``
(:mod:`protoseg.layers.pspnet`) and Dropout (:mod:`protoseg.layers.activation`). Running statistics are updated
in place in the parameters that hold the caffemodel's blobs, so writing the blobs back gives Caffe's.
DeepLab's ``DenseCRF`` and CRF-as-RNN's ``MultiStageMeanfield`` are not differentiable as protoseg computes them
(their lattice filter writes into preallocated buffers): in train mode, or with inputs that need a gradient,
they raise a :class:`~protoseg.errors.ProtosegError` that says what to do.

:func:`param_groups` gives torch optimizer groups from each blob's ``param { lr_mult decay_mult }`` as Caffe's
``Net::AppendParam`` resolves them (defaults 1; a shared blob takes the first value given; layers such as
BatchNorm fix their own, see :func:`layer_specs`) and its SGD applies them: ``lr = base_lr * lr_mult`` and L2
``weight_decay * decay_mult`` added to the gradient, which is what ``torch.optim.SGD``'s ``weight_decay`` does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from protoseg.errors import LayerParamError, ProtosegError, layer_error, quote

__all__ = ["Spec", "TrainPhase", "param_groups", "layer_specs", "resolve_specs", "enable"]


class Spec(NamedTuple):
    """One blob's ``ParamSpec`` as Caffe's Net reads it after the layer's setup; None where the field is unset
    (Caffe's default is 1, and a blob shared through ``param { name }`` may take its value from another layer)."""

    lr_mult: float | None = None
    decay_mult: float | None = None


class TrainPhase(nn.Module):
    """A layer whose Caffe computes differently in the TRAIN phase.

    ``caffe_train`` is set on the layers of a graph loaded with ``trainable=True``; then ``train()`` mode is
    Caffe's TRAIN phase. ``refusal`` is the error a layer raises there when its Caffe has no defined TRAIN
    behaviour for its parameters (kept as an attribute: the class source stays self-contained for export).
    """

    caffe_train = False
    refusal = None

    @staticmethod
    def channel_statistics(x: torch.Tensor, mean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean of ``x`` (or the given ``mean``, C values) and the biased variance around it, over
        every axis but 1: what the batch-norm layers of every fork compute in their TRAIN phase."""
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims) if mean is None else mean.reshape(-1)
        var = (x - mean.reshape([1, -1] + [1] * (x.dim() - 2))).pow(2).mean(dim=dims)
        return mean, var

    def in_train_phase(self) -> bool:
        if not (self.training and self.caffe_train):
            return False
        if self.refusal is not None:
            raise type(self.refusal)(*self.refusal.args)
        return True


def layer_specs(layer) -> list[Spec]:
    """The ParamSpecs of ``layer``'s blobs: the prototxt's ``param`` entries, as its converter's Caffe leaves
    them (a converter with ``train_specs`` rewrites them, as BatchNorm's LayerSetUp masks its statistics)."""
    given = layer.param.param
    specs = [Spec(given[i].lr_mult if given[i].HasField("lr_mult") else None,
                  given[i].decay_mult if given[i].HasField("decay_mult") else None) if i < len(given) else Spec()
             for i in range(len(layer.blob_shapes))]
    adjust = getattr(layer.converter, "train_specs", None)
    return list(adjust(specs)) if adjust is not None else specs


def resolve_specs(net) -> dict[tuple[str, int], tuple[float, float]]:
    """``(lr_mult, decay_mult)`` of every parameter blob, keyed by its owner ``(layer, index)``.

    Caffe's ``Net::AppendParam``: the owner's values, else the first sharing layer that gives one; two layers
    giving different values for one shared blob is an error (Caffe refuses the net); unset means 1.
    """
    given: dict[tuple[str, int], list[float | None]] = {}
    for layer in net.layers:
        for owner, spec in zip(layer.owners, layer_specs(layer)):
            have = given.setdefault(owner, [None, None])
            for k, field in enumerate(Spec._fields):
                value = spec[k]
                if value is None:
                    continue
                if have[k] is not None and have[k] != value:
                    raise layer_error(
                        LayerParamError, layer.name, layer.type,
                        f"shares its blob {owner[1]} with layer {quote(owner[0])}, which has {field} {have[k]:g}, "
                        f"but gives {field} {value:g}; Caffe refuses mismatched {field} on a shared param: give "
                        "both the same value", layer.where)
                if have[k] is None:
                    have[k] = value
    return {owner: (1.0 if lr is None else float(lr), 1.0 if decay is None else float(decay))
            for owner, (lr, decay) in given.items()}


class _NoGradient:
    """Forward pre-hook of a layer protoseg cannot differentiate: refuse train mode and inputs needing a
    gradient (a class, not a closure, so the graph still pickles)."""

    def __init__(self, error: ProtosegError):
        self.error = error

    def __call__(self, module: nn.Module, inputs) -> None:
        needs_grad = torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs)
        if module.training or needs_grad:
            raise type(self.error)(*self.error.args)


def _no_gradient_reasons() -> dict[type, str]:
    from protoseg.layers.crf import DenseCRF
    from protoseg.layers.crfasrnn import MeanField

    return {
        DenseCRF: "has no gradient: DeepLab's Caffe gives DenseCRF an empty backward and protoseg's mean field "
                  "is not differentiable (its lattice filter writes into preallocated buffers)",
        MeanField: "is not differentiable in protoseg: CRF-as-RNN's Caffe trains it end to end, but protoseg's "
                   "lattice filter writes into preallocated buffers that autograd cannot follow",
    }


def enable(module: nn.Module, layer, bottom: str) -> None:
    """Make one layer's module follow its Caffe's TRAIN phase in ``train()`` mode (``bottom``: the Caffe name of
    its first bottom, for the advice of a layer that cannot train)."""
    if isinstance(module, TrainPhase):
        module.caffe_train = True
    reason = _no_gradient_reasons().get(type(module))
    if reason is not None:
        advice = (f"; train the net below it (protoseg.load(..., outputs=[{quote(bottom)}], trainable=True)) and "
                  "run this layer in eval() mode under torch.no_grad()")
        module.register_forward_pre_hook(_NoGradient(layer_error(ProtosegError, layer.name, layer.type,
                                                                  reason + advice, layer.where)))


def param_groups(gm: nn.Module, base_lr: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups of a graph loaded with ``trainable=True``, one per ``(lr_mult, decay_mult)``.

    Each group has ``lr = base_lr * lr_mult`` and ``weight_decay = weight_decay * decay_mult`` (Caffe's SGD:
    pass them to ``torch.optim.SGD``; Caffe's momentum update equals torch's at a constant rate), plus
    ``lr_mult``, ``decay_mult`` and ``blobs`` (the owners' ``layer/index`` names, for reading). A blob shared
    through ``param { name }`` is one parameter and appears once; blobs with ``lr_mult: 0`` are frozen
    (``requires_grad`` False) and appear in no group.
    """
    meta = getattr(gm, "meta", {})
    specs, owners = meta.get("param_specs"), meta.get("owners")
    if specs is None or owners is None:
        raise ProtosegError("param_groups needs a graph loaded with trainable=True (protoseg.load(..., "
                            "trainable=True)); this one carries no lr_mult/decay_mult")
    groups: dict[tuple[float, float], dict] = {}
    seen: set[int] = set()
    for name, p in gm.named_parameters(remove_duplicate=False):
        owner = owners.get(name)
        if owner is None or id(p) in seen:
            continue
        seen.add(id(p))
        lr_mult, decay_mult = specs[owner]
        if lr_mult == 0 or not p.requires_grad:
            continue
        group = groups.setdefault((lr_mult, decay_mult), {
            "params": [], "lr": base_lr * lr_mult, "weight_decay": weight_decay * decay_mult,
            "lr_mult": lr_mult, "decay_mult": decay_mult, "blobs": []})
        group["params"].append(p)
        group["blobs"].append(f"{owner[0]}/{owner[1]}")
    return list(groups.values())
