"""Caffe's ``Python`` layers: the module a layer names is never imported, whatever the file says.

A Python layer without bottoms is a data layer (FCN's VOC and SBD readers): its tops become graph inputs. One
with bottoms computes something in Python that protoseg cannot see; the few that are known, by module and
class name, to be the identity at test time (ENet's SpatialDropout) become the identity, and any other is an
error that names the module and class.
"""

from __future__ import annotations

from torch import nn

from protoseg.coordmap import IDENTITY
from protoseg.errors import UnsupportedLayerError, quote
from protoseg.layers.activation import Identity
from protoseg.layers.base import Bottoms, Shape, register
from protoseg.layers.data import DataConverter

#: (module, class) of Python layers that compute the identity at inference, and why.
IDENTITY_AT_TEST = {
    ("spatial_dropout", "SpatialDropoutLayer"): "ENet's SpatialDropout drops channels only in training",
}


@register("Python")
class PythonConverter(DataConverter):
    """Python: a data layer becomes an input; known test-time identities pass through; no module is imported."""

    bottoms = (0, None)

    def setup(self) -> None:
        p = self.param.python_param
        if not self.param.bottom:
            self.role = "input"
            return
        if (p.module, p.layer) not in IDENTITY_AT_TEST:
            known = ", ".join(f"{m}.{c}" for m, c in IDENTITY_AT_TEST)
            raise self.error(
                f"runs Python code (module {quote(p.module)}, class {quote(p.layer)}), which protoseg never "
                f"imports; the Python layers it knows the inference result of are: {known}", UnsupportedLayerError)
        if len(self.param.bottom) != 1 or len(self.param.top) != 1:
            raise self.error(f"{p.module}.{p.layer} takes one bottom and one top")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        return super().infer(shapes) if self.role == "input" else [shapes[0]]

    def coord_map(self, shapes: Bottoms):
        return None if self.role == "input" else IDENTITY

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return Identity()
