"""The converter contract: one class per Caffe layer family, registered by fork and Caffe type name.

A converter is built once per layer from its ``LayerParameter`` and validates the parameters in :meth:`setup`.
After that it holds no state: every question is answered from the layer's bottom shapes (a :class:`Bottoms`),
so shape inference, weight checks and the torch module always agree:

* ``infer(bottoms)``: the top shapes Caffe gives these bottoms (for checks, ``info`` and weight validation);
* ``blob_shapes(bottoms)``: the parameter blobs Caffe allocates, in Caffe's order;
* ``accepts(index, want, have)``: whether a stored blob of another shape holds the same values (legacy 4-D
  shapes; FCN's InnerProduct <-> Convolution weights);
* ``module(bottoms, blobs)``: the ``torch.nn.Module`` computing the tops; it works from live tensor sizes
  through the same size rule as ``infer``, so a converted net runs at any input size;
* ``coord_map(bottoms)``: how top coordinates map to bottom coordinates (Crop offset inference).

The same type name can mean different layers in different Caffes (``BN`` is PSPNet's 4-blob layer and
SegNet's 2-blob one), so the registry key is ``(fork, type)``; a fork inherits its ancestors' layers
(:mod:`protoseg.forks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar, Iterable, Sequence, TypeVar

from protoseg import forks
from protoseg.errors import LayerParamError, ProtosegError, ShapeError, layer_error, quote

if TYPE_CHECKING:
    from protoseg.coordmap import Lineage, Maps

Shape = tuple[int, ...]

#: What a layer is for: ``compute`` becomes a graph node, ``input`` a graph input, ``prune`` is dropped.
ROLES = ("compute", "input", "prune")

#: Caffe's ``Blob::Reshape`` refuses blobs with more than INT_MAX elements or more than 32 axes.
MAX_COUNT = 2**31 - 1
MAX_AXES = 32
#: Largest kernel, stride, pad or dilation protoseg takes: far beyond any input a Caffe blob can hold along an
#: axis that a kernel could meet, and small enough for every torch kernel's integer arithmetic.
MAX_SPATIAL = 2**24

_REGISTRY: dict[tuple[str, str], type[Converter]] = {}

C = TypeVar("C", bound="type[Converter]")


def register(*types: str, fork: str | Iterable[str] = forks.BVLC) -> Callable[[C], C]:
    """Class decorator: make ``cls`` the converter of the Caffe layer ``types`` in ``fork`` (one or several)."""
    fork_names = (fork,) if isinstance(fork, str) else tuple(fork)
    for name in fork_names:
        forks.get(name)  # a typo in a fork name fails at import

    def wrap(cls: C) -> C:
        for f in fork_names:
            for name in types:
                if (f, name) in _REGISTRY:
                    raise RuntimeError(f"Caffe type {name!r} registered twice in fork {f!r}")
                _REGISTRY[(f, name)] = cls
        cls.types = cls.types + tuple(t for t in types if t not in cls.types)
        cls.registered_in = cls.registered_in + tuple(f for f in fork_names if f not in cls.registered_in)
        return cls

    return wrap


def _load() -> None:
    from protoseg import layers  # noqa: F401  (importing the package registers every family)


def converter_for(type_name: str, fork: str = forks.BVLC) -> type[Converter] | None:
    """The converter of ``type_name`` in ``fork`` or the nearest ancestor that defines it, or None."""
    _load()
    for f in forks.lineage(fork):
        cls = _REGISTRY.get((f, type_name))
        if cls is not None:
            return cls
    return None


def forks_defining(type_name: str) -> list[str]:
    """Every fork that registers ``type_name`` itself (not through an ancestor), in registry order."""
    _load()
    return [f for f, t in _REGISTRY if t == type_name]


def registered() -> dict[tuple[str, str], type[Converter]]:
    """A copy of the registry: ``(fork, type) -> converter class``."""
    _load()
    return dict(_REGISTRY)


def registered_types(fork: str | None = None) -> list[str]:
    """Type names available in ``fork`` (with its ancestors), or in any fork when ``fork`` is None."""
    _load()
    allowed = None if fork is None else set(forks.lineage(fork))
    return sorted({t for f, t in _REGISTRY if allowed is None or f in allowed})


class Bottoms(tuple):
    """A layer's bottom shapes, with a way to ask where each bottom comes from (for Crop's offsets).

    ``lineage(i)`` is bottom ``i``'s root blob and the affine coordinate map from the bottom to it (see
    :mod:`protoseg.coordmap`); None where nothing is known.
    """

    def __new__(cls, shapes: Iterable[Shape], lineage: Callable[[int], Lineage] | None = None):
        self = super().__new__(cls, (tuple(s) for s in shapes))
        self._lineage = lineage
        return self

    def lineage(self, index: int) -> Lineage | None:
        return self._lineage(index) if self._lineage is not None else None


class Converter:
    """Base of every layer family. Subclasses override :meth:`setup`, :meth:`infer` and :meth:`module`."""

    types: ClassVar[tuple[str, ...]] = ()
    registered_in: ClassVar[tuple[str, ...]] = ()  # the forks this class is registered in
    #: Allowed number of bottoms and tops, ``(min, max)``; ``None`` for max means any number.
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    #: Point-wise layers keep spatial coordinates; :mod:`protoseg.coordmap` follows them through.
    preserves_coords: ClassVar[bool] = False
    #: How many blobs this fork's caffemodels store for the layer, where forks differ (fork detection).
    stored_blobs: ClassVar[tuple[int, ...]] = ()

    def __init__(self, param, *, where: str = "", fork: str = forks.BVLC) -> None:
        self.param = param
        self.name: str = param.name
        self.type: str = param.type
        self.where = where  # "file:line" of the layer in its prototxt, for messages
        self.fork = fork
        #: ``compute``, ``input`` or ``prune``; a converter may decide per layer in :meth:`setup`.
        self.role: str = "compute"
        self._check_count("bottom", len(param.bottom), self.bottoms)
        self._check_count("top", len(param.top), self.tops)
        self.setup()

    # -- to override -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Read and validate this layer's ``*_param``; raise :meth:`error` on values Caffe would refuse."""

    def infer(self, shapes: Bottoms) -> list[Shape]:
        """Top shapes for the given bottom shapes. Default: every top has the first bottom's shape."""
        return [shapes[0]] * len(self.param.top)

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        """Shapes of the parameter blobs Caffe allocates for this layer, in Caffe's order."""
        return []

    def arrange(self, stored: list) -> list:
        """The stored blobs in this converter's order: a fork that saved them in another order (or an older
        layout) is put right here, before their shapes are checked. Default: as stored."""
        return stored

    def accepts(self, index: int, want: Shape, have: Shape) -> bool:
        """Whether a stored blob shaped ``have`` holds blob ``index`` shaped ``want`` (values in the same order).

        Caffe's ``Blob::ShapeEquals``: the same shape, or a legacy 4-D (num, channels, height, width) blob
        that equals ``want`` padded with leading 1s.
        """
        return have == want or legacy_equal(want, have)

    def module(self, shapes: Bottoms, blobs: list):
        """The torch module computing the tops; ``blobs`` are torch tensors shaped as :meth:`blob_shapes`."""
        raise NotImplementedError(f"{type(self).__name__} has no torch module")

    def fixed_size(self) -> str | None:
        """If this layer fixes a spatial size whatever its input (an explicit output size), what it is: a net
        with such a layer takes only the input size it was built for."""
        return None

    def index_of(self, top: int) -> int | None:
        """If top ``top`` holds flat positions in the planes of a bottom (an argmax mask), that bottom's index:
        ``verify`` then compares the values the positions name, since equal maxima make either position right."""
        return None

    @property
    def multi_output(self) -> bool:
        """Whether the module returns a tuple (one tensor per top) rather than one tensor."""
        return len(self.param.top) > 1

    def coord_map(self, shapes: Bottoms) -> Maps | None:
        """Per spatial axis ``(a, b)`` with ``x_bottom = a * x_top + b`` (as Fractions), or None if unknown."""
        from protoseg.coordmap import IDENTITY

        return IDENTITY if self.preserves_coords else None

    # -- helpers -----------------------------------------------------------------------------------------------
    def error(self, message: str, cls: type[ProtosegError] = LayerParamError) -> ProtosegError:
        return layer_error(cls, self.name, self.type, message, self.where)

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
        fields = param.DESCRIPTOR.fields_by_name
        has_h = f"{base}_h" in fields and param.HasField(f"{base}_h")
        has_w = f"{base}_w" in fields and param.HasField(f"{base}_w")
        if has_h or has_w:
            if not (has_h and has_w):
                raise self.error(f"give both {base}_h and {base}_w, or {name} alone")
            values = [getattr(param, f"{base}_h"), getattr(param, f"{base}_w")]
        elif repeated:
            values = list(getattr(param, name))
        else:
            values = [getattr(param, name)] if param.HasField(name) else []
        if not values:
            if default is None:
                raise self.error(f"{name} is required (or {base}_h and {base}_w)")
            return default, default
        if len(values) not in (1, 2):
            raise self.error(f"{name} takes 1 or 2 values for a 2-D layer, got {len(values)}")
        if max(values) > MAX_SPATIAL:
            raise self.error(f"{name} {max(values):,} is beyond any input (protoseg takes up to {MAX_SPATIAL:,})")
        return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])

    def axis(self, axis: int, ndim: int, what: str = "axis") -> int:
        """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
        if not -ndim <= axis < ndim:
            raise self.shape_error(f"{what} {axis} is out of range for a {ndim}-D blob")
        return axis % ndim

    def check_shape(self, shape: Shape, what: str) -> Shape:
        """Caffe's blob limits: at most 32 axes, no negative size, at most INT_MAX elements in all."""
        if len(shape) > MAX_AXES:
            raise self.shape_error(f"{what} has {len(shape)} axes; Caffe blobs have at most {MAX_AXES}")
        if any(d <= 0 for d in shape):
            raise self.shape_error(f"{what} would have {'a negative' if min(shape) < 0 else 'an empty'} axis: "
                                   f"{quote(shape)}")
        if product(shape) > MAX_COUNT:
            raise self.shape_error(f"{what} {quote(shape)} would hold {product(shape):,} values, more than the "
                                   f"{MAX_COUNT:,} a Caffe blob can; use a smaller input")
        return shape


def legacy_equal(want: Shape, have: Shape) -> bool:
    """A V1 blob's (num, channels, height, width) holding ``want`` padded with leading 1s (0-d: 1x1x1x1)."""
    return len(have) == 4 and len(want) <= 4 and (1,) * (4 - len(want)) + tuple(want) == tuple(have)


def same_rows(want: Shape, have: Shape) -> bool:
    """FCN's fc6/fc7: an InnerProduct weight (N, K) holds a Convolution's (N, C, kh, kw) in the same order, and
    back (also as the legacy (1, 1, N, K)): same values, same number of outputs."""
    squeezed = tuple(have)
    while len(squeezed) > 1 and squeezed[0] == 1:
        squeezed = squeezed[1:]
    return len(want) > 1 and product(want) == product(have) and squeezed[0] == want[0]


def layers_markdown() -> str:
    """The supported-layers table of ``docs/layers.md``, made from the registry (a test keeps the file current)."""
    from protoseg.forks import FORKS

    rows: dict[tuple[str, type[Converter]], list[str]] = {}
    for (fork, type_name), cls in registered().items():
        rows.setdefault((type_name, cls), []).append(fork)
    lines = ["# Supported layers", "",
             "Made from protoseg's converter registry by `python scripts/gen_layers_doc.py`; a test keeps it current.",
             "A fork inherits the layers of the Caffes it descends from (the fork column names where a layer is",
             "defined); see `protoseg/forks.py`.", "",
             "| Caffe type | fork | converter | what it computes |", "|---|---|---|---|"]
    for (type_name, cls), where in sorted(rows.items(), key=lambda kv: (kv[0][0].lower(), kv[1])):
        forks_text = ", ".join(FORKS[f].title for f in sorted(where, key=list(FORKS).index))
        summary = (cls.__doc__ or "").strip().split("\n")[0]
        module = cls.__module__.removeprefix("protoseg.layers.")
        lines.append(f"| `{type_name}` | {forks_text} | `{module}.{cls.__name__}` | {summary} |")
    return "\n".join(lines) + "\n"


def product(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
