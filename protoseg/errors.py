"""One exception family for everything a user can cause.

The CLI catches :class:`ProtosegError` only and prints its message on one line, so every message must say
where the problem is (file, line, layer) and what to do about it. Names from files can be anything, so they
enter messages through :func:`quote` (bounded, escaped) and a whole message is bounded too.
"""

from __future__ import annotations

#: Longest message kept whole; a longer one keeps its head and tail.
MAX_MESSAGE = 2000
#: Longest name quoted whole in a message.
MAX_NAME = 80


class ProtosegError(Exception):
    """Base of every error a user can cause with a bad file, flag or input."""

    def __init__(self, message: str = "", *args: object) -> None:
        message = str(message)
        if len(message) > MAX_MESSAGE:
            half = MAX_MESSAGE // 2
            message = f"{message[:half]} [... {len(message) - 2 * half} characters cut ...] {message[-half:]}"
        super().__init__(message, *args)


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


def quote(name: object, limit: int = MAX_NAME) -> str:
    """``repr`` of a name from a file, cut in the middle when longer than ``limit`` characters."""
    text = repr(name)
    if len(text) <= limit:
        return text
    keep = (limit - 5) // 2
    return f"{text[:keep]}[...]{text[-keep:]}"


def layer_error(cls: type[ProtosegError], name: str, type_: str, message: str, where: str = "") -> ProtosegError:
    """Build ``cls`` with the conventional ``FILE:LINE: layer 'NAME' (TYPE): message`` prefix."""
    prefix = f"{where}: " if where else ""
    return cls(f"{prefix}layer {quote(name)} ({quote(type_, 40)[1:-1]}): {message}")
