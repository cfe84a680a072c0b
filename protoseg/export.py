"""``protoseg convert``: write the converted net so that plain PyTorch loads it, without protoseg installed.

* ``pt2``: a ``torch.export`` program with the spatial input sizes dynamic, so one file runs at any image size;
  load it with ``torch.export.load(path).module()``.
* ``py``: readable, self-contained PyTorch source (the layer classes it uses, a ``Net`` module whose
  ``forward`` is ``gm.code``) beside a ``.safetensors`` file of the weights, each shared tensor stored once.
* ``onnx``: through ``torch.onnx.export`` (needs the ``onnx`` and ``onnxscript`` packages).
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import fx, nn

from protoseg.errors import FormatError, ProtosegError
from protoseg.loader import load_ir
from protoseg.graph import to_graph
from protoseg.ir import Net

SUFFIX = {"pt2": ".pt2", "py": ".py", "onnx": ".onnx"}


def default_output(prototxt: Path, fmt: str) -> Path:
    return Path(Path(prototxt).stem + SUFFIX[fmt])


def export(prototxt, weights, output: Path, *, fmt: str = "pt2", defines: Mapping[str, str] | None = None,
           input_shapes: Mapping[str, Sequence[int]] | None = None, outputs: Sequence[str] | None = None,
           overwrite: bool = False) -> list[Path]:
    """Convert and write; returns the paths written. Refuses to overwrite unless ``overwrite``."""
    output = Path(output)
    written = [output] + ([output.with_suffix(".safetensors")] if fmt == "py" else [])
    existing = [p for p in written if p.exists()]
    if existing and not overwrite:
        raise FormatError(f"{existing[0]} exists; pass --force to overwrite it or choose another -o")
    net, report = load_ir(prototxt, weights, defines=defines, input_shapes=input_shapes, outputs=outputs)
    report.raise_if_bad(str(weights))
    gm = to_graph(net, report.blobs)
    if fmt == "pt2":
        torch.export.save(export_program(gm, net), output)
    elif fmt == "py":
        write_source(gm, output, output.with_suffix(".safetensors"))
    elif fmt == "onnx":
        write_onnx(gm, net, output)
    else:
        raise ProtosegError(f"unknown format {fmt!r}; use one of {', '.join(SUFFIX)}")
    return written


def example_inputs(net: Net) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(shape) for shape in net.inputs.values())


def dynamic_shapes(net: Net) -> tuple[dict[int, object] | None, ...]:
    """Height and width of every image-like (4-D, larger than 1 x 1) input are dynamic."""
    auto = torch.export.Dim.AUTO
    return tuple({2: auto, 3: auto} if len(s) == 4 and s[2] * s[3] > 2 else None for s in net.inputs.values())


def export_program(gm: fx.GraphModule, net: Net) -> torch.export.ExportedProgram:
    try:
        with torch.no_grad():
            return torch.export.export(gm, example_inputs(net), dynamic_shapes=dynamic_shapes(net))
    except Exception as e:  # torch.export reports unsupported constructs with many exception types
        raise ProtosegError(f"torch.export could not trace net {net.name!r}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}; try --format py") from e


def write_onnx(gm: fx.GraphModule, net: Net, output: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ProtosegError("--format onnx needs the onnx and onnxscript packages: pip install onnx onnxscript") from None
    with torch.no_grad():
        torch.onnx.export(gm, example_inputs(net), str(output), input_names=list(net.inputs),
                          dynamic_shapes=dynamic_shapes(net), dynamo=True)


# -- readable source --------------------------------------------------------------------------------------

_HEADER = '''"""{name}: converted from Caffe by protoseg {version}. Needs only torch and safetensors.

    from {module} import load
    net = load()          # weights from {weights}
    scores = net(image)   # image: N x 3 x H x W, BGR, mean subtracted, as the Caffe net expected
"""

import math
import operator
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
'''

_LOAD = '''

#: Parameters stored once but used by several layers (weights shared through Caffe's param {{ name }}).
SHARED = {shared!r}


def load(weights=Path(__file__).with_name({weights!r})):
    """The net in eval mode with its weights; parameters shared in Caffe stay one tensor."""
    net = {cls}()
    tensors = load_file(str(weights))
    params = {{}}
    for key in list(tensors) + list(SHARED):
        source = SHARED.get(key, key)
        if source not in params:
            params[source] = nn.Parameter(tensors[source], requires_grad=False)
        module, _, name = key.rpartition(".")
        setattr(net.get_submodule(module), name, params[source])
    return net.eval()
'''


def _class_sources(gm: fx.GraphModule) -> list[str]:
    seen: list[type] = []
    for module in gm.children():
        for cls in reversed(type(module).__mro__):
            if cls.__module__.startswith("protoseg.") and cls not in seen:
                seen.append(cls)
    return [textwrap.dedent(inspect.getsource(cls)) for cls in seen]


def _constructor(module: nn.Module) -> str:
    signature = inspect.signature(type(module).__init__).parameters.values()
    params = [p.name for p in list(signature)[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    args = ", ".join(f"{p}={getattr(module, p)!r}" for p in params)
    return f"{type(module).__name__}({args})"


def write_source(gm: fx.GraphModule, path: Path, weights: Path) -> None:
    """Self-contained PyTorch source for ``gm`` plus its weights in safetensors."""
    from safetensors.torch import save_file

    import protoseg

    cls = gm.__class__.__name__
    unique: dict[int, str] = {}
    shared: dict[str, str] = {}
    for name, tensor in gm.named_parameters(remove_duplicate=False):
        first = unique.setdefault(id(tensor), name)
        if first != name:
            shared[name] = first
    tensors = {name: gm.get_parameter(name).detach().contiguous() for name in unique.values()}
    save_file(tensors, str(weights))

    init = "\n".join(f"        self.{name} = {_constructor(m)}" for name, m in gm.named_children())
    forward = textwrap.indent(gm.code.strip(), "    ")
    parts = [
        _HEADER.format(name=cls, version=protoseg.__version__, module=path.stem, weights=weights.name),
        *("\n\n" + src for src in _class_sources(gm)),
        f"\n\nclass {cls}(nn.Module):\n    def __init__(self):\n        super().__init__()\n{init}\n\n{forward}\n",
        _LOAD.format(shared=shared, weights=weights.name, cls=cls),
    ]
    path.write_text("".join(parts))
