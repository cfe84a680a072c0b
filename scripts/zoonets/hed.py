"""HED (Xie & Tu, Holistically-Nested Edge Detection, ICCV 2015, arXiv:1504.06375): BSDS500 edge detector.

VGG-16 without pool5 and the fc layers; each stage's last conv gives a one-channel side output, upsampled to the
image, and a 1x1 conv fuses the five. Same 2015 FCN-era conventions as CRF-as-RNN (``engine: CAFFE``, Crops with
no ``crop_param``), so the trunk and those helpers come from ``zoonets.crfasrnn``.
"""

from __future__ import annotations

from zoonets.crfasrnn import caffe_conv, crop, deconv, vgg16_caffe_trunk
from zoonets.writer import VGG_STAGES, NetWriter, input_layer


def _sigmoid(net: NetWriter, name: str, bottom: str) -> None:
    net.layer(name, "Sigmoid", [bottom], [name])


def hed_bsds() -> NetWriter:
    """s9xie/hed's examples/hed/deploy.prototxt; its edge map is ``sigmoid-fuse``, the side outputs ride along."""
    net = NetWriter("FCN", "HED BSDS500 (Xie & Tu, ICCV 2015): VGG-16 side outputs at strides 1-16, 1x1-conv fused")
    input_layer(net, 500, 500)
    vgg16_caffe_trunk(net, 35, pool5=False)
    sides = []
    for stage, convs, _ in VGG_STAGES:
        score, up = f"score-dsn{stage}", f"score-dsn{stage}-up"
        factor = 2 ** (stage - 1)
        # stage 1 is already at full resolution: no deconvolution, its conv writes the "-up" blob directly
        caffe_conv(net, score, f"conv{stage}_{convs}", 1, 1, top=up if factor == 1 else None)
        if factor > 1:
            deconv(net, f"upsample_{factor}", score, 1, 2 * factor, factor, bias=True, top=up)
        crop(net, up, "data", f"upscore-dsn{stage}")
        _sigmoid(net, f"sigmoid-dsn{stage}", f"upscore-dsn{stage}")
        sides.append(f"upscore-dsn{stage}")
    net.layer("concat", "Concat", sides, ["concat-upscore"], concat_param=[("concat_dim", 1)])
    caffe_conv(net, "new-score-weighting", "concat-upscore", 1, 1, top="upscore-fuse")
    _sigmoid(net, "sigmoid-fuse", "upscore-fuse")
    return net


NETS = {"hed_bsds.prototxt": hed_bsds}
