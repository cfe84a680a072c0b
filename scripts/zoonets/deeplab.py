"""DeepLab v1 LargeFOV and v2 (VGG-16 ASPP-L, ResNet-101 MSC)."""

from __future__ import annotations

from zoonets.writer import VGG_STAGES, Enum, NetWriter, Value, conv, dropout, input_layer, pool, relu

NUM_CLASSES = 21


# ---------------------------------------------------------------- DeepLab VGG-16 (v1 LargeFOV, v2 ASPP-L)

def _deeplab_vgg_trunk(net: NetWriter) -> None:
    """VGG-16 with 3x3/stride-2 pooling, pool4/pool5 at stride 1 and conv5 dilated by 2: output stride 8."""
    bottom = "data"
    for stage, convs, channels in VGG_STAGES:
        for i in range(1, convs + 1):
            name = f"conv{stage}_{i}"
            if stage == 5:
                conv(net, name, bottom, channels, 3, pad=2, dilation=2)
            else:
                conv(net, name, bottom, channels, 3, pad=1)
            relu(net, f"relu{stage}_{i}", name)
            bottom = name
        pool(net, f"pool{stage}", bottom, 3, 2 if stage <= 3 else 1, pad=1)
        bottom = f"pool{stage}"


def _interp(net: NetWriter, name: str, bottom: str, *, zoom: int | None = None, shrink: int | None = None,
            pads: bool = False, shrink_first: bool = True) -> None:
    ip: list[tuple[str, Value]] = []
    factors = [("shrink_factor", shrink), ("zoom_factor", zoom)]
    for key, value in factors if shrink_first else factors[::-1]:
        if value is not None:
            ip.append((key, value))
    if pads:
        ip += [("pad_beg", 0), ("pad_end", 0)]
    net.layer(name, "Interp", [bottom], [name], interp_param=ip)


def deeplab_v1_largefov() -> NetWriter:
    net = NetWriter(
        "deeplab-largefov",
        "DeepLab-LargeFOV (Chen et al., ICLR 2015): VGG-16, fc6 3x3 dilated by 12, 1024 channels",
    )
    input_layer(net, 513, 513)
    _deeplab_vgg_trunk(net)
    pool(net, "pool5a", "pool5", 3, 1, pad=1, method="AVE")
    conv(net, "fc6", "pool5a", 1024, 3, pad=12, dilation=12)
    relu(net, "relu6", "fc6")
    dropout(net, "drop6", "fc6")
    conv(net, "fc7", "fc6", 1024, 1)
    relu(net, "relu7", "fc7")
    dropout(net, "drop7", "fc7")
    conv(net, "fc8_voc12", "fc7", NUM_CLASSES, 1)
    _interp(net, "fc8_interp", "fc8_voc12", zoom=8)
    return net


ASPP_RATES = (6, 12, 18, 24)


def deeplab_v2_vgg16() -> NetWriter:
    net = NetWriter(
        "deeplab-v2-vgg16",
        "DeepLab v2 VGG-16 ASPP-L (Chen et al., TPAMI 2018): four fc6-fc8 branches dilated 6/12/18/24, summed",
    )
    input_layer(net, 513, 513)
    _deeplab_vgg_trunk(net)
    heads = []
    for i, rate in enumerate(ASPP_RATES, start=1):
        conv(net, f"fc6_{i}", "pool5", 1024, 3, pad=rate, dilation=rate)
        relu(net, f"relu6_{i}", f"fc6_{i}")
        dropout(net, f"drop6_{i}", f"fc6_{i}")
        conv(net, f"fc7_{i}", f"fc6_{i}", 1024, 1)
        relu(net, f"relu7_{i}", f"fc7_{i}")
        dropout(net, f"drop7_{i}", f"fc7_{i}")
        conv(net, f"fc8_voc12_{i}", f"fc7_{i}", NUM_CLASSES, 1)
        heads.append(f"fc8_voc12_{i}")
    net.layer("fc8_voc12", "Eltwise", heads, ["fc8_voc12"], eltwise_param=[("operation", Enum("SUM"))])
    _interp(net, "fc8_interp", "fc8_voc12", zoom=8)
    return net


# ---------------------------------------------------------------- DeepLab v2 ResNet-101 MSC

# (stage, blocks, bottleneck channels, output channels, stride of the first block, dilation of the 3x3 convs)
RESNET101_STAGES = ((2, 3, 64, 256, 1, 1), (3, 4, 128, 512, 2, 1), (4, 23, 256, 1024, 1, 2), (5, 3, 512, 2048, 1, 4))
SCALES = ("", "_res05", "_res075")


def _block_names(stage: int, blocks: int) -> list[str]:
    """MSRA's block naming: 2a 2b 2c for short stages, 3a 3b1 3b2 ... for long ones."""
    if blocks <= 3:
        return [f"{stage}{chr(ord('a') + i)}" for i in range(blocks)]
    return [f"{stage}a"] + [f"{stage}b{i}" for i in range(1, blocks)]


class _ResNetScale:
    """Emits one trunk; layer and blob names get the scale's suffix, parameter names never do."""

    def __init__(self, net: NetWriter, suffix: str) -> None:
        self.net = net
        self.s = suffix

    def conv_bn(self, conv: str, bn: str, scale: str, bottom: str, num_output: int, kernel: int, pad: int,
                stride: int, dilation: int = 1) -> str:
        s = self.s
        cp: list[tuple[str, Value]] = [("num_output", num_output), ("kernel_size", kernel), ("pad", pad)]
        if dilation > 1:
            cp.append(("dilation", dilation))
        cp += [("stride", stride), ("bias_term", False)]
        blob = conv + s
        self.net.layer(conv + s, "Convolution", [bottom], [blob], params=[f"{conv}_0"], convolution_param=cp)
        self.net.layer(bn + s, "BatchNorm", [blob], [blob], params=[f"{bn}_{i}" for i in range(3)],
                       batch_norm_param=[("use_global_stats", True)])
        self.net.layer(scale + s, "Scale", [blob], [blob], params=[f"{scale}_{i}" for i in range(2)],
                       scale_param=[("bias_term", True)])
        return blob

    def relu(self, name: str, blob: str) -> None:
        self.net.layer(name + self.s, "ReLU", [blob], [blob])

    def build(self, data: str) -> str:
        blob = self.conv_bn("conv1", "bn_conv1", "scale_conv1", data, 64, 7, 3, 2)
        self.relu("conv1_relu", blob)
        pool = "pool1" + self.s
        self.net.layer(pool, "Pooling", [blob], [pool], pooling_param=[
            ("kernel_size", 3), ("stride", 2), ("pad", 1), ("pool", Enum("MAX"))])
        prev = pool
        for stage, blocks, mid, out, stride, dilation in RESNET101_STAGES:
            for i, b in enumerate(_block_names(stage, blocks)):
                prev = self.block(b, prev, mid, out, stride if i == 0 else 1, dilation, projection=i == 0)
        return prev

    def block(self, b: str, bottom: str, mid: int, out: int, stride: int, dilation: int, projection: bool) -> str:
        s = self.s
        if projection:
            shortcut = self.conv_bn(f"res{b}_branch1", f"bn{b}_branch1", f"scale{b}_branch1", bottom, out, 1, 0,
                                    stride)
        else:
            shortcut = bottom
        x = self.conv_bn(f"res{b}_branch2a", f"bn{b}_branch2a", f"scale{b}_branch2a", bottom, mid, 1, 0, stride)
        self.relu(f"res{b}_branch2a_relu", x)
        x = self.conv_bn(f"res{b}_branch2b", f"bn{b}_branch2b", f"scale{b}_branch2b", x, mid, 3, dilation, 1,
                         dilation)
        self.relu(f"res{b}_branch2b_relu", x)
        x = self.conv_bn(f"res{b}_branch2c", f"bn{b}_branch2c", f"scale{b}_branch2c", x, out, 1, 0, 1)
        top = f"res{b}{s}"
        self.net.layer(top, "Eltwise", [shortcut, x], [top])
        self.relu(f"res{b}_relu", top)
        return top


def deeplab_v2_resnet101() -> NetWriter:
    net = NetWriter(
        "deeplab-v2-resnet101-msc",
        "DeepLab v2 ResNet-101 MSC (Chen et al., TPAMI 2018): three scales (1, 0.75, 0.5) sharing weights, "
        "ASPP heads summed, scales fused by max",
    )
    input_layer(net, 513, 513)
    _interp(net, "data_res05", "data", shrink=2, pads=True)
    _interp(net, "data_res075", "data", shrink=4, zoom=3, pads=True)
    finals = {}
    for suffix, data in zip(SCALES, ("data", "data_res05", "data_res075")):
        net.comment(f"trunk at scale {suffix[4:] or '1'}" if suffix else "trunk at full resolution")
        finals[suffix] = _ResNetScale(net, suffix).build(data)
    for suffix in SCALES:
        heads = []
        for i, rate in enumerate(ASPP_RATES):
            name = f"fc1_voc12{suffix}_c{i}"
            cp = [("num_output", NUM_CLASSES), ("kernel_size", 3), ("pad", rate), ("dilation", rate)]
            net.layer(name, "Convolution", [finals[suffix]], [name],
                      params=[f"fc1_voc12_c{i}_w", f"fc1_voc12_c{i}_b"], convolution_param=cp)
            heads.append(name)
        name = f"fc1_voc12{suffix}"
        net.layer(name, "Eltwise", heads, [name], eltwise_param=[("operation", Enum("SUM"))])
    _interp(net, "fc1_voc12_res05_interp", "fc1_voc12_res05", zoom=2, pads=True, shrink_first=False)
    _interp(net, "fc1_voc12_res075_interp", "fc1_voc12_res075", zoom=4, shrink=3, pads=True, shrink_first=False)
    net.layer("fc_fusion", "Eltwise", ["fc1_voc12", "fc1_voc12_res075_interp", "fc1_voc12_res05_interp"],
              ["fc_fusion"], eltwise_param=[("operation", Enum("MAX"))])
    _interp(net, "fc1_interp", "fc_fusion", zoom=8)
    return net


NETS = {
    "deeplab_v1_largefov.prototxt": deeplab_v1_largefov,
    "deeplab_v2_vgg16.prototxt": deeplab_v2_vgg16,
    "deeplab_v2_resnet101_msc.prototxt": deeplab_v2_resnet101,
}
