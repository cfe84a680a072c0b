"""Dilation (Yu & Koltun, Multi-Scale Context Aggregation by Dilated Convolutions, ICLR 2016, arXiv:1511.07122).

The front-end is VGG-16 without padding, pool4/pool5 removed and the later layers dilated instead (output stride 8);
the context module then stacks 3x3 convolutions whose dilation doubles each layer. Files reproduced:
fyu/dilation's ``models/dilation8_pascal_voc_deploy.prototxt`` and ``dilation10_cityscapes_deploy.prototxt``.
"""

from __future__ import annotations

from zoonets.writer import VGG_STAGES, NetWriter, Value, conv, dropout, input_layer, pool, relu

# context layers: (dilation, channels as a multiple of the class count, pad or None for no pad field)
Context = tuple[tuple[int, int, int | None], ...]

DILATIONS = (1, 1, 2, 4, 8, 16)
# VOC's "large" module widens with the dilation and pads its input once by the module's whole receptive-field
# growth (1 + 1 + 2 + ... + 16 + 1 for fc1 = 33); the published file spells ct_conv1_2's "pad: 0" out, so we do too
VOC_CONTEXT: Context = ((1, 2, 33), (1, 2, 0)) + tuple((d, 2 * d, None) for d in DILATIONS[2:])
# Cityscapes's "basic" module keeps the class count and pads every layer by its dilation, two layers more
CITYSCAPES_CONTEXT: Context = tuple((d, 1, d) for d in DILATIONS + (32, 64))


def _front_end(net: NetWriter, num_classes: int, final: str) -> None:
    """VGG-16, unpadded, pooled after stages 1-3 only; conv5 dilated by 2 and fc6 (7x7) by 4 make up for it."""
    bottom = "data"
    for stage, convs, channels in VGG_STAGES:
        for i in range(1, convs + 1):
            name = f"conv{stage}_{i}"
            conv(net, name, bottom, channels, 3, dilation=2 if stage == 5 else None)
            relu(net, f"relu{stage}_{i}", name)
            bottom = name
        if stage <= 3:
            pool(net, f"pool{stage}", bottom, 2, 2)
            bottom = f"pool{stage}"
    conv(net, "fc6", bottom, 4096, 7, dilation=4)
    relu(net, "relu6", "fc6")
    dropout(net, "drop6", "fc6")
    conv(net, "fc7", "fc6", 4096, 1)
    relu(net, "relu7", "fc7")
    dropout(net, "drop7", "fc7")
    conv(net, final, "fc7", num_classes, 1)


def _context(net: NetWriter, prefix: str, bottom: str, num_classes: int, layers: Context, fc: tuple[int, int | None]
             ) -> str:
    """The context module: conv1_1, conv1_2 undilated, then convK_1 dilated by 2^(K-1); a 3x3 fc1 and a 1x1 final."""
    names = ["1_1", "1_2"] + [f"{k}_1" for k in range(2, len(layers))]
    for suffix, (dilation, width, pad) in zip(names, layers):
        name = f"{prefix}_conv{suffix}"
        conv(net, name, bottom, width * num_classes, 3, pad=pad, dilation=dilation if dilation > 1 else None)
        relu(net, f"{prefix}_relu{suffix}", name)
        bottom = name
    width, pad = fc
    conv(net, f"{prefix}_fc1", bottom, width * num_classes, 3, pad=pad)
    relu(net, f"{prefix}_fc1_relu", f"{prefix}_fc1")
    conv(net, f"{prefix}_final", f"{prefix}_fc1", num_classes, 1)
    return f"{prefix}_final"


def dilation8_voc() -> NetWriter:
    """Dilation8 PASCAL VOC: front-end + large context module; ``prob`` is at 1/8 of the (900 - 2*186) input."""
    net = NetWriter("dilation8_pascal_voc", "Dilation8 PASCAL VOC (Yu & Koltun, ICLR 2016): front-end + large context")
    input_layer(net, 900, 900)
    _front_end(net, 21, "fc-final")
    scores = _context(net, "ct", "fc-final", 21, VOC_CONTEXT, (32, None))
    net.layer("prob", "Softmax", [scores], ["prob"])
    return net


def dilation10_cityscapes() -> NetWriter:
    """Dilation10 Cityscapes: front-end + basic context module (8 layers) + a fixed bilinear x8 upsampling."""
    net = NetWriter("dilation10_cityscapes", "Dilation10 Cityscapes (Yu & Koltun, ICLR 2016): front-end + basic "
                    "context, upsampled x8")
    input_layer(net, 1396, 1396)
    classes = 19
    _front_end(net, classes, "final")
    scores = _context(net, "ctx", "final", classes, CITYSCAPES_CONTEXT, (1, 1))
    # one bilinear filter per class (group = classes), frozen: lr_mult 0 in the published file
    cp: list[tuple[str, Value]] = [("num_output", classes), ("bias_term", False), ("pad", 4), ("kernel_size", 16),
                                   ("group", classes), ("stride", 8)]
    net.layer("ctx_upsample", "Deconvolution", [scores], ["ctx_upsample"], convolution_param=cp)
    net.layer("prob", "Softmax", ["ctx_upsample"], ["prob"])
    return net


NETS = {"dilation8_voc.prototxt": dilation8_voc, "dilation10_cityscapes.prototxt": dilation10_cityscapes}
