"""PyTorch -> Caffe: write a module as a prototxt and a caffemodel that compute what it computes.

Two sources:

* a protoseg graph (``protoseg.load(...)``, possibly fine-tuned): the net it was built from, with the values its
  parameters hold now, each blob in the shape the prototxt implies (:mod:`protoseg.to_caffe.source`);
* any fx-traceable module made of layers Caffe has (:mod:`protoseg.to_caffe.layers`,
  :mod:`protoseg.to_caffe.resize`): ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (any dilation, groups, padding),
  ``nn.MaxPool2d`` / ``nn.AvgPool2d`` where Caffe's rounding gives torch's sizes, ``nn.BatchNorm2d`` (BatchNorm +
  Scale; PSPNet's BN in that dialect), ReLU / LeakyReLU / PReLU / Sigmoid / Tanh, ``torch.cat``, ``+``, ``-``,
  ``*`` (Eltwise; Power with a number), global average / max pooling, bilinear ``align_corners=True`` resizes
  (Interp; a bilinear Deconvolution in BVLC Caffe), slices to another tensor's size (Crop, BVLC only:
  :mod:`protoseg.to_caffe.crop`), ``nn.Dropout``, softmax, ``argmax(keepdim=True)``.

Nothing is approximated: a node Caffe cannot compute as torch does raises
:class:`~protoseg.errors.UnsupportedLayerError` naming the node and the reason. Where Caffe matches torch only at
some input sizes (a floor-mode pooling, a resize by a factor), a :class:`~protoseg.errors.ProtosegWarning` says
at which; the example input's size is always one of them.

Dialects: ``bvlc`` (BVLC Caffe 1.0: no Interp), ``deeplab-v2`` (adds Interp; no Input or Crop layer, so inputs
are declared at net level) and ``pspnet`` (as DeepLab v2, plus its BN layer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoseg.errors import FormatError, ProtosegError

if TYPE_CHECKING:  # importing this package stays light (the CLI reads DIALECTS); torch comes with the work
    import numpy as np
    from torch import nn

__all__ = ["DIALECTS", "to_caffe", "write_caffe", "reference"]

#: The Caffes a traced module can be written for (each a fork name of :mod:`protoseg.forks`).
DIALECTS = ("bvlc", "deeplab-v2", "pspnet")

PathLike = str | os.PathLike


def _dialect(dialect: str | None) -> str | None:
    if dialect is not None and dialect not in DIALECTS:
        raise ProtosegError(f"unknown dialect {dialect!r}; choose one of {', '.join(DIALECTS)}")
    return dialect


def to_caffe(module: nn.Module, example_input: Any, *, dialect: str | None = None, name: str | None = None):
    """``(netparam, blobs)``: the V2 ``caffe_pb2.NetParameter`` computing ``module`` and the parameter blobs by
    layer name (float32 arrays in Caffe's layout).

    A traced module gets an input ``data`` of ``example_input``'s shape (an Input layer where the dialect's Caffe
    has one, else net-level ``input``), in ``dialect`` (None: BVLC). A
    protoseg graph is written as the net it came from, in its own fork (``example_input`` is not needed, and a
    ``dialect`` other than None must read that net alike). ``name`` names the net.
    """
    from protoseg.to_caffe import source

    dialect = _dialect(dialect)
    if source.is_protoseg_graph(module):
        return source.from_graph(module, dialect, name)
    conversion = _convert(module, example_input, dialect or "bvlc", name)
    return conversion.builder.netparam, conversion.builder.blobs


def _convert(module: nn.Module, example_input: Any, dialect: str, name: str | None):
    from protoseg.to_caffe.module import as_inputs, convert

    return convert(module, as_inputs(example_input), dialect, name)


def write_caffe(module: nn.Module, example_input: Any, prototxt_path: PathLike, caffemodel_path: PathLike, *,
                dialect: str | None = None, name: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write :func:`to_caffe`'s net as a V2 prototxt and a binary caffemodel; returns the paths written.

    Each file is written beside its target and renamed into place; existing files are refused unless
    ``overwrite``.
    """
    from protoseg.io.atomic import write_file
    from protoseg.io.prototxt import format_net
    from protoseg.io.weights import write_weights

    paths = [Path(prototxt_path), Path(caffemodel_path)]
    if paths[0] == paths[1]:
        raise ProtosegError(f"{paths[0]}: the prototxt and the caffemodel need two paths")
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise FormatError(f"{existing[0]} exists; pass overwrite=True (--force) to replace it")
    netparam, blobs = to_caffe(module, example_input, dialect=dialect, name=name)
    text = format_net(netparam)
    types = {lp.name: lp.type for lp in netparam.layer}
    write_file(paths[0], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    # Every layer is written, those without blobs too, so a net without parameters still has a caffemodel.
    write_weights(paths[1], {lp.name: blobs.get(lp.name, []) for lp in netparam.layer}, types=types)
    return paths


def reference(module: nn.Module, example_input: Any, *, dialect: str | None = None,
              every_blob: bool = False) -> dict[str, np.ndarray]:
    """The module's own values on ``example_input`` by the blob names :func:`to_caffe` gives them: the input(s)
    and the output(s), or with ``every_blob`` every blob that holds a node's value. Saved with ``numpy.savez``,
    it is a reference for ``protoseg verify NET.prototxt NET.caffemodel -r REF.npz`` (the module's outputs
    checked against the Caffe net's, blob by blob)."""
    from protoseg.to_caffe.module import as_inputs
    from protoseg.to_caffe.module import reference as values
    from protoseg.to_caffe.source import is_protoseg_graph

    if is_protoseg_graph(module):
        raise ProtosegError("a protoseg graph is written back as its own Caffe net; its reference is Caffe's blobs "
                            "(protoseg verify), not its own")
    inputs = as_inputs(example_input)
    conversion = _convert(module, inputs, _dialect(dialect) or "bvlc", None)
    return values(conversion, inputs, every_blob)
