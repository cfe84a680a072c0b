"""DeepLab v3 ResNet-101 (protoseg.models.deeplabv3): the paper's architecture, and its round trip through Caffe.

Oracles: parameter counts from the layer tables of He et al. 2016 (table 1) and Chen et al. 2017 (section 3.3)
spelled out here, and torchvision's published ResNet-101 count; feature sizes from Caffe's conv and pool size
formulas; dilations as the paper states them; numerics from protoseg's Caffe layers (themselves tested against
real Caffe) running the exported files.
"""

from __future__ import annotations

import math
import re
from types import ModuleType

import pytest
import torch
from torch import nn

import protoseg
from protoseg.errors import ProtosegWarning
from protoseg.info import describe
from protoseg.io.prototxt import read_prototxt
from protoseg.models.deeplabv3 import DeepLabV3, ModelArgumentError, deeplabv3_resnet101
from protoseg.to_caffe import to_caffe, write_caffe
from tests.conftest import ROOT, load_script

#: torchvision's ResNet-101 (its docs: 44,549,160 parameters) without the 2048 -> 1000 fc layer.
RESNET101_NO_FC = 44_549_160 - (2048 * 1000 + 1000)
#: Round trips: the module's output and protoseg's run of the Caffe files agree within this much of the range.
ROUND_TRIP_TOLERANCE = 1e-5
#: Thin copy of the full graph for the fast tests: all 101 layers, every channel count divided by 8.
THIN = {"base_width": 8, "aspp_channels": 32}


# A layer of the paper's tables: ("conv", in, out, kernel, bias) or ("bn", channels).
Layer = tuple


def resnet101_layers() -> list[Layer]:
    """He et al. table 1: conv1 7x7 64; stages of [1x1 w, 3x3 w, 1x1 4w] x (3, 4, 23, 3), w = 64..512; a 1x1
    projection shortcut on each stage's first unit (option B); BatchNorm after every conv, no conv bias."""
    layers, cin = [("conv", 3, 64, 7, False), ("bn", 64)], 64
    for w, n in ((64, 3), (128, 4), (256, 23), (512, 3)):
        layers += [("conv", cin, 4 * w, 1, False), ("bn", 4 * w)]  # projection
        for i in range(n):
            layers += [("conv", cin if i == 0 else 4 * w, w, 1, False), ("bn", w), ("conv", w, w, 3, False),
                       ("bn", w), ("conv", w, 4 * w, 1, False), ("bn", 4 * w)]
        cin = 4 * w
    return layers


def deeplabv3_head_layers(num_classes: int = 21) -> list[Layer]:
    """Chen et al. section 3.3: 1x1 and three 3x3 convs of 256 on block4's 2048 channels, image pooling's 1x1
    conv of 256, each with BatchNorm; concat (5 x 256) -> 1x1 conv 256 + BatchNorm; 1x1 classifier with bias."""
    aspp = [("conv", 2048, 256, k, False) for k in (1, 3, 3, 3, 1)] + [("bn", 256)] * 5
    return aspp + [("conv", 5 * 256, 256, 1, False), ("bn", 256), ("conv", 256, num_classes, 1, True)]


def count(layers: list[Layer]) -> int:
    """Parameters: conv weights (and bias); BatchNorm's gamma and beta (its statistics are buffers)."""
    return sum(cin * cout * k * k + (cout if bias else 0) for _, cin, cout, k, bias in
               (layer for layer in layers if layer[0] == "conv")) + sum(2 * layer[1] for layer in layers
                                                                         if layer[0] == "bn")


def resnet101_params() -> int:
    return count(resnet101_layers())


def deeplabv3_head_params(num_classes: int = 21) -> int:
    return count(deeplabv3_head_layers(num_classes))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are many small layers: on a busy machine torch's worker threads wait for each other more
    than they compute (the file runs three times faster on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def full_os16() -> DeepLabV3:
    return deeplabv3_resnet101()


def test_resnet101_count_matches_torchvisions():
    assert resnet101_params() == RESNET101_NO_FC == 42_500_160


def test_parameter_count(full_os16):
    backbone = sum(p.numel() for name, p in full_os16.named_parameters() if not name.startswith(("aspp", "classif")))
    assert backbone == resnet101_params()
    assert n_params(full_os16) == resnet101_params() + deeplabv3_head_params() == 58_040_661


def test_parameter_count_does_not_depend_on_output_stride_or_grid():
    model = deeplabv3_resnet101(num_classes=19, output_stride=8, multi_grid=(1, 1, 1))
    assert n_params(model) == resnet101_params() + deeplabv3_head_params(19)


@pytest.mark.parametrize("output_stride, block4_rates, block3_rate, aspp_rates", [
    (16, (2, 4, 8), 1, (6, 12, 18)),  # the paper: rates = 2 * (1, 2, 4) in block4 at output stride 16
    (8, (4, 8, 16), 2, (12, 24, 36)),  # block3 dilated 2, block4 4 * (1, 2, 4); ASPP rates doubled
], ids=["os16", "os8"])
def test_dilations_follow_the_paper(output_stride, block4_rates, block3_rate, aspp_rates):
    model = DeepLabV3(output_stride=output_stride, **THIN)
    assert [u.branch2b.dilation for u in model.res5] == [(r, r) for r in block4_rates]
    assert [u.branch2b.padding for u in model.res5] == [(r, r) for r in block4_rates]
    assert {u.branch2b.dilation for u in model.res4} == {(block3_rate, block3_rate)}
    assert {u.branch2b.dilation for stage in (model.res2, model.res3) for u in stage} == {(1, 1)}
    assert [b.conv.dilation for b in model.aspp.branches[1:]] == [(r, r) for r in aspp_rates]
    first_strides = [stage[0].branch2a.stride for stage in (model.res2, model.res3, model.res4, model.res5)]
    assert first_strides == [(1, 1), (2, 2), (2, 2) if output_stride == 16 else (1, 1), (1, 1)]
    # MSRA/Caffe style: the stride is in the 1x1, never in the 3x3
    assert all(u.branch2b.stride == (1, 1) for s in (model.res2, model.res3, model.res4, model.res5) for u in s)


def test_custom_multi_grid():
    model = DeepLabV3(output_stride=16, multi_grid=(1, 2, 1), **THIN)
    assert [u.branch2b.dilation[0] for u in model.res5] == [2, 4, 2]


def caffe_feature_size(size: int, output_stride: int) -> int:
    """Caffe's sizes: conv1 floor((H + 6 - 7) / 2) + 1, pool1 ceil((H + 2 - 3) / 2) + 1 (the last window starts
    inside the image here), then one 1x1/2 conv floor((H - 1) / 2) + 1 per strided stage."""
    size = (size + 6 - 7) // 2 + 1
    size = math.ceil((size + 2 - 3) / 2) + 1
    for _ in range({16: 2, 8: 1}[output_stride]):
        size = (size - 1) // 2 + 1
    return size


@pytest.fixture(scope="module")
def thin_models() -> dict[int, DeepLabV3]:
    torch.manual_seed(0)
    return {os: DeepLabV3(output_stride=os, num_classes=5, **THIN).eval() for os in (16, 8)}


@pytest.mark.parametrize("output_stride", [16, 8], ids=["os16", "os8"])
@pytest.mark.parametrize("batch, height, width", [(2, 65, 65), (1, 97, 81), (1, 64, 50)])
def test_output_shapes(thin_models, output_stride, batch, height, width):
    model = thin_models[output_stride]
    seen = []
    hook = model.res5.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            logits = model(torch.randn(batch, 3, height, width))
    finally:
        hook.remove()
    assert seen == [(batch, 4 * 8 * 8, caffe_feature_size(height, output_stride),
                     caffe_feature_size(width, output_stride))]
    assert logits.shape == (batch, 5, height, width)


def test_full_size_features_at_513():
    # 513 -> 33 (OS 16) and 65 (OS 8), DeepLab's crop size and feature maps
    assert caffe_feature_size(513, 16) == 33 and caffe_feature_size(513, 8) == 65


@pytest.mark.parametrize("kwargs, parameter", [
    ({"output_stride": 32}, "output_stride"),
    ({"output_stride": 16.0}, "output_stride"),
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": True}, "num_classes"),
    ({"multi_grid": (1, 2)}, "multi_grid"),
    ({"multi_grid": (1, 0, 4)}, "multi_grid[1]"),
    ({"multi_grid": "124"}, "multi_grid"),
])
def test_bad_arguments_name_the_parameter(kwargs, parameter):
    with pytest.raises(ModelArgumentError, match="^" + re.escape(parameter) + " ") as info:
        deeplabv3_resnet101(**kwargs)
    assert isinstance(info.value, ValueError)


def test_builder_is_keyword_only():
    with pytest.raises(TypeError):
        deeplabv3_resnet101(21)  # type: ignore[misc]


# -- through Caffe ---------------------------------------------------------------------------------------------

def randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Statistics and affine terms away from the identity, so that a swapped or dropped Caffe blob shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)


@pytest.mark.parametrize("output_stride", [16, 8], ids=["os16", "os8"])
def test_round_trip_through_caffe_files(output_stride, tmp_path):
    """Module -> prototxt + caffemodel (DeepLab v2 dialect) -> protoseg.load: the same logits at the export size
    and at another 16k + 1 size (the exported final Interp zooms by the output stride, so it follows any)."""
    torch.manual_seed(output_stride)
    model = DeepLabV3(output_stride=output_stride, num_classes=5, **THIN)
    randomise_batchnorm(model, output_stride)
    model.eval()
    prototxt, caffemodel = tmp_path / "deeplab_v3.prototxt", tmp_path / "deeplab_v3.caffemodel"
    with pytest.warns(ProtosegWarning) as caught:
        write_caffe(model, torch.zeros(1, 3, 65, 65), prototxt, caffemodel, dialect="deeplab-v2")
    assert [only_the_final_zoom(str(w.message), output_stride) for w in caught] == [True]
    net = protoseg.load(prototxt, caffemodel)
    for batch, height, width in ((2, 65, 65), (1, 97, 81)):
        x = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected, got = model(x), net(x)
        assert got.shape == expected.shape == (batch, 5, height, width)
        spread = float(expected.max() - expected.min())
        assert spread > 0
        assert float((got - expected).abs().max()) <= ROUND_TRIP_TOLERANCE * spread


def only_the_final_zoom(note: str, output_stride: int) -> bool:
    """to_caffe's size note names one condition: the final resize zooms by the output stride (every pooling
    rounds as Caffe does at any size, and the image-level broadcast follows any size)."""
    conditions = note.split(": ", 1)[1].split("; ")
    return len(conditions) == 1 and f"Interp zoom_factor {output_stride}:" in conditions[0]


def _exporter() -> ModuleType:
    return load_script(ROOT / "scripts" / "export_deeplabv3.py")


NETS = {"deeplab_v3_resnet101_os16.prototxt": 16, "deeplab_v3_resnet101_os8.prototxt": 8}


@pytest.mark.parametrize("filename, output_stride", NETS.items(), ids=["os16", "os8"])
def test_committed_prototxt_is_the_exporters_output(filename, output_stride):
    """The file equals scripts/export_deeplabv3.py's output. The script exports at 513 x 513 (half a minute of
    full-width ResNet-101 here); 33 x 33 is also 16k + 1 and gives the same net but for the Input's size."""
    exporter = _exporter()
    assert exporter.NETS == NETS and exporter.INPUT_SIZE == 513
    text, notes = exporter.render(output_stride, size=33)
    assert len(notes) == 1
    assert only_the_final_zoom(notes[0], output_stride)
    small, full = "dim: 33\n  dim: 33\n", "dim: 513\n  dim: 513\n"  # the net-level input_shape
    assert text.count(small) == 1
    assert (ROOT / "prototxt" / filename).read_text() == text.replace(small, full), (
        f"prototxt/{filename} is stale; run scripts/export_deeplabv3.py")


@pytest.mark.parametrize("filename, output_stride", NETS.items(), ids=["os16", "os8"])
def test_info_counts_the_papers_parameters(filename, output_stride):
    """``protoseg info`` counts every stored value: the module's parameters, plus per BatchNorm Caffe's mean,
    variance and moving-average factor (2C + 1), plus the constant blobs of the image-pooling broadcast."""
    summary = describe(ROOT / "prototxt" / filename)
    assert summary["inputs"] == {"data": [1, 3, 513, 513]}
    assert summary["layers"][-1]["shapes"] == [[1, 21, 513, 513]]
    batchnorm = [layer for layer in summary["layers"] if layer["type"] == "BatchNorm"]
    paper_bn = [layer[1] for layer in resnet101_layers() + deeplabv3_head_layers() if layer[0] == "bn"]
    assert len(batchnorm) == len(paper_bn) == 110  # one per conv but the classifier: 104 in ResNet-101, 6 in the head
    statistics = sum(2 * c + 1 for c in paper_bn)
    assert sum(2 * layer["blobs"][0][0] + 1 for layer in batchnorm) == statistics
    constants = summary["total_params"] - resnet101_params() - deeplabv3_head_params() - statistics
    # the broadcast of the 1 x 1 image feature to block4's size: a 2048 -> 1 zero conv and a 1 -> 256 conv of ones
    assert constants == 2048 + 256
    assert summary["total_params"] == 58_151_491
    pooling = [layer for layer in summary["layers"] if layer["type"] == "Pooling"]
    assert [layer["name"] for layer in pooling] == ["pool1", "aspp_image_pool"]
    assert pooling[1]["shapes"] == [[1, 2048, 1, 1]]
    features = caffe_feature_size(513, output_stride)
    assert pooling[0]["shapes"] == [[1, 64, 129, 129]]
    assert summary["layers"][-2]["shapes"] == [[1, 21, features, features]]


@pytest.mark.parametrize("filename, block4_rates, aspp_rates", [
    ("deeplab_v3_resnet101_os16.prototxt", [2, 4, 8], [6, 12, 18]),
    ("deeplab_v3_resnet101_os8.prototxt", [4, 8, 16], [12, 24, 36]),
], ids=["os16", "os8"])
def test_committed_prototxt_has_the_papers_rates(filename, block4_rates, aspp_rates):
    convs = {lp.name: lp.convolution_param for lp in read_prototxt(ROOT / "prototxt" / filename).layer
             if lp.type == "Convolution"}
    assert [list(convs[f"res5_{i}_branch2b"].dilation) for i in range(3)] == [[r] for r in block4_rates]
    assert [list(convs[f"res5_{i}_branch2b"].pad) for i in range(3)] == [[r] for r in block4_rates]
    assert [list(convs[f"aspp_branches_{i}_conv"].dilation) for i in (1, 2, 3)] == [[r] for r in aspp_rates]


def test_round_trip_refuses_what_caffe_cannot_compute():
    """A resize Caffe has no layer for is refused with the node's name, not approximated."""

    class Nearest(DeepLabV3):
        def forward(self, x):
            logits = self.classifier(self.aspp(self.features(x)))
            return nn.functional.interpolate(logits, size=x.shape[-2:], mode="nearest")

    model = Nearest(num_classes=3, units=(1, 1, 1, 3), **THIN)
    with pytest.raises(protoseg.UnsupportedLayerError, match=r"node 'interpolate_1' .*align_corners"):
        to_caffe(model, torch.zeros(1, 3, 33, 33), dialect="deeplab-v2")
