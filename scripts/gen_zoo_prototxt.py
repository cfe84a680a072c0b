#!/usr/bin/env python
"""Write protoseg's own deploy prototxts for the model zoo into ``prototxt/``.

The published test nets carry data layers, loss layers, ``${NAME}`` templates and, for DeepLab v1 and others,
the pre-2015 ``layers {}`` format, so none of them can be fed an image directly. These are the same nets, layer for
layer, in V2 syntax with an ``Input`` layer: same layer names, types, parameters and order, so the released
caffemodels load by layer name. Training-only fields (``lr_mult``, fillers) are left out; DeepLab v2 ResNet's
``param { name }`` entries stay because they tie the weights of the three scales together.

Each model family is one module of ``zoonets/`` (``zoonets/writer.py`` renders the text) with its ``NETS``.
Generating rather than hand-writing keeps the 1,300-layer ResNet-101 MSC net honest; ``tests/test_zoo.py``
checks that the committed files equal this script's output and match the published nets.

Usage: ``python scripts/gen_zoo_prototxt.py [OUT_DIR]`` (default: the repository's ``prototxt/``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the zoonets package beside this script

from zoonets import crfasrnn, deeplab, dilation, enet, fcn, hed, icnet, pspnet, segnet  # noqa: E402

FAMILIES = (fcn, deeplab, segnet, enet, dilation, crfasrnn, hed, pspnet, icnet)
#: file name in ``prototxt/`` -> builder, over every family module's own ``NETS``
NETS = {filename: build for family in FAMILIES for filename, build in family.NETS.items()}


def render_all() -> dict[str, str]:
    """File name -> text of every zoo prototxt."""
    return {name: build().render() for name, build in NETS.items()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "prototxt"
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (out / name).write_text(text)
        print(f"wrote {out / name} ({text.count('layer {')} layers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
