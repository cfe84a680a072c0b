"""One exception family for everything a user can cause.

The CLI catches :class:`ProtosegError` only and prints its message on one line, so every message must say
where the problem is (file position, layer name) and what to do about it.
"""

from __future__ import annotations


class ProtosegError(Exception):
    """Base of every error a user can cause with a bad file, flag or input."""


class ParseError(ProtosegError):
    """A prototxt could not be read: syntax, unknown field, undefined ``${NAME}`` template variable."""


class FormatError(ProtosegError):
    """A weights or reference file is not what it claims to be (truncated, empty, wrong kind, V1/V2 mix)."""


class UnsupportedLayerError(ProtosegError):
    """The net uses a Caffe layer type protoseg has no converter for."""


class LayerParamError(ProtosegError):
    """A layer's parameters are invalid or outside what Caffe itself accepts."""


class ShapeError(ProtosegError):
    """Shape inference failed: the layer's bottoms do not fit its parameters."""


class WeightMismatchError(ProtosegError):
    """The caffemodel's blobs do not match what the prototxt implies (count, shape, missing layer)."""


class ProtosegWarning(UserWarning):
    """Raised through :mod:`warnings` where protoseg approximates or infers something Caffe left implicit."""


def layer_error(cls: type[ProtosegError], name: str, type_: str, message: str) -> ProtosegError:
    """Build ``cls`` with the conventional ``layer 'NAME' (TYPE): message`` prefix."""
    return cls(f"layer {name!r} ({type_}): {message}")
