"""PSPNet (Zhao, Shi, Qi, Wang, Jia, "Pyramid Scene Parsing Network", CVPR 2017, arXiv:1612.01105).

Reproduces hszhao/PSPNet's deploy nets pspnet50_ADE20K_473.prototxt and pspnet101_cityscapes_713.prototxt, which
need that fork's layers: ``BN`` (four blobs: slope, bias, mean, variance) and ``Interp``. The ResNet pieces here
(deep stem, bottleneck stages, pyramid pooling) are shared with ICNet (zoonets/icnet.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from zoonets.writer import Enum, Fields, NetWriter, Value, input_layer, pool, relu

# (stage, bottleneck channels, stride of the first block, dilation of the 3x3 convs); outputs are 4x the bottleneck.
# Stages 4 and 5 keep stride 1 and dilate instead, so the trunk ends at output stride 8.
STAGES = ((2, 64, 1, 1), (3, 128, 2, 1), (4, 256, 1, 2), (5, 512, 1, 4))
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
PYRAMID_BINS = (1, 2, 3, 6)

# The fork's BN as published: frozen statistics (its fillers only initialise training and are left out).
BN_PARAM: Fields = [("frozen", True), ("momentum", 0.95)]


def downsampled(size: int, halvings: int) -> int:
    """A side after ``halvings`` stride-2 layers: exact for the 2^k*n+1 sides these nets are deployed at."""
    if (size - 1) % (1 << halvings):
        raise ValueError(f"side {size} is not 2^{halvings}*n+1")
    return ((size - 1) >> halvings) + 1


def interp(net: NetWriter, name: str, bottom: str, **fields: int) -> None:
    net.layer(name, "Interp", [bottom], [name], interp_param=list(fields.items()))


def conv_unit(net: NetWriter, name: str, bottom: str, num_output: int, kernel: int, *, pad: int | None = 0,
              stride: int = 1, dilation: int = 1, bn: bool = True, with_relu: bool = True) -> str:
    """A convolution (bias-free and followed by the fork's ``name/bn`` when ``bn``), then ``name/relu``."""
    cp: list[tuple[str, Value]] = [("num_output", num_output)]
    if pad is not None:
        cp.append(("pad", pad))
    cp += [("kernel_size", kernel), ("stride", stride)]
    if dilation > 1:
        cp.append(("dilation", dilation))
    if bn:
        cp.append(("bias_term", False))
    net.layer(name, "Convolution", [bottom], [name], convolution_param=cp)
    if bn:
        net.layer(f"{name}/bn", "BN", [name], [name], bn_param=BN_PARAM)
    if with_relu:
        relu(net, f"{name}/relu", name)
    return name


def deep_stem(net: NetWriter, bottom: str, widths: Sequence[int], *, bn: bool) -> str:
    """Three 3x3 convs (the first with stride 2) in place of ResNet's 7x7, then a 3x3/2 max pool."""
    for i, (name, width) in enumerate(zip(("conv1_1_3x3_s2", "conv1_2_3x3", "conv1_3_3x3"), widths)):
        bottom = conv_unit(net, name, bottom, width, 3, pad=1, stride=2 if i == 0 else 1, bn=bn)
    pool(net, "pool1_3x3_s2", bottom, 3, 2, pad=1)
    return "pool1_3x3_s2"


def res_stage(net: NetWriter, stage: int, bottom: str, mid: int, blocks: int, *, stride: int, dilation: int,
              bn: bool, stride_on_3x3: bool, first: int = 1) -> str:
    """Bottleneck blocks ``conv{stage}_{first..blocks}``; block 1 projects the shortcut and carries the stride,
    on its 1x1 reduce (MSRA's placement) or on its 3x3 (``stride_on_3x3``)."""
    for i in range(first, blocks + 1):
        block = f"conv{stage}_{i}"
        s = stride if i == 1 else 1
        x = conv_unit(net, f"{block}_1x1_reduce", bottom, mid, 1, stride=1 if stride_on_3x3 else s, bn=bn)
        x = conv_unit(net, f"{block}_3x3", x, mid, 3, pad=dilation, stride=s if stride_on_3x3 else 1,
                      dilation=dilation, bn=bn)
        x = conv_unit(net, f"{block}_1x1_increase", x, 4 * mid, 1, bn=bn, with_relu=False)
        shortcut = bottom
        if i == 1:
            shortcut = conv_unit(net, f"{block}_1x1_proj", bottom, 4 * mid, 1, stride=s, bn=bn, with_relu=False)
        net.layer(block, "Eltwise", [shortcut, x], [block], eltwise_param=[("operation", Enum("SUM"))])
        relu(net, f"{block}/relu", block)
        bottom = block
    return bottom


def pyramid_pooling(net: NetWriter, bottom: str, height: int, width: int, pools: Sequence[tuple[int, Fields]],
                    reduce: int | None) -> list[str]:
    """Per bin count: average pool (``pools`` gives its kernel/stride fields), a 1x1 conv+BN+ReLU to ``reduce``
    channels unless None, and Interp back to height x width. Returns the branches finest first, as published."""
    branches = []
    for bins, window in pools:
        name = f"{bottom}_pool{bins}"
        net.layer(name, "Pooling", [bottom], [name], pooling_param=[("pool", Enum("AVE")), *window])
        if reduce is not None:
            name = conv_unit(net, f"{name}_conv", name, reduce, 1, pad=None)
        interp(net, f"{bottom}_pool{bins}_interp", name, height=height, width=width)
        branches.append(f"{bottom}_pool{bins}_interp")
    return branches[::-1]


def pspnet(name: str, title: str, depth: int, classes: int, size: int, *, stride_on_3x3: bool) -> NetWriter:
    """Dilated ResNet-``depth`` with a deep stem, the pyramid pooling module on conv5_3 (bins 1, 2, 3, 6 tiling
    the size/8 map exactly, concatenated with it), a 3x3 conv, the classifier and an 8x Interp to the input."""
    net = NetWriter(name, title)
    input_layer(net, size, size)
    x = deep_stem(net, "data", (64, 64, 128), bn=True)
    for (stage, mid, stride, dilation), blocks in zip(STAGES, BLOCKS[depth]):
        x = res_stage(net, stage, x, mid, blocks, stride=stride, dilation=dilation, bn=True,
                      stride_on_3x3=stride_on_3x3)
    side = downsampled(size, 3)
    pools = [(b, [("kernel_size", side // b), ("stride", side // b)]) for b in PYRAMID_BINS]
    branches = pyramid_pooling(net, x, side, side, pools, reduce=512)
    net.layer(f"{x}_concat", "Concat", [x, *branches], [f"{x}_concat"])
    conv_unit(net, "conv5_4", f"{x}_concat", 512, 3, pad=1)
    net.layer("conv5_4/dropout", "Dropout", ["conv5_4"], ["conv5_4"], dropout_param=[("dropout_ratio", 0.1)])
    conv_unit(net, "conv6", "conv5_4", classes, 1, pad=None, bn=False, with_relu=False)
    interp(net, "conv6_interp", "conv6", zoom_factor=8)
    return net


def pspnet50_ade20k() -> NetWriter:
    return pspnet("pspnet50_ADE20K", "PSPNet ResNet-50 on ADE20K (150 classes), 473x473", 50, 150, 473,
                  stride_on_3x3=False)


def pspnet101_cityscapes() -> NetWriter:
    return pspnet("pspnet101_cityscapes", "PSPNet ResNet-101 on Cityscapes (19 classes), 713x713; its conv3_1 "
                  "strides in the 3x3, not the 1x1 reduce", 101, 19, 713, stride_on_3x3=True)


NETS = {"pspnet50_ade20k.prototxt": pspnet50_ade20k, "pspnet101_cityscapes.prototxt": pspnet101_cityscapes}
