"""protoseg: run the published Caffe segmentation models (FCN, DeepLab) in PyTorch, verified against Caffe."""

from __future__ import annotations

from protoseg.errors import (
    FormatError,
    LayerParamError,
    ParseError,
    ProtosegError,
    ProtosegWarning,
    ShapeError,
    UnsupportedLayerError,
    WeightMismatchError,
)

__version__ = "0.1.0"



def __getattr__(name: str):
    # ``protoseg.load`` imports torch; keep ``import protoseg`` (and the parsing modules) light.
    if name == "load":
        from protoseg.loader import load

        return load
    raise AttributeError(f"module 'protoseg' has no attribute {name!r}")


__all__ = [
    "load",
    "FormatError",
    "LayerParamError",
    "ParseError",
    "ProtosegError",
    "ProtosegWarning",
    "ShapeError",
    "UnsupportedLayerError",
    "WeightMismatchError",
    "__version__",
]
