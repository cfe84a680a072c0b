"""ICNet (Zhao, Qi, Shen, Shi, Jia, "ICNet for Real-Time Semantic Segmentation on High-Resolution Images",
ECCV 2018, arXiv:1704.08545).

Reproduces hszhao/ICNet's icnet_cityscapes.prototxt (BN merged into the convolutions, hence biases and no BN):
a half-width dilated PSPNet-50 trunk run on the image at 1/2 (conv1..conv3_1) and 1/4 (conv3_2 onwards), a light
three-conv branch on the full image, joined by two cascade feature fusion units.
"""

from __future__ import annotations

from zoonets.pspnet import BLOCKS, STAGES, conv_unit, deep_stem, downsampled, interp, pyramid_pooling, res_stage
from zoonets.writer import NetWriter, input_layer, relu

HEIGHT, WIDTH = 1025, 2049
CLASSES = 19
# The published pyramid's strides (height, width) per bin count, set by hand: width twice height, not a rule of
# the map size. Each kernel is whatever makes the bins tile the 33x65 map exactly.
POOL_STRIDES = ((1, (33, 65)), (2, (16, 32)), (3, (10, 20)), (6, (5, 10)))


def _cff_upsample(net: NetWriter, up: str, low: str, conv: str) -> str:
    """Cascade feature fusion, low-resolution side: 2x Interp, then a 3x3 conv dilated by 2 (no ReLU)."""
    interp(net, up, low, zoom_factor=2)
    return conv_unit(net, conv, up, 128, 3, pad=2, dilation=2, bn=False, with_relu=False)


def _cff_fuse(net: NetWriter, name: str, high: str, proj: str, low: str) -> str:
    """Cascade feature fusion, high-resolution side: 1x1 projection to 128 channels, summed with ``low``, ReLU."""
    conv_unit(net, proj, high, 128, 1, bn=False, with_relu=False)
    net.layer(name, "Eltwise", [proj, low], [name])
    relu(net, f"{name}/relu", name)
    return name


def icnet_cityscapes() -> NetWriter:
    net = NetWriter("icnet_cityscapes", "ICNet on Cityscapes (19 classes), 1025x2049, BN merged")
    input_layer(net, HEIGHT, WIDTH)
    net.layer("data_sub1", "Scale", ["data"], ["data_sub1"])  # as published: a learned per-channel scale
    interp(net, "data_sub2", "data_sub1", shrink_factor=2)
    x = deep_stem(net, "data_sub2", (32, 32, 64), bn=False)
    for (stage, mid, stride, dilation), blocks in zip(STAGES, BLOCKS[50]):
        kw = dict(stride=stride, dilation=dilation, bn=False, stride_on_3x3=False)
        if stage == 3:  # the 1/4 branch leaves the trunk after conv3_1 and halves the map
            conv3_1 = res_stage(net, stage, x, mid // 2, 1, **kw)
            interp(net, "conv3_1_sub4", conv3_1, shrink_factor=2)
            x = res_stage(net, stage, "conv3_1_sub4", mid // 2, blocks, first=2, **kw)
        else:
            x = res_stage(net, stage, x, mid // 2, blocks, **kw)
    h, w = downsampled(HEIGHT, 5), downsampled(WIDTH, 5)
    pools = [(bins, [("kernel_h", h - (bins - 1) * sh), ("kernel_w", w - (bins - 1) * sw),
                     ("stride_h", sh), ("stride_w", sw)]) for bins, (sh, sw) in POOL_STRIDES]
    branches = pyramid_pooling(net, x, h, w, pools, reduce=None)
    net.layer(f"{x}_sum", "Eltwise", [x, *branches], [f"{x}_sum"])
    conv_unit(net, "conv5_4_k1", f"{x}_sum", 256, 1, bn=False)
    _cff_upsample(net, "conv5_4_interp", "conv5_4_k1", "conv_sub4")
    _cff_fuse(net, "sub24_sum", conv3_1, "conv3_1_sub2_proj", "conv_sub4")
    _cff_upsample(net, "sub24_sum_interp", "sub24_sum", "conv_sub2")
    x = "data_sub1"
    for i, width in enumerate((32, 32, 64), start=1):
        x = conv_unit(net, f"conv{i}_sub1", x, width, 3, pad=1, stride=2, bn=False)
    _cff_fuse(net, "sub12_sum", x, "conv3_sub1_proj", "conv_sub2")
    interp(net, "sub12_sum_interp", "sub12_sum", zoom_factor=2)
    conv_unit(net, "conv6_cls", "sub12_sum_interp", CLASSES, 1, pad=None, bn=False, with_relu=False)
    interp(net, "conv6_interp", "conv6_cls", zoom_factor=4)
    return net


NETS = {"icnet_cityscapes.prototxt": icnet_cityscapes}
