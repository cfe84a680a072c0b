"""Data layers become graph inputs named by their tops; nothing they name (files, databases) is opened.

Shapes come from the layer itself where Caffe's would (``Input``, ``input_shape``, ``MemoryData``,
``DummyData``, a ``crop_size``), else from ``--input NAME=N,C,H,W``, else a stated default. ``Python`` data
layers live in :mod:`protoseg.layers.python`: their module is never imported.
"""

from __future__ import annotations

from protoseg.layers.base import Bottoms, Converter, Shape, register

#: Spatial size assumed for an image input whose layer gives none (FCN's PASCAL VOC inputs are up to 500 x 500).
DEFAULT_SIZE = 500


class DataConverter(Converter):
    bottoms = (0, 0)
    tops = (1, None)

    def setup(self) -> None:
        self.role = "input"

    def declared(self) -> list[Shape | None]:
        """Per top, the shape this layer declares, or None when only the data would tell."""
        return [None] * len(self.param.top)

    def infer(self, shapes: Bottoms) -> list[Shape]:
        """The declared shapes, a stated default where the layer declares none (the IR warns about those)."""
        return [self.default_shape(top) if shape is None else tuple(shape)
                for top, shape in zip(self.param.top, self.declared())]

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

    def default_shape(self, top: str) -> Shape:
        """What protoseg assumes for a top whose shape only the data would tell."""
        size = self._crop() or DEFAULT_SIZE
        if top == "data_dim":
            return (1, 1, 1, 2)
        channels = 1 if "label" in top else 3
        return (1, channels, size, size)


@register("Input")
class InputConverter(DataConverter):
    """Input: a graph input of the declared shape."""

    def declared(self) -> list[Shape | None]:
        return self._per_top([tuple(s.dim) for s in self.param.input_param.shape])


@register("Data", "ImageData", "WindowData", "HDF5Data")
@register("ImageSegData", "MatRead", fork=("deeplab-v1", "deeplab-v2"))
@register("DenseImageData", fork="segnet")
@register("ImageSegData", "WindowSegData", "WindowInstSegData", "WindowClsData", "WindowSegBinary", fork="deconvnet")
@register("ImageLabelmapData", fork="hed")
class FileDataConverter(DataConverter):
    """File-reading data layers (images, LMDB, HDF5, windows): the caller feeds their tops at inference."""

    def declared(self) -> list[Shape | None]:
        crop = self._crop()
        if crop is None:
            return [None] * len(self.param.top)
        return [self.default_shape(top) for top in self.param.top]


@register("MemoryData")
class MemoryDataConverter(DataConverter):
    """MemoryData: a graph input of the declared batch, channels, height and width."""

    def declared(self) -> list[Shape | None]:
        p = self.param.memory_data_param
        return [(p.batch_size, p.channels, p.height, p.width), (p.batch_size, 1, 1, 1)][: len(self.param.top)]


@register("DummyData")
class DummyDataConverter(DataConverter):
    """DummyData: a graph input of the declared shape."""

    def declared(self) -> list[Shape | None]:
        p = self.param.dummy_data_param
        if p.shape:
            shapes = [tuple(s.dim) for s in p.shape]
        else:
            shapes = [tuple(dims) for dims in zip(p.num, p.channels, p.height, p.width)]
        return self._per_top(shapes)
