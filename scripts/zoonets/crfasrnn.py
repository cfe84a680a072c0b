"""CRF-as-RNN (Zheng et al., ICCV 2015, arXiv:1502.03240): the 2015 FCN-8s with a mean-field CRF on top.

The trunk predates the 2016 FCN files of ``zoonets.fcn``: its layers are named ``score-fr``, ``score-pool4``...,
every convolution says ``engine: CAFFE`` and the Crops carry no ``crop_param`` (the Caffe of the time inferred the
offsets), so it is written here rather than borrowed.
"""

from __future__ import annotations

from zoonets.writer import VGG_STAGES, Enum, NetWriter, Value, dropout, input_layer, pool, relu

NUM_CLASSES = 21


def caffe_conv(net: NetWriter, name: str, bottom: str, num_output: int, kernel: int, *, pad: int | None = None,
               top: str | None = None) -> None:
    """A convolution pinned to Caffe's own engine, as the 2015 FCN-era files (CRF-as-RNN, HED) write them."""
    cp: list[tuple[str, Value]] = [("num_output", num_output)]
    if pad is not None:
        cp.append(("pad", pad))
    cp += [("kernel_size", kernel), ("engine", Enum("CAFFE"))]
    net.layer(name, "Convolution", [bottom], [top or name], convolution_param=cp)


def vgg16_caffe_trunk(net: NetWriter, first_pad: int, *, pool5: bool) -> None:
    """VGG-16 conv1_1 to conv5_3, conv1_1 padded by ``first_pad`` so the outputs can be cropped onto the input."""
    bottom = "data"
    for stage, convs, channels in VGG_STAGES:
        for i in range(1, convs + 1):
            name = f"conv{stage}_{i}"
            caffe_conv(net, name, bottom, channels, 3, pad=first_pad if name == "conv1_1" else 1)
            relu(net, f"relu{stage}_{i}", name)
            bottom = name
        if stage < 5 or pool5:
            pool(net, f"pool{stage}", bottom, 2, 2)
            bottom = f"pool{stage}"


def crop(net: NetWriter, bottom: str, like: str, top: str) -> None:
    """A parameterless Crop, all named "crop" as in the published files: offsets come from the coordinate map."""
    net.layer("crop", "Crop", [bottom, like], [top])


def deconv(net: NetWriter, name: str, bottom: str, num_output: int, kernel: int, stride: int, *, bias: bool,
           top: str | None = None) -> None:
    """A learned (bilinear-initialised) upsampling; only some of the published ones drop the bias."""
    cp: list[tuple[str, Value]] = [("num_output", num_output)]
    if not bias:
        cp.append(("bias_term", False))
    cp += [("kernel_size", kernel), ("stride", stride)]
    net.layer(name, "Deconvolution", [bottom], [top or name], convolution_param=cp)


# FCN-8s skips: (upsampling deconvolution, whether it has a bias, pool layer scored, top of the sum)
SKIPS = (("score2", True, "pool4", "score-fused"), ("score4", False, "pool3", "score-final"))

MEANFIELD = (
    ("num_iterations", 10), ("compatibility_mode", Enum("POTTS")), ("threshold", 2), ("theta_alpha", 160),
    ("theta_beta", 3), ("theta_gamma", 3), ("spatial_filter_weight", 3), ("bilateral_filter_weight", 5),
)


def crfasrnn_voc() -> NetWriter:
    """TVG_CRFRNN_new_deploy.prototxt: FCN-8s unaries, then 10 mean-field iterations on the image (torrvision)."""
    net = NetWriter("CRFRNN-VOC", "CRF-as-RNN PASCAL VOC (Zheng et al., ICCV 2015): FCN-8s + MultiStageMeanfield")
    input_layer(net, 500, 500)
    vgg16_caffe_trunk(net, 100, pool5=True)
    caffe_conv(net, "fc6", "pool5", 4096, 7)
    relu(net, "relu6", "fc6")
    dropout(net, "drop6", "fc6")
    caffe_conv(net, "fc7", "fc6", 4096, 1)
    relu(net, "relu7", "fc7")
    dropout(net, "drop7", "fc7")
    caffe_conv(net, "score-fr", "fc7", NUM_CLASSES, 1, top="score")
    bottom = "score"
    for up, bias, pool_name, fused in SKIPS:
        deconv(net, up, bottom, NUM_CLASSES, 4, 2, bias=bias)
        scored = f"score-{pool_name}"
        caffe_conv(net, scored, pool_name, NUM_CLASSES, 1)
        crop(net, scored, up, f"{scored}c")
        net.layer("fuse", "Eltwise", [up, f"{scored}c"], [fused], eltwise_param=[("operation", Enum("SUM"))])
        bottom = fused
    deconv(net, "upsample", bottom, NUM_CLASSES, 16, 8, bias=False, top="bigscore")
    crop(net, "bigscore", "data", "coarse")
    net.layer("splitting", "Split", ["coarse"], ["unary", "Q0"])
    # the CRF's unaries and its initial Q are both the FCN scores; the image gives the bilateral kernel's features
    net.layer("inference1", "MultiStageMeanfield", ["unary", "Q0", "data"], ["pred"],
              multi_stage_meanfield_param=MEANFIELD)
    return net


NETS = {"crfasrnn_voc.prototxt": crfasrnn_voc}
