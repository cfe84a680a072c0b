"""The emitter registry: which Caffe layers a traced node becomes, keyed by module class, function or method name.

An emitter is ``fn(ctx, node) -> top``: it appends the node's layer(s) to ``ctx.net`` and returns the blob that
holds the node's value (for an identity, the input's own blob). Module classes match exactly, so a subclass that
overrides ``forward`` is never mistaken for its parent.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import fx

from protoseg.to_caffe.context import Context

Emitter = Callable[[Context, fx.Node], str]

MODULES: dict[type, Emitter] = {}
FUNCTIONS: dict[Any, Emitter] = {}
METHODS: dict[str, Emitter] = {}


def on(*keys: Any) -> Callable[[Emitter], Emitter]:
    """Register an emitter for module classes (types), functions (callables) and ``Tensor`` methods (str)."""

    def wrap(fn: Emitter) -> Emitter:
        for key in dict.fromkeys(keys):  # aliases (F.relu_ is torch.relu_) once
            table = METHODS if isinstance(key, str) else MODULES if isinstance(key, type) else FUNCTIONS
            if key in table:
                raise RuntimeError(f"{key!r} has two emitters")
            table[key] = fn
        return fn

    return wrap


def lookup(ctx: Context, node: fx.Node) -> Emitter | None:
    from protoseg.to_caffe import crop, layers, resize  # noqa: F401  (importing them registers their emitters)

    if node.op == "call_module":
        return MODULES.get(type(ctx.module(node)))
    if node.op == "call_function":
        try:
            return FUNCTIONS.get(node.target)
        except TypeError:  # an unhashable target
            return None
    if node.op == "call_method":
        return METHODS.get(node.target)
    return None


def supported_modules() -> list[str]:
    from protoseg.to_caffe import crop, layers, resize  # noqa: F401

    return sorted(f"nn.{cls.__name__}" for cls in MODULES)


def array(t: torch.Tensor) -> np.ndarray:
    """A parameter or buffer as the float32 array Caffe stores."""
    return t.detach().to("cpu", torch.float32).numpy()


def pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def hw_fields(name: str, hw: tuple[int, int], default: int | None, *, repeated: bool) -> dict:
    """Caffe's h/w fields for ``name`` (``kernel_size``, ``pad``, ``stride``): one value when both axes agree
    (left out when it is the default), else ``NAME_h`` and ``NAME_w``."""
    h, w = hw
    if h == w:
        return {} if h == default else {name: [h] if repeated else h}
    base = name.removesuffix("_size")
    return {f"{base}_h": h, f"{base}_w": w}
