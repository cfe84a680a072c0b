"""Layer converters, one module per Caffe layer family; importing this package registers them all."""

from protoseg.layers import (  # noqa: F401  (registration happens on import)
    activation,
    conv,
    crf,
    crop,
    data,
    eltwise,
    interp,
    linear,
    loss,
    norm,
    pool,
)
from protoseg.layers.base import Converter, Shape, converter_for, register, registered_types

__all__ = ["Converter", "Shape", "converter_for", "register", "registered_types"]
