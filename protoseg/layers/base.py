"""The converter contract: one class per Caffe layer family, registered by Caffe type name.

A converter is built once per layer from its ``LayerParameter``; it validates the parameters, then answers three
questions, all in one place so that a layer's knowledge never spreads over several files:

* ``infer(shapes)``: the top shapes Caffe would give for these bottom shapes (used for checks, ``info`` and
  weight validation; the torch module itself always works from live tensor sizes);
* ``blob_shapes(shapes)``: the parameter blobs Caffe would allocate, in Caffe's order;
* ``module(blobs)``: the ``torch.nn.Module`` that computes the tops from the bottoms.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Sequence, TypeVar

from protoseg.errors import LayerParamError, ProtosegError, ShapeError, layer_error

Shape = tuple[int, ...]

#: What a layer is for: ``compute`` becomes a graph node, ``input`` a graph input, ``prune`` is dropped.
ROLES = ("compute", "input", "prune")

_REGISTRY: dict[str, type[Converter]] = {}

C = TypeVar("C", bound="type[Converter]")


def register(*types: str) -> Callable[[C], C]:
    """Class decorator: make ``cls`` the converter of the Caffe layer ``types``."""

    def wrap(cls: C) -> C:
        for name in types:
            if name in _REGISTRY:
                raise RuntimeError(f"Caffe type {name!r} registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
            _REGISTRY[name] = cls
        cls.types = cls.types + tuple(types)
        return cls

    return wrap


def converter_for(type_name: str) -> type[Converter] | None:
    """The converter class registered for ``type_name``, or None."""
    from protoseg import layers  # noqa: F401  (importing the package registers every family)

    return _REGISTRY.get(type_name)


def registered_types() -> list[str]:
    from protoseg import layers  # noqa: F401

    return sorted(_REGISTRY)


class Converter:
    """Base of every layer family. Subclasses override :meth:`setup`, :meth:`infer` and :meth:`module`."""

    types: ClassVar[tuple[str, ...]] = ()
    role: ClassVar[str] = "compute"
    #: Allowed number of bottoms and tops, ``(min, max)``; ``None`` for max means any number.
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    tops: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, param) -> None:
        self.param = param
        self.name: str = param.name
        self.type: str = param.type
        self._check_count("bottom", len(param.bottom), self.bottoms)
        self._check_count("top", len(param.top), self.tops)
        self.setup()

    # -- to override -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Read and validate this layer's ``*_param``; raise :meth:`error` on values Caffe would refuse."""

    def infer(self, shapes: list[Shape]) -> list[Shape]:
        """Top shapes for the given bottom shapes. Default: every top has the first bottom's shape."""
        return [shapes[0]] * len(self.param.top)

    def blob_shapes(self, shapes: list[Shape]) -> list[Shape]:
        """Shapes of the parameter blobs Caffe allocates for this layer, in Caffe's order."""
        return []

    def module(self, blobs: list):
        """The torch module computing the tops; ``blobs`` are torch tensors shaped as :meth:`blob_shapes`."""
        raise NotImplementedError(f"{type(self).__name__} has no torch module")

    #: Point-wise layers keep spatial coordinates; :mod:`protoseg.coordmap` follows them through.
    preserves_coords: ClassVar[bool] = False

    def coord_map(self):
        """Per spatial axis ``(a, b)`` with ``x_bottom = a * x_top + b`` (as Fractions), or None if unknown."""
        from protoseg.coordmap import IDENTITY

        return IDENTITY if self.preserves_coords else None

    # -- helpers -----------------------------------------------------------------------------------------------
    def error(self, message: str, cls: type[ProtosegError] = LayerParamError) -> ProtosegError:
        return layer_error(cls, self.name, self.type, message)

    def shape_error(self, message: str) -> ProtosegError:
        return self.error(message, ShapeError)

    def _check_count(self, what: str, n: int, allowed: tuple[int, int | None]) -> None:
        lo, hi = allowed
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise self.error(f"takes {want} {what}(s) but the prototxt gives {n}; fix its {what}: lines")

    def hw(self, param, name: str, default: int | None = None, *, repeated: bool = True) -> tuple[int, int]:
        """Caffe's h/w parameter pairs in one place: ``NAME`` (scalar or repeated) or ``NAME_h`` + ``NAME_w``.

        Mirrors Caffe's BaseConvolutionLayer / PoolingLayer setup: a repeated field holds one value for both
        axes or one per axis; the ``_h``/``_w`` form must give both and excludes the plain form.
        """
        base = name.removesuffix("_size")  # kernel_size pairs with kernel_h / kernel_w
        fields = {f.name for f in param.DESCRIPTOR.fields}
        has_h = f"{base}_h" in fields and param.HasField(f"{base}_h")
        has_w = f"{base}_w" in fields and param.HasField(f"{base}_w")
        if has_h or has_w:
            if not (has_h and has_w):
                raise self.error(f"give both {base}_h and {base}_w, or {name} alone")
            return getattr(param, f"{base}_h"), getattr(param, f"{base}_w")
        if repeated:
            values: Sequence[int] = list(getattr(param, name))
        else:
            values = [getattr(param, name)] if param.HasField(name) else []
        if not values:
            if default is None:
                raise self.error(f"{name} is required (or {base}_h and {base}_w)")
            return default, default
        if len(values) == 1:
            return values[0], values[0]
        if len(values) == 2:
            return values[0], values[1]
        raise self.error(f"{name} takes 1 or 2 values for a 2-D layer, got {len(values)}")

    def axis(self, axis: int, ndim: int, what: str = "axis") -> int:
        """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
        if not -ndim <= axis < ndim:
            raise self.shape_error(f"{what} {axis} is out of range for a {ndim}-D blob")
        return axis % ndim


def product(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
