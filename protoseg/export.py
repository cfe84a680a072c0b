"""``protoseg convert``: write the converted net so that plain PyTorch loads it, without protoseg installed.

* ``pt2``: a ``torch.export`` program with the spatial input sizes dynamic, so one file runs at any image size;
  load it with ``torch.export.load(path).module()``. It also records the net for protoseg (:mod:`protoseg.pt2`),
  which reads it back without ``torch.export.load``.
* ``py``: readable, self-contained PyTorch source (the layer classes it uses, a ``Net`` module whose
  ``forward`` is ``gm.code``) beside a ``.safetensors`` file of the weights, each shared tensor stored once.
  Every name in it comes from :mod:`protoseg.names` and every value is written as a literal, so nothing from
  the Caffe files becomes code.
* ``onnx``: through ``torch.onnx.export`` (needs the ``onnx`` and ``onnxscript`` packages).
"""

from __future__ import annotations

import inspect
import keyword
import math
import os
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import fx, nn

from protoseg.errors import FormatError, ProtosegError, quote
from protoseg.io.atomic import write_file
from protoseg.ir import Net
from protoseg.loader import open_net
from protoseg.optimize import is_image

SUFFIX = {"pt2": ".pt2", "py": ".py", "onnx": ".onnx"}


def default_output(prototxt: Path, fmt: str) -> Path:
    return Path(Path(prototxt).stem + SUFFIX[fmt])


def export(prototxt, weights, output: Path, *, fmt: str = "pt2", defines: Mapping[str, str] | None = None,
           input_shapes: Mapping[str, Sequence[int]] | None = None, outputs: Sequence[str] | None = None,
           overwrite: bool = False, fork: str | None = None, precision: str = "fp32") -> list[Path]:
    """Convert and write; returns the paths written. Refuses to overwrite unless ``overwrite``.

    ``precision`` other than fp32 stores the weights and runs the program in it (pt2, onnx); inputs and outputs
    stay float32, and the layers keep their names, so protoseg reads such a ``.pt2`` back too.
    """
    if fmt not in SUFFIX:
        raise ProtosegError(f"unknown format {fmt!r}; use one of {', '.join(SUFFIX)}")
    if precision != "fp32" and fmt == "py":
        raise ProtosegError("--format py writes float32 source; --precision applies to pt2 and onnx")
    output = Path(output)
    if fmt == "py":
        module_name(output)
    written = [output] + ([output.with_suffix(".safetensors")] if fmt == "py" else [])
    existing = [p for p in written if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise FormatError(f"{existing[0]} exists; pass --force to overwrite it or choose another -o")
    opened = open_net(prototxt, weights, defines=defines, input_shapes=input_shapes, outputs=outputs, fork=fork)
    gm = opened.graph()
    if precision != "fp32":
        from protoseg.optimize import optimize

        gm = optimize(gm, precision=precision, fuse=False)
    if fmt == "pt2":
        from protoseg import pt2

        extra = {pt2.RECORD_NAME: pt2.record(opened.net, opened.netparam, gm.meta["owners"],
                                             _preprocess_record(opened, prototxt), precision)}
        program = export_program(gm, opened.net)
        write_file(output, lambda tmp: torch.export.save(program, tmp, extra_files=extra))
    elif fmt == "py":
        write_source(gm, output, output.with_suffix(".safetensors"))
    else:
        written = write_onnx(gm, opened.net, output)
    return written


def _preprocess_record(opened, prototxt) -> dict | None:
    """What ``run`` should feed the net, as far as the prototxt says (None: ``run`` will ask for ``--mean``)."""
    from protoseg.run.preprocess import from_netparam

    try:
        pre = from_netparam(opened.netparam, prototxt=prototxt, fork=opened.net.fork)
    except ProtosegError:
        return None
    if pre.mean.ndim != 1:
        return None  # a mean_file image: run takes --mean for a .pt2
    return {"mean": pre.mean.tolist(), "scale": pre.scale, "pad_to": list(pre.pad_to) if pre.pad_to else None,
            "bgr": pre.bgr}


def module_name(path: Path) -> str:
    """The module name a ``.py`` export is imported by: its file name, which must be a Python identifier."""
    name = path.stem
    if not (name.isidentifier() and name.isascii()) or keyword.iskeyword(name):
        raise ProtosegError(f"{path}: a --format py file is imported by its name, so {quote(name)} must be a Python "
                            "module name (ASCII letters, digits and _, not starting with a digit): e.g. "
                            "-o fcn8s.py")
    return name


def example_inputs(net: Net) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(shape) for shape in net.inputs.values())


def dynamic_shapes(net: Net) -> tuple[dict[int, object] | None, ...]:
    """Height and width of every image-like (4-D, larger than 1 x 1) input are dynamic."""
    auto = torch.export.Dim.AUTO
    return tuple({2: auto, 3: auto} if is_image(s) else None for s in net.inputs.values())


def export_program(gm: fx.GraphModule, net: Net) -> torch.export.ExportedProgram:
    try:
        with torch.no_grad():
            return torch.export.export(gm, example_inputs(net), dynamic_shapes=dynamic_shapes(net))
    except Exception as e:  # torch.export reports unsupported constructs with many exception types
        raise ProtosegError(f"torch.export could not trace net {quote(net.name)}: {_first_line(e)}; "
                            "try --format py") from e


def _first_line(e: BaseException) -> str:
    """``Type: first line of the message`` (or just the type when torch gave no message)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {quote(text.splitlines()[0], 300)[1:-1]}" if text else type(e).__name__


def write_onnx(gm: fx.GraphModule, net: Net, output: Path) -> list[Path]:
    """The ONNX model and, for weights over 2 GB or as the exporter chooses, its ``NAME.onnx.data`` beside it;
    both are written in a temporary folder and renamed into place. Returns the files written."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ProtosegError("--format onnx needs the onnx and onnxscript packages: pip install onnx onnxscript") from None
    import tempfile

    names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        try:
            with torch.no_grad():
                torch.onnx.export(gm, example_inputs(net), str(Path(tmp) / output.name), input_names=names,
                                  dynamic_shapes=dynamic_shapes(net), dynamo=True)
        except Exception as e:  # the ONNX exporter raises many exception types
            raise ProtosegError(f"ONNX export of net {quote(net.name)} failed: {_first_line(e)}; "
                                "try --format pt2") from e
        written = []
        for made in sorted(Path(tmp).iterdir()):  # the model and the external data file it names
            os.replace(made, output.parent / made.name)
            written.append(output.parent / made.name)
    return written


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
    args = ", ".join(f"{p}={_literal(getattr(module, p))}" for p in params)
    return f"{type(module).__name__}({args})"


def _literal(value) -> str:
    """Python source for a layer's constructor argument: numbers, strings, None and tuples of them only."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({repr(value)!r})"
    if isinstance(value, (tuple, list)):
        items = [_literal(v) for v in value]
        if isinstance(value, list):
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    raise ProtosegError(f"cannot write a {type(value).__name__} into generated source")


def write_source(gm: fx.GraphModule, path: Path, weights: Path) -> None:
    """Self-contained PyTorch source for ``gm`` plus its weights in safetensors."""
    from safetensors.torch import save_file

    import protoseg

    module = module_name(path)
    cls = gm.__class__.__name__
    unique: dict[int, str] = {}
    shared: dict[str, str] = {}
    for name, tensor in gm.named_parameters(remove_duplicate=False):
        first = unique.setdefault(id(tensor), name)
        if first != name:
            shared[name] = first
    tensors = {name: gm.get_parameter(name).detach().contiguous() for name in unique.values()}
    write_file(weights, lambda tmp: save_file(tensors, tmp))

    init = "\n".join(f"        self.{name} = {_constructor(m)}" for name, m in gm.named_children())
    forward = textwrap.indent(gm.code.strip(), "    ")
    parts = [
        _HEADER.format(name=cls, version=protoseg.__version__, module=module, weights=weights.name),
        *("\n\n" + src for src in _class_sources(gm)),
        f"\n\nclass {cls}(nn.Module):\n    def __init__(self):\n        super().__init__()\n{init}\n\n{forward}\n",
        _LOAD.format(shared=shared, weights=weights.name, cls=cls),
    ]
    text = "".join(parts)
    compile(text, str(path), "exec")  # generated source must be valid Python; it is never run here
    write_file(path, lambda tmp: Path(tmp).write_text(text))
