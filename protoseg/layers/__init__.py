"""Layer converters, one module per Caffe layer family; importing this package registers them all."""

from protoseg.layers import (  # noqa: F401  (registration happens on import)
    activation,
    conv,
    crf,
    crfasrnn,
    crop,
    data,
    deconvnet,
    eltwise,
    interp,
    linear,
    loss,
    norm,
    nvcaffe,
    pool,
    pspnet,
    python,
    segnet,
    xilinx,
)
from protoseg.layers.base import Bottoms, Converter, Shape, converter_for, register, registered_types

__all__ = ["Bottoms", "Converter", "Shape", "converter_for", "register", "registered_types"]
