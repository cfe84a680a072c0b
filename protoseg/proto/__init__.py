"""protoseg's Caffe schema (``caffe_pb2``, generated from ``proto/caffe.proto``: every fork's fields), and
:func:`assign`, which fills its messages from plain Python values."""

from __future__ import annotations

from typing import Any

from protoseg.errors import ProtosegError


def assign(message: Any, name: str, value: Any) -> None:
    """Set field ``name`` of ``message`` from a Python value, as pycaffe's ``net_spec`` does: dicts fill
    sub-messages, lists (or a single value, for a repeated field) extend repeated fields, a list of dicts adds
    sub-messages; an enum field takes its value's name or number."""
    try:
        field = getattr(message, name)
    except AttributeError:
        raise ProtosegError(f"{message.DESCRIPTOR.name} has no field {name!r} in protoseg's Caffe schema (it holds "
                            "the fields of the forks protoseg reads); leave it out of the layer") from None
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, list):
        value = [value]
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            for item in value:
                sub = field.add()
                for k, v in item.items():
                    assign(sub, k, v)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            assign(field, k, v)
    else:
        setattr(message, name, value)
