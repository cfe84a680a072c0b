"""Names from files are data, never code: the one way a Caffe name becomes a Python identifier.

torch.fx writes node names, placeholder names and submodule names into the ``forward`` source it compiles, and
``protoseg convert --format py`` writes them into a ``.py`` file; a layer named ``x=__import__('os')...`` must not
run. Every identifier protoseg generates from a file therefore goes through :func:`identifier`: plain ASCII
(nothing for Python's NFKC normalisation to fold), never a keyword, a builtin, a name the generated code uses
or an attribute of ``nn.Module``/``GraphModule`` (a layer named ``forward`` or ``training``), bounded in
length, unique in its namespace. The Caffe name itself lives on in ``node.meta``.
"""

from __future__ import annotations

import builtins
import keyword
import re

__all__ = ["identifier", "class_name", "RESERVED", "MAX_LENGTH"]

#: Longest identifier made from a name (before a ``_N`` suffix that keeps it unique).
MAX_LENGTH = 64

_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


def _module_attributes() -> frozenset[str]:
    from torch import fx, nn

    # An instance, not the class: ``training``, ``meta`` and the like are set in __init__.
    return frozenset(dir(fx.GraphModule(nn.Module(), fx.Graph())))


#: Names generated code must not bind: keywords, builtins, the globals fx and the ``.py`` export rely on, and
#: every attribute a ``GraphModule`` has (a submodule named ``eval`` would replace the method).
RESERVED = (
    frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins)) | _module_attributes()
    | {"self", "torch", "math", "operator", "F", "nn", "fx_pytree", "pytree", "inf", "nan", "device", "NoneType",
       "Path", "load_file", "load", "SHARED", "args", "kwargs"}
)


def identifier(name: str, taken: set[str], *, fallback: str = "blob") -> str:
    """A fresh, safe Python identifier that reads like ``name``; it is added to ``taken``.

    ``conv5_3_pool1/conv`` -> ``conv5_3_pool1_conv``; ``1x1`` -> ``_1x1``; ``forward`` -> ``forward_``;
    anything without a usable character -> ``fallback``.
    """
    base = _UNSAFE.sub("_", name).strip("_")[:MAX_LENGTH].rstrip("_") or fallback
    if base[0].isdigit():
        base = "_" + base
    if base in RESERVED:
        base += "_"
    candidate, i = base, 1
    while candidate in taken or candidate in RESERVED:
        i += 1
        candidate = f"{base}_{i}"
    taken.add(candidate)
    return candidate


def class_name(name: str, fallback: str = "CaffeNet") -> str:
    """A CamelCase class name from a net's name (``VGG_ILSVRC_16_layers`` -> ``VGGILSVRC16Layers``)."""
    parts = [p for p in _UNSAFE.sub(" ", name.replace("_", " ")).split() if p]
    joined = "".join(p[:1].upper() + p[1:] for p in parts)[:MAX_LENGTH]
    if not joined or joined[0].isdigit():
        joined = fallback + joined
    return identifier(joined, set(), fallback=fallback)
