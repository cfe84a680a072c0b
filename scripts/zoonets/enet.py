"""ENet (Paszke, Chaurasia, Kim, Culurciello, arXiv:1606.02147), TimoSaemann/ENet's Cityscapes release.

Reproduces ``enet_deploy_final.prototxt``: the deploy net after the repository's BatchNorm-merging script, so every
convolution carries a bias and no BN follows it. Only the initial block's concat and the decoder's deconvolutions
keep a caffe-segnet ``BN`` (``bn_mode: INFERENCE``). The encoder activates with PReLU, the decoder with ReLU, and
both name their activations ``prelu*``. Downsampling bottlenecks widen the pooled shortcut with a 1x1 convolution
(not zero padding, as the paper has it) and hand their pooling masks to the decoder's ``Upsample`` layers.
"""

from __future__ import annotations

from zoonets.writer import Enum, NetWriter, Value, input_layer, pool

NUM_CLASSES = 19  # Cityscapes' training classes
ASYMMETRIC = "asymmetric"  # a 5x1 then 1x5 convolution in place of the 3x3
# the middle convolution of stage 2's and 3's regular bottlenecks 1..8: a dilation, or ASYMMETRIC
DILATED_SEQUENCE: tuple[int | str, ...] = (1, 2, ASYMMETRIC, 4, 1, 8, ASYMMETRIC, 16)
# (stage, internal channels, output channels, downsampling bottleneck _0 first?, middles of bottlenecks _1.._n)
ENCODER = ((1, 16, 64, True, (1,) * 4), (2, 32, 128, True, DILATED_SEQUENCE), (3, 32, 128, False, DILATED_SEQUENCE))
# (stage, internal channels, output channels, regular bottlenecks after the upsampling one)
DECODER = ((4, 16, 64, 2), (5, 4, 16, 1))


def _conv(net: NetWriter, name: str, bottom: str, num_output: int, kernel: int | tuple[int, int], *,
          stride: int = 1, pad: int | None = None, dilation: int | None = None) -> str:
    """A biased convolution (the BN merged into it); ``kernel`` is a size or an (h, w) pair."""
    cp: list[tuple[str, Value]] = [("num_output", num_output), ("bias_term", True)]
    if pad is not None:
        cp.append(("pad", pad))
    if isinstance(kernel, tuple):
        cp += [("kernel_h", kernel[0]), ("kernel_w", kernel[1])]
    else:
        cp.append(("kernel_size", kernel))
    cp.append(("stride", stride))
    if dilation is not None:
        cp.append(("dilation", dilation))
    net.layer(name, "Convolution", [bottom], [name], convolution_param=cp)
    return name


def _act(net: NetWriter, act: str, name: str, bottom: str) -> str:
    """An activation with its own top (the release never works in place)."""
    net.layer(name, act, [bottom], [name])
    return name


def _deconv(net: NetWriter, name: str, bottom: str, num_output: int) -> str:
    """A biased 2x2/2 deconvolution: the decoder's learned upsampling."""
    net.layer(name, "Deconvolution", [bottom], [name], convolution_param=[
        ("num_output", num_output), ("bias_term", True), ("kernel_size", 2), ("stride", 2)])
    return name


def _bn(net: NetWriter, name: str, bottom: str) -> str:
    """caffe-segnet's BN in inference mode (its fillers only initialise training)."""
    net.layer(name, "BN", [bottom], [name], bn_param=[("bn_mode", Enum("INFERENCE"))])
    return name


def _conv_act(net: NetWriter, act: str, tag: str, i: int, bottom: str, num_output: int,
              kernel: int | tuple[int, int], **kw: int) -> str:
    """``conv{tag}_{i}`` and its activation ``prelu{tag}_{i}``."""
    return _act(net, act, f"prelu{tag}_{i}", _conv(net, f"conv{tag}_{i}", bottom, num_output, kernel, **kw))


def _merge(net: NetWriter, act: str, tag: str, shortcut: str, branch: str) -> str:
    """Sum the shortcut and the main branch (Eltwise's default SUM), then activate."""
    net.layer(f"eltwise{tag}_4", "Eltwise", [shortcut, branch], [f"eltwise{tag}_4"])
    return _act(net, act, f"prelu{tag}_4", f"eltwise{tag}_4")


def _regular(net: NetWriter, act: str, tag: str, bottom: str, internal: int, out: int, middle: int | str) -> str:
    """1x1 reduce, a 3x3 (dilated by ``middle`` when > 1) or asymmetric 5x1+1x5 conv, 1x1 expand; identity shortcut.

    The asymmetric pair pads 1 on both axes, so the 5x1 shrinks H by 2 and widens W by 2 and the 1x5 undoes it.
    """
    x = _conv_act(net, act, tag, 0, bottom, internal, 1)
    if middle == ASYMMETRIC:
        first = _conv(net, f"conv{tag}_1_a", x, internal, (5, 1), pad=1)
        x = _conv_act(net, act, tag, 1, first, internal, (1, 5), pad=1)
    else:
        assert isinstance(middle, int)
        x = _conv_act(net, act, tag, 1, x, internal, 3, pad=middle, dilation=middle if middle > 1 else None)
    return _merge(net, act, tag, bottom, _conv(net, f"conv{tag}_2", x, out, 1))


def _downsampling(net: NetWriter, act: str, tag: str, bottom: str, internal: int, out: int) -> tuple[str, str]:
    """2x2/2 reducing conv, 3x3, 1x1 expand; the shortcut max-pools (keeping its mask) and widens by a 1x1 conv.

    Returns the block's top and the pooling mask its decoder twin unpools with.
    """
    x = _conv_act(net, act, tag, 0, bottom, internal, 2, stride=2)
    x = _conv_act(net, act, tag, 1, x, internal, 3, pad=1)
    branch = _conv(net, f"conv{tag}_2", x, out, 1)
    pooled, mask = f"pool{tag}_4", f"pool{tag}_4_mask"
    net.layer(pooled, "Pooling", [bottom], [pooled, mask],
              pooling_param=[("pool", Enum("MAX")), ("kernel_size", 2), ("stride", 2)])
    return _merge(net, act, tag, _conv(net, f"conv{tag}_4", pooled, out, 1), branch), mask


def _upsampling(net: NetWriter, act: str, tag: str, bottom: str, mask: str, internal: int, out: int) -> str:
    """1x1 reduce, 2x2/2 deconvolution + BN, 1x1 expand; the shortcut narrows by a 1x1 conv and unpools by ``mask``."""
    x = _conv_act(net, act, tag, 0, bottom, internal, 1)
    deconv = _deconv(net, f"deconv{tag}_1", x, internal)
    x = _act(net, act, f"prelu{tag}_1", _bn(net, f"bn{tag}_1", deconv))
    branch = _conv(net, f"conv{tag}_2", x, out, 1)
    up = f"upsample{tag}_4"
    net.layer(up, "Upsample", [_conv(net, f"conv{tag}_4", bottom, out, 1), mask], [up],
              upsample_param=[("scale", 2)])
    return _merge(net, act, tag, up, branch)


def enet_cityscapes() -> NetWriter:
    net = NetWriter(
        "ENet",
        "ENet Cityscapes (Paszke et al., arXiv:1606.02147; TimoSaemann/ENet enet_deploy_final): BN merged into "
        "the convolutions, 19 classes at full resolution",
    )
    input_layer(net, 512, 1024)
    net.comment("initial block: a 3x3/2 conv (13 channels) beside a 2x2 max pool of the image (3), concatenated")
    _conv(net, "conv0_1", "data", 13, 3, stride=2, pad=1)
    pool(net, "pool0_1", "data", 2, 2)
    net.layer("concat0_1", "Concat", ["conv0_1", "pool0_1"], ["concat0_1"], concat_param=[("axis", 1)])
    x = _act(net, "PReLU", "prelu0_1", _bn(net, "bn0_1", "concat0_1"))
    masks = []
    for stage, internal, out, downsample, middles in ENCODER:
        net.comment(f"encoder stage {stage}")
        if downsample:
            x, mask = _downsampling(net, "PReLU", f"{stage}_0", x, internal, out)
            masks.append(mask)
        for block, middle in enumerate(middles, start=1):
            x = _regular(net, "PReLU", f"{stage}_{block}", x, internal, out, middle)
    for stage, internal, out, blocks in DECODER:
        net.comment(f"decoder stage {stage}")
        x = _upsampling(net, "ReLU", f"{stage}_0", x, masks.pop(), internal, out)
        for block in range(1, blocks + 1):
            x = _regular(net, "ReLU", f"{stage}_{block}", x, internal, out, 1)
    _deconv(net, "deconv6_0_0", x, NUM_CLASSES)
    return net


NETS = {"enet_cityscapes.prototxt": enet_cityscapes}
