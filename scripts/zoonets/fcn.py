"""FCN (fcn.berkeleyvision.org, 2018 voc-fcn*s)."""

from __future__ import annotations

from zoonets.writer import VGG_STAGES, Enum, NetWriter, conv, dropout, input_layer, pool, relu

NUM_CLASSES = 21


def _fcn_trunk(net: NetWriter) -> None:
    """VGG-16 with conv1_1 padded by 100 so the output can always be cropped back onto the input."""
    bottom = "data"
    for stage, convs, channels in VGG_STAGES:
        for i in range(1, convs + 1):
            name = f"conv{stage}_{i}"
            pad = 100 if name == "conv1_1" else 1
            conv(net, name, bottom, channels, 3, pad=pad, stride=1)
            relu(net, f"relu{stage}_{i}", name)
            bottom = name
        pool(net, f"pool{stage}", bottom, 2, 2)
        bottom = f"pool{stage}"
    conv(net, "fc6", "pool5", 4096, 7, pad=0, stride=1)
    relu(net, "relu6", "fc6")
    dropout(net, "drop6", "fc6")
    conv(net, "fc7", "fc6", 4096, 1, pad=0, stride=1)
    relu(net, "relu7", "fc7")
    dropout(net, "drop7", "fc7")
    conv(net, "score_fr", "fc7", NUM_CLASSES, 1, pad=0)


def _deconv(net: NetWriter, name: str, bottom: str, kernel: int, stride: int) -> None:
    cp = [("num_output", NUM_CLASSES), ("bias_term", False), ("kernel_size", kernel), ("stride", stride)]
    net.layer(name, "Deconvolution", [bottom], [name], convolution_param=cp)


def _crop(net: NetWriter, name: str, bottom: str, like: str, offset: int) -> None:
    net.layer(name, "Crop", [bottom, like], [name], crop_param=[("axis", 2), ("offset", offset)])


def _fuse(net: NetWriter, name: str, a: str, b: str) -> None:
    net.layer(name, "Eltwise", [a, b], [name], eltwise_param=[("operation", Enum("SUM"))])


def _skip(net: NetWriter, pool: str, upscored: str, offset: int) -> str:
    """Score a pool layer, crop it onto the upsampled coarser score and sum the two."""
    conv(net, f"score_{pool}", pool, NUM_CLASSES, 1, pad=0)
    _crop(net, f"score_{pool}c", f"score_{pool}", upscored, offset)
    _fuse(net, f"fuse_{pool}", upscored, f"score_{pool}c")
    return f"fuse_{pool}"


def fcn32s() -> NetWriter:
    net = NetWriter("voc-fcn32s", "FCN-32s PASCAL VOC (Long, Shelhamer, Darrell): single stream, stride 32")
    input_layer(net, 500, 500)
    _fcn_trunk(net)
    _deconv(net, "upscore", "score_fr", 64, 32)
    _crop(net, "score", "upscore", "data", 19)
    return net


def fcn16s() -> NetWriter:
    net = NetWriter("voc-fcn16s", "FCN-16s PASCAL VOC: two streams (pool4 skip), stride 16")
    input_layer(net, 500, 500)
    _fcn_trunk(net)
    _deconv(net, "upscore2", "score_fr", 4, 2)
    fused = _skip(net, "pool4", "upscore2", 5)
    _deconv(net, "upscore16", fused, 32, 16)
    _crop(net, "score", "upscore16", "data", 27)
    return net


def fcn8s() -> NetWriter:
    net = NetWriter("voc-fcn8s", "FCN-8s PASCAL VOC: three streams (pool4 and pool3 skips), stride 8")
    input_layer(net, 500, 500)
    _fcn_trunk(net)
    _deconv(net, "upscore2", "score_fr", 4, 2)
    fused = _skip(net, "pool4", "upscore2", 5)
    _deconv(net, "upscore_pool4", fused, 4, 2)
    fused = _skip(net, "pool3", "upscore_pool4", 9)
    _deconv(net, "upscore8", fused, 16, 8)
    _crop(net, "score", "upscore8", "data", 31)
    return net


NETS = {"fcn32s.prototxt": fcn32s, "fcn16s.prototxt": fcn16s, "fcn8s.prototxt": fcn8s}
