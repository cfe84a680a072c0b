"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017, arXiv:1511.00561) and Bayesian SegNet (Kendall,
Badrinarayanan, Cipolla, BMVC 2017, arXiv:1511.02680), as released with alexgkendall/caffe-segnet.

Both are a VGG-16 encoder with BN after every conv and max pooling that also outputs its argmax mask, mirrored by a
decoder whose ``Upsample`` layers scatter back through those masks. Bayesian SegNet adds test-time dropout around
the three deepest encoder and decoder stages, and a separate classifier conv after a full 64-channel decoder.
"""

from __future__ import annotations

import math

from zoonets.writer import VGG_STAGES, Enum, NetWriter, conv, input_layer, relu

HEIGHT, WIDTH = 360, 480
DRIVING_CLASSES = 12
CAMVID_CLASSES = 11


def _conv_bn_relu(net: NetWriter, name: str, relu_name: str, bottom: str, channels: int) -> str:
    """3x3 conv, caffe-segnet BN (statistics folded into scale/shift) and ReLU, all in place after the conv."""
    conv(net, name, bottom, channels, 3, pad=1)
    net.layer(f"{name}_bn", "BN", [name], [name], bn_param=[("bn_mode", Enum("INFERENCE"))])
    relu(net, relu_name, name)
    return name


def _mc_dropout(net: NetWriter, name: str, blob: str) -> None:
    """Bayesian SegNet's Monte Carlo dropout: it keeps sampling at test time."""
    net.layer(name, "Dropout", [blob], [blob],
              dropout_param=[("sample_weights_test", True), ("dropout_ratio", 0.5)])


def _encoder(net: NetWriter, bayesian: bool) -> list[tuple[int, int]]:
    """VGG-16 conv stages with BN; returns each pool's input (height, width) for the decoder's unpooling."""
    bottom, size, sizes = "data", (HEIGHT, WIDTH), []
    for stage, convs, channels in VGG_STAGES:
        for i in range(1, convs + 1):
            bottom = _conv_bn_relu(net, f"conv{stage}_{i}", f"relu{stage}_{i}", bottom, channels)
        name = f"pool{stage}"
        pp = [("pool", Enum("MAX")), ("kernel_size", 2), ("stride", 2)]
        net.layer(name, "Pooling", [bottom], [name, f"{name}_mask"], pooling_param=pp)
        if bayesian and stage >= 3:
            _mc_dropout(net, f"{name}_drop", name)
        sizes.append(size)
        size = (math.ceil(size[0] / 2), math.ceil(size[1] / 2))  # Caffe pooling rounds up
        bottom = name
    return sizes


def _decoder(net: NetWriter, sizes: list[tuple[int, int]], bayesian: bool, last_channels: int) -> str:
    """Mirror of the encoder: unpool by the stage's mask, then its convs in reverse, ending at conv1_1_D.

    Each stage's last conv narrows to the next stage's width; conv1_1_D gets ``last_channels``, and without BN and
    ReLU when it is the classifier (the driving demo) rather than a 64-channel feature map (Bayesian SegNet).
    """
    bottom = "pool5"
    widths = {stage: channels for stage, _, channels in VGG_STAGES}
    for stage, convs, channels in reversed(VGG_STAGES):
        if bayesian and 2 <= stage <= 4:  # pool5_drop already precedes upsample5
            _mc_dropout(net, f"upsample{stage}_drop", bottom)
        up: list[tuple[str, int]] = [("scale", 2)]
        height, width = sizes[stage - 1]
        if height % 2 or width % 2:  # pooling rounded up, so 2x overshoots: restore the encoder's size
            up += [("upsample_w", width), ("upsample_h", height)]
        net.layer(f"upsample{stage}", "Upsample", [bottom, f"pool{stage}_mask"], [f"pool{stage}_D"],
                  upsample_param=up)
        bottom = f"pool{stage}_D"
        for i in range(convs, 0, -1):
            name, relu_name = f"conv{stage}_{i}_D", f"relu{stage}_{i}_D"
            out = channels if i > 1 else widths.get(stage - 1, last_channels)
            if stage == 1 and i == 1 and not bayesian:
                conv(net, name, bottom, out, 3, pad=1)
                return name
            bottom = _conv_bn_relu(net, name, relu_name, bottom, out)
    return bottom


def segnet_driving() -> NetWriter:
    """caffe-segnet's ``Example_Models/segnet_model_driving_webdemo.prototxt``: SegNet on road scenes, 12 classes."""
    net = NetWriter("segnet-driving", "SegNet road-scene web demo (Badrinarayanan et al., TPAMI 2017): 12 classes")
    input_layer(net, HEIGHT, WIDTH)
    score = _decoder(net, _encoder(net, bayesian=False), bayesian=False, last_channels=DRIVING_CLASSES)
    net.layer("argmax", "ArgMax", [score], ["argmax"], argmax_param=[("axis", 1)])
    return net


def bayesian_segnet_camvid() -> NetWriter:
    """Bayesian-SegNet's ``Models/bayesian_segnet_camvid.prototxt``: CamVid, 11 classes, dropout sampled at test."""
    net = NetWriter("bayesian-segnet-camvid",
                    "Bayesian SegNet CamVid (Kendall et al., BMVC 2017): average several passes for the posterior")
    input_layer(net, HEIGHT, WIDTH)
    features = _decoder(net, _encoder(net, bayesian=True), bayesian=True, last_channels=64)
    conv(net, "camvid", features, CAMVID_CLASSES, 3, pad=1)
    net.layer("prob", "Softmax", ["camvid"], ["prob"], softmax_param=[("engine", Enum("CAFFE"))])
    return net


NETS = {"segnet_driving.prototxt": segnet_driving, "bayesian_segnet_camvid.prototxt": bayesian_segnet_camvid}
