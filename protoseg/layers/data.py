"""Data layers become graph inputs named by their tops; nothing they name (files, Python modules) is opened.

Shapes come from the layer itself where Caffe's would (``Input``, ``input_shape``, ``MemoryData``,
``DummyData``, a ``crop_size``), else from ``--input NAME=N,C,H,W``, else a stated default. ``Python`` layers are
inputs only: their module is never imported.
"""

from __future__ import annotations

import warnings

from protoseg.errors import ProtosegWarning
from protoseg.layers.base import Converter, Shape, register

#: Spatial size assumed for an image input whose layer gives none (FCN's PASCAL VOC inputs are up to 500 x 500).
DEFAULT_SIZE = 500


class DataConverter(Converter):
    role = "input"
    bottoms = (0, 0)
    tops = (1, None)

    def declared(self) -> list[Shape | None]:
        """Per top, the shape this layer declares, or None when only the data would tell."""
        return [None] * len(self.param.top)

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        out = []
        for top, shape in zip(self.param.top, self.declared()):
            if shape is None:
                shape = self._default(top)
                warnings.warn(
                    f"layer {self.name!r} ({self.type}) does not say the shape of {top!r}: assuming {shape}; "
                    f"pass --input {top}=N,C,H,W to set it",
                    ProtosegWarning,
                    stacklevel=2,
                )
            out.append(tuple(shape))
        return out

    def _per_top(self, shapes: list[Shape]) -> list[Shape]:
        """Caffe's rule for Input and DummyData: one shape for every top, or one per top."""
        n = len(self.param.top)
        if len(shapes) == 1:
            return shapes * n
        if len(shapes) != n:
            raise self.error(f"gives {len(shapes)} shapes for {n} tops; give one, or one per top")
        return shapes

    def _crop(self) -> int | None:
        t = self.param.transform_param
        return t.crop_size if t.HasField("crop_size") and t.crop_size > 0 else None

    def _batch(self) -> int:
        return 1

    def _default(self, top: str) -> Shape:
        size = self._crop() or DEFAULT_SIZE
        if top == "data_dim":
            return (1, 1, 1, 2)
        channels = 1 if "label" in top else 3
        return (1, channels, size, size)


@register("Input")
class InputConverter(DataConverter):
    def declared(self) -> list[Shape | None]:
        return self._per_top([tuple(s.dim) for s in self.param.input_param.shape])


@register("Data", "ImageData", "ImageSegData", "WindowData", "HDF5Data", "Python", "MatRead")
class FileDataConverter(DataConverter):
    """Data read from files (or by Python code) at training time; at inference, the caller feeds the tops."""

    def declared(self) -> list[Shape | None]:
        crop = self._crop()
        if crop is None:
            return [None] * len(self.param.top)
        return [self._default(top) for top in self.param.top]


@register("MemoryData")
class MemoryDataConverter(DataConverter):
    def declared(self) -> list[Shape | None]:
        p = self.param.memory_data_param
        return [(p.batch_size, p.channels, p.height, p.width), (p.batch_size, 1, 1, 1)][: len(self.param.top)]


@register("DummyData")
class DummyDataConverter(DataConverter):
    def declared(self) -> list[Shape | None]:
        p = self.param.dummy_data_param
        if p.shape:
            shapes = [tuple(s.dim) for s in p.shape]
        else:
            shapes = [tuple(dims) for dims in zip(p.num, p.channels, p.height, p.width)]
        return self._per_top(shapes)
