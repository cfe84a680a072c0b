"""PyTorch -> Caffe files -> protoseg: the module's own outputs come back, at two input sizes, in every dialect.

The oracle is the torch module itself (torch's reference kernels), run on the same inputs; the Caffe side is
protoseg's reading of the written files, whose layers are tested against real Caffe elsewhere. A protoseg graph
written back must give the same blobs (bit for bit) and the same outputs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import protoseg
from protoseg.cli import main
from protoseg.errors import ProtosegError, ProtosegWarning, UnsupportedLayerError
from protoseg.io.prototxt import read_prototxt
from protoseg.io.weights import read_weights, write_weights
from protoseg.to_caffe import reference, to_caffe, write_caffe
from protoseg.verify import verify_files
from tests.conftest import FIXTURES, SHARED, materializer, need

#: The issue's bar: the Caffe net's output within 1e-5 of the output's range (max |value|) of the module's.
RANGE_TOL = 1e-5
DEMO = Path(protoseg.__file__).parent / "demo"


def _bn(c: int, seed: int, affine: bool = True) -> nn.BatchNorm2d:
    """BatchNorm2d with non-trivial statistics (eval mode uses them) and affine part."""
    g = torch.Generator().manual_seed(seed)
    m = nn.BatchNorm2d(c, affine=affine, eps=1e-3)
    m.running_mean.normal_(generator=g)
    m.running_var.uniform_(0.5, 2.0, generator=g)
    if affine:
        m.weight.data.normal_(generator=g)
        m.bias.data.normal_(generator=g)
    return m


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (stride and dilation in the 3 x 3, projection shortcut)."""

    def __init__(self, cin: int = 8, mid: int = 4, stride: int = 2, dilation: int = 2):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), _bn(mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _bn(mid, 2)
        self.conv3, self.bn3 = nn.Conv2d(mid, 4 * mid, 1, bias=False), _bn(4 * mid, 3)
        self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * mid, 1, stride, bias=False), _bn(4 * mid, 4))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.downsample(x)
        return self.relu(out)


class ASPPBlock(nn.Module):
    """A stride-2 stem, ASPP (1 x 1, two atrous 3 x 3, image pooling resized as torchvision does), projection,
    classifier, and the logits resized to the input with aligned corners (DeepLab v3's head, in small)."""

    def __init__(self, cin: int = 3, c: int = 6, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, 8, 3, 2, 1, bias=False), _bn(8, 5), nn.ReLU())
        self.branches = nn.ModuleList([
            nn.Sequential(nn.Conv2d(8, c, 1, bias=False), _bn(c, 6), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, c, 3, padding=2, dilation=2, bias=False), _bn(c, 7), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, c, 3, padding=3, dilation=3, bias=False), _bn(c, 8), nn.ReLU()),
        ])
        self.image = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, c, 1, bias=False), _bn(c, 9), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(4 * c, c, 1, bias=False), _bn(c, 10), nn.ReLU(), nn.Dropout(0.5))
        self.classifier = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        f = self.stem(x)
        pooled = F.interpolate(self.image(f), size=f.shape[-2:], mode="bilinear", align_corners=False)
        y = self.project(torch.cat([b(f) for b in self.branches] + [pooled], dim=1))
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=True)


class Grouped(nn.Module):
    """Depthwise and grouped convolutions with tuple padding, rectangular kernels and per-axis dilation."""

    def __init__(self):
        super().__init__()
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.pointwise = nn.Conv2d(6, 8, 1, bias=False)
        self.grouped = nn.Conv2d(8, 8, (3, 5), padding=(2, 1), dilation=(2, 1), groups=2, bias=False)
        self.same = nn.Conv2d(8, 4, 3, padding="same", dilation=3)
        self.prelu, self.prelu_shared = nn.PReLU(8), nn.PReLU()
        with torch.no_grad():
            self.prelu.weight.uniform_(-0.5, 0.5)
            self.prelu_shared.weight.fill_(0.3)

    def forward(self, x):
        y = self.prelu(self.pointwise(self.depthwise(x)))
        return self.same(self.prelu_shared(self.grouped(y)))


class Decoder(nn.Module):
    """Deconvolutions (grouped, dilated), gating, arithmetic with tensors and numbers."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2)
        self.up_dilated = nn.ConvTranspose2d(6, 6, 3, stride=1, padding=2, dilation=2, bias=False)
        self.gate = nn.Conv2d(6, 6, 1)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x):
        y = self.up_dilated(self.up(x))
        z = y * torch.sigmoid(self.gate(y)) - torch.tanh(y)
        return torch.add(self.act(2.0 * z + 0.5), 1.0 - y, alpha=0.5) - torch.sub(y, z, alpha=2)


class Heads(nn.Module):
    """Pooling Caffe rounds alike, global pooling by module and by mean, softmax and argmax heads."""

    def __init__(self):
        super().__init__()
        self.pool_max = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.pool_ave = nn.AvgPool2d(3, 2, 1, ceil_mode=True)
        self.global_max = nn.AdaptiveMaxPool2d(1)
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(self.pool_ave(self.pool_max(x)))
        y = y + self.global_max(y) + y.mean((2, 3), keepdim=True)
        probs = F.softmax(y, dim=1)
        return probs, probs.argmax(1, keepdim=True)


class Cropped(nn.Module):
    """FCN's head: upsample past the input, then crop back to its size at fixed offsets (by shape and by size())."""

    def __init__(self):
        super().__init__()
        self.score = nn.Conv2d(3, 4, 3, padding=20)
        self.up = nn.ConvTranspose2d(4, 4, 4, stride=2, bias=False)

    def forward(self, x):
        return self.up(self.score(x))[:, :, 9:9 + x.shape[2], 9:9 + x.size(3)]


def _reference_check(module: nn.Module, tmp_path: Path, channels: int, sizes, dialect: str | None) -> None:
    """Write at the first size; at every size, ``protoseg verify`` of the files against the module's outputs."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtosegWarning)
        x = torch.randn(2, channels, *sizes[0])
        paths = write_caffe(module, x, tmp_path / "net.prototxt", tmp_path / "net.caffemodel", dialect=dialect)
        for hw in sizes:
            x = torch.randn(2, channels, *hw)
            ref = reference(module, x, dialect=dialect)
            np.savez(tmp_path / "ref.npz", **ref)
            report = verify_files(*paths, tmp_path / "ref.npz", rtol=RANGE_TOL)
            assert report.ok, [(b.blob, b.rel_err, b.note) for b in report.blobs]
            assert len(report.blobs) >= 1


CASES = [
    pytest.param(Bottleneck, 8, [(13, 13), (20, 17)], "bvlc", id="bottleneck-bn"),
    pytest.param(ASPPBlock, 3, [(17, 17), (25, 33)], "deeplab-v2", id="aspp-deeplab-v2"),
    pytest.param(ASPPBlock, 3, [(17, 17), (25, 33)], "pspnet", id="aspp-pspnet"),
    pytest.param(ASPPBlock, 3, [(17, 17), (25, 33)], "bvlc", id="aspp-bvlc-deconvolution"),
    pytest.param(Grouped, 6, [(11, 11), (16, 23)], None, id="depthwise-grouped"),
    pytest.param(Decoder, 4, [(7, 7), (10, 13)], "bvlc", id="deconvolution"),
    pytest.param(Heads, 4, [(16, 16), (21, 30)], "bvlc", id="pooling-heads"),
    pytest.param(Cropped, 3, [(12, 15), (17, 10)], "bvlc", id="crop-to-input"),
]


@pytest.mark.parametrize("build, channels, sizes, dialect", CASES)
def test_module_round_trip_at_two_sizes(build, channels, sizes, dialect, tmp_path: Path) -> None:
    module = build().eval()
    _reference_check(module, tmp_path, channels, sizes, dialect)


def test_round_trip_outputs_directly(tmp_path: Path) -> None:
    """Without verify: protoseg.load of the files gives the module's logits (and keeps BN's statistics)."""
    module = ASPPBlock().eval()
    x = torch.randn(1, 3, 33, 25)
    with pytest.warns(ProtosegWarning, match="zoom_factor 2"):
        paths = write_caffe(module, x, tmp_path / "a.prototxt", tmp_path / "a.caffemodel", dialect="deeplab-v2")
    gm = protoseg.load(*paths)
    with torch.no_grad():
        ours, theirs = gm(x), module(x)
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= RANGE_TOL * float(theirs.abs().max())
    stored = read_weights(paths[1])
    bn = module.stem[1]
    mean, var, factor = stored["stem_1"]
    np.testing.assert_array_equal(mean, bn.running_mean.numpy())
    np.testing.assert_array_equal(var, bn.running_var.numpy())
    assert factor.tolist() == [1.0]
    np.testing.assert_array_equal(stored["stem_1_scale"][0], bn.weight.detach().numpy())


def test_what_is_written(tmp_path: Path) -> None:
    """The layers chosen for each construct, read back as a prototxt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtosegWarning)
        netparam, blobs = to_caffe(ASPPBlock().eval(), torch.zeros(1, 3, 17, 17), dialect="bvlc")
    types = {lp.name: lp.type for lp in netparam.layer}
    assert netparam.layer[0].type == "Input" and netparam.layer[0].name == "data"
    assert list(netparam.layer[0].input_param.shape[0].dim) == [1, 3, 17, 17]
    # the image pooling broadcast follows the feature map's size: no fixed size anywhere
    assert [types[n] for n in ("interpolate_plane", "interpolate_ones", "interpolate_spread", "interpolate_flat",
                               "interpolate")] == ["Convolution", "Power", "Convolution", "Flatten", "Scale"]
    assert types["interpolate_1"] == "Deconvolution"  # BVLC: the x2 aligned-corners resize as a fixed kernel
    deconv = next(lp for lp in netparam.layer if lp.name == "interpolate_1").convolution_param
    assert (deconv.kernel_h, deconv.stride_h, deconv.pad_h, deconv.group) == (3, 2, 1, 5)
    np.testing.assert_allclose(blobs["interpolate_1"][0][0, 0], np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))
    assert types["stem_1"] == "BatchNorm" and types["stem_1_scale"] == "Scale"
    assert all(lp.type != "Interp" for lp in netparam.layer)


def test_bilinear_deconvolution_matches_numpy(tmp_path: Path) -> None:
    """BVLC's fixed bilinear Deconvolution against aligned-corners interpolation written in NumPy."""

    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=3, mode="bilinear", align_corners=True)

    x = torch.randn(1, 2, 4, 5)
    with pytest.raises(UnsupportedLayerError, match="node 'interpolate'"):  # 4 -> 12: h - 1 = 3 into 11
        to_caffe(Up(), x, dialect="bvlc")

    class Zoom(nn.Module):
        def forward(self, x):
            h, w = x.shape[-2:]
            return F.interpolate(x, size=(3 * h - 2, 3 * w - 2), mode="bilinear", align_corners=True)

    with pytest.warns(ProtosegWarning, match="Deconvolution by 3 x 3"):
        paths = write_caffe(Zoom(), x, tmp_path / "z.prototxt", tmp_path / "z.caffemodel", dialect="bvlc")
    with torch.no_grad():
        ours = protoseg.load(*paths)(x).numpy()

    def aligned(a: np.ndarray, out: int, axis: int) -> np.ndarray:
        src = np.arange(out) * (a.shape[axis] - 1) / (out - 1)
        lo = np.minimum(np.floor(src).astype(int), a.shape[axis] - 2)
        t = src - lo
        shape = [1] * a.ndim
        shape[axis] = out
        t = t.reshape(shape)
        return np.take(a, lo, axis) * (1 - t) + np.take(a, lo + 1, axis) * t

    expected = aligned(aligned(x.numpy().astype(np.float64), 10, 2), 13, 3)
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)


# -- refusals ---------------------------------------------------------------------------------------------------

class _Wrap(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Nearest(nn.Module):
    def __init__(self):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        return self.upsample(x)


class _FloorPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(x)


class _PaddedCrop(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=2)

    def forward(self, x):
        return self.conv(x)[..., 1:1 + x.shape[2], 1:1 + x.shape[3]]


class _Flow(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


REFUSED = [
    pytest.param(_Nearest(), (9, 9), "bvlc", "node 'upsample' .*nearest resize", id="upsample-nearest"),
    pytest.param(_FloorPool(), (9, 9), "bvlc", "node 'pool' .*pools height 9 to 4, Caffe's ceil rounding to 5",
                 id="floor-pooling"),
    pytest.param(_Wrap(lambda x: F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=True)), (9, 9),
                 "bvlc", "node 'interpolate' .*BVLC Caffe has no Interp", id="bvlc-interpolate"),
    pytest.param(_Wrap(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")), (9, 9), "deeplab-v2",
                 "node 'interpolate' .*align_corners=None", id="not-aligned"),
    pytest.param(nn.AvgPool2d(3, 1, 1, count_include_pad=False), (9, 9), "bvlc", "count_include_pad=False",
                 id="ave-without-pad"),
    pytest.param(_Wrap(lambda x: x * x.mean(1, keepdim=True)), (9, 9), "bvlc", "node 'mean' .*whole planes",
                 id="channel-mean"),
    pytest.param(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)), (9, 9), "bvlc",
                 "node '_1' \\(Flatten '1'\\): no Caffe layer protoseg writes computes Flatten", id="linear-head"),
    pytest.param(nn.ConvTranspose2d(3, 3, 3, 2, 1, output_padding=1), (9, 9), "bvlc", "output_padding",
                 id="output-padding"),
    pytest.param(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"), (9, 9), "bvlc", "padding_mode='reflect'",
                 id="reflect-padding"),
    pytest.param(nn.Conv2d(3, 3, 4, padding="same"), (9, 9), "bvlc", "pads one side more", id="same-even-kernel"),
    pytest.param(_Wrap(lambda x: torch.cat([x, x], 1) * x.sum((2, 3), keepdim=True).repeat(1, 2, 1, 1)), (9, 9),
                 "bvlc", "node 'sum_1' \\(Tensor.sum\\): has no Caffe layer", id="unknown-method"),
    pytest.param(_Flow(), (9, 9), "bvlc", "cannot be traced by torch.fx", id="untraceable"),
    pytest.param(_Wrap(lambda x: x[:, :, 1:5]), (9, 9), "bvlc", "node 'getitem' .*the size of no tensor",
                 id="crop-to-a-number"),
    pytest.param(_Wrap(lambda x: x[:, :, ::2]), (9, 9), "bvlc", "slices with a step", id="strided-slice"),
    pytest.param(_Wrap(lambda x: x[:, 0]), (9, 9), "bvlc", "indexes with int", id="integer-index"),
    pytest.param(_Wrap(lambda x: x[1:]), (9, 9), "bvlc", "slices the batch axis", id="batch-slice"),
    pytest.param(_PaddedCrop(), (9, 9), "deeplab-v2", "DeepLab v2's Caffe has no Crop layer", id="crop-deeplab-v2"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("module, hw, dialect, message", REFUSED)
def test_refusals_name_the_node(module, hw, dialect, message) -> None:
    with pytest.raises(UnsupportedLayerError, match=message):
        to_caffe(module.eval(), torch.randn(1, 3, *hw), dialect=dialect)


def test_crop_to_a_blob_of_that_size_holds_at_the_example_size_only(tmp_path: Path) -> None:
    """A slice whose size is a tensor's only at this input size (here the pooled map's) is written as a Crop
    to that tensor, and the conversion says so; offsets differ per axis, the channel axis is cropped too."""

    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = nn.Conv2d(3, 2, 1), nn.MaxPool2d(2, ceil_mode=True)

        def forward(self, x):
            small = self.pool(self.conv(x))
            return x[:, 1:3, 2:7, 3:8] + small  # 2 x 5 x 5 of the 3 x 9 x 9 input, the pooled map's size

    with pytest.warns(ProtosegWarning, match="crop 'getitem' takes its size from"):
        netparam, _ = to_caffe(Sliced().eval(), torch.randn(1, 3, 9, 9))
    crop = next(lp for lp in netparam.layer if lp.type == "Crop" and list(lp.crop_param.offset) == [1, 2, 3])
    assert crop.crop_param.axis == 1


def test_floor_pooling_where_caffe_agrees_warns_for_other_sizes(tmp_path: Path) -> None:
    where = "pooling 'pool' rounds like Caffe only where its input height is 8 \\+ 2n"
    with pytest.warns(ProtosegWarning, match=where):
        paths = write_caffe(_FloorPool(), torch.randn(1, 3, 8, 8), tmp_path / "p.prototxt", tmp_path / "p.caffemodel")
    x = torch.randn(1, 3, 12, 6)
    with torch.no_grad():
        torch.testing.assert_close(protoseg.load(*paths, input_shapes={"data": (1, 3, 12, 6)})(x), F.max_pool2d(x, 2))


def test_unknown_dialect_and_overwrite(tmp_path: Path) -> None:
    with pytest.raises(ProtosegError, match="unknown dialect 'caffe2'"):
        to_caffe(nn.ReLU(), torch.zeros(1, 1, 2, 2), dialect="caffe2")
    paths = write_caffe(nn.ReLU(), torch.zeros(1, 1, 2, 2), tmp_path / "r.prototxt", tmp_path / "r.caffemodel")
    with pytest.raises(ProtosegError, match="exists; pass overwrite=True"):
        write_caffe(nn.ReLU(), torch.zeros(1, 1, 2, 2), *paths)
    write_caffe(nn.Sigmoid(), torch.zeros(1, 1, 2, 2), *paths, overwrite=True)
    assert [lp.type for lp in read_prototxt(paths[0]).layer] == ["Input", "Sigmoid"]


# -- protoseg graphs back to Caffe --------------------------------------------------------------------------------

SHARED_NET = """
name: "shared"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 7 } } }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "a" param { name: "w" } param { name: "b" }
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "conv_b" type: "Convolution" bottom: "a" top: "b" param { name: "w" } param { name: "b" }
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "b" top: "b" }
layer { name: "scale" type: "Scale" bottom: "b" top: "b" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "b" top: "b" }
"""


def _shared_net(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 3, 3, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    weights = {"conv_a": [w, b], "conv_b": [w, b],
               "bn": [rng.normal(size=3) * 4, rng.uniform(1, 3, size=3) * 4, np.array([4.0])],
               "scale": [rng.normal(size=3), rng.normal(size=3)]}
    (tmp_path / "shared.prototxt").write_text(SHARED_NET)
    write_weights(tmp_path / "shared.caffemodel",
                  {k: [np.asarray(a, np.float32) for a in v] for k, v in weights.items()})
    return tmp_path / "shared.prototxt", tmp_path / "shared.caffemodel"


@pytest.mark.parametrize("net", ["demo", "shared"])
def test_protoseg_graph_round_trip_after_fine_tuning(net: str, tmp_path: Path) -> None:
    paths = (DEMO / "demo.prototxt", DEMO / "demo.caffemodel") if net == "demo" else _shared_net(tmp_path)
    gm = protoseg.load(*paths)
    with torch.no_grad():  # what a few steps of fine-tuning do: change every parameter
        for i, p in enumerate(gm.parameters()):
            p.add_(0.01 * (i + 1))
    torch.save(gm, tmp_path / "gm.pt")  # the record of the source net keeps the graph picklable
    written = write_caffe(gm, None, tmp_path / "out.prototxt", tmp_path / "out.caffemodel")
    again = protoseg.load(*written)
    stored = read_weights(written[1])
    for fqn, (layer, index) in gm.meta["owners"].items():  # every blob holds the parameter's current value
        np.testing.assert_array_equal(stored[layer][index], gm.get_parameter(fqn).numpy())
    for (fqn, p), (fqn2, q) in zip(gm.named_parameters(), again.named_parameters()):
        assert fqn == fqn2
        assert torch.equal(p, q)
    x = torch.randn(*next(n.meta["shape"] for n in gm.graph.nodes if n.op == "placeholder"))
    with torch.no_grad():
        assert torch.equal(gm(x), again(x))
    if net == "shared":
        np.testing.assert_array_equal(stored["conv_b"][0], stored["conv_a"][0])  # as Caffe writes shared blobs
        assert stored["bn"][2][0] > 4.0  # BatchNorm's scale factor is kept (4 + 0.01 i), not renormalised to 1
        assert [p.name for p in read_prototxt(written[0]).layer[2].param] == ["w", "b"]


def test_protoseg_graph_keeps_its_fork(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtosegWarning)
        paths = write_caffe(ASPPBlock().eval(), torch.randn(1, 3, 17, 17), tmp_path / "p.prototxt",
                            tmp_path / "p.caffemodel", dialect="pspnet")
    gm = protoseg.load(*paths)
    with pytest.raises(ProtosegError, match="layer 'stem_1' \\(BN\\) is a layer of PSPNet's Caffe"):
        write_caffe(gm, None, tmp_path / "q.prototxt", tmp_path / "q.caffemodel", dialect="bvlc")
    written = write_caffe(gm, None, tmp_path / "q.prototxt", tmp_path / "q.caffemodel", dialect="pspnet")
    written_net = read_prototxt(written[0])
    assert written_net.layer[1].type == "BN"
    # PSPNet's Caffe has no Input layer (nor input_param): the input is declared at net level
    assert list(written_net.input) == ["data"] and list(written_net.input_shape[0].dim) == [1, 3, 17, 17]
    with pytest.raises(ProtosegError, match="fast graph"):
        to_caffe(protoseg.load(*paths, fast=True), None)


# -- the command line -------------------------------------------------------------------------------------------

def test_cli_export_caffe(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo2"
    demo = [str(DEMO / "demo.prototxt"), str(DEMO / "demo.caffemodel")]
    assert main(["export-caffe", *demo, "-o", str(out)]) == 0
    assert main(["export-caffe", *demo, "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    original = read_weights(DEMO / "demo.caffemodel")
    written = read_weights(tmp_path / "demo2.caffemodel")
    assert {k: len(v) for k, v in written.items() if v} == {k: len(v) for k, v in original.items() if v}
    for name, blobs in original.items():
        for a, b in zip(blobs, written[name]):
            np.testing.assert_array_equal(a, b)

    from safetensors.torch import save_model

    gm = protoseg.load(*demo)
    with torch.no_grad():
        gm.get_parameter("conv1_1.weight").mul_(-2.0)
    save_model(gm, str(tmp_path / "tuned.safetensors"))
    assert main(["export-caffe", *demo, "-o", str(out), "--params", str(tmp_path / "tuned.safetensors"),
                 "--force"]) == 0
    np.testing.assert_array_equal(read_weights(tmp_path / "demo2.caffemodel")["conv1_1"][0],
                                  -2.0 * original["conv1_1"][0])
    save_model(nn.Conv2d(1, 1, 1), str(tmp_path / "other.safetensors"))
    assert main(["export-caffe", *demo, "-o", str(out), "--params", str(tmp_path / "other.safetensors"),
                 "--force"]) == 2
    assert "name no parameter of this net" in capsys.readouterr().err


def test_cli_export_caffe_from_pt2(tmp_path: Path) -> None:
    demo = [str(DEMO / "demo.prototxt"), str(DEMO / "demo.caffemodel")]
    assert main(["convert", *demo, "-o", str(tmp_path / "demo.pt2")]) == 0
    assert main(["export-caffe", str(tmp_path / "demo.pt2"), "-o", str(tmp_path / "back"),
                 "--dialect", "deeplab-v2"]) == 0
    netparam = read_prototxt(tmp_path / "back.prototxt")  # DeepLab v2's Caffe: no Input layer, net-level input
    assert list(netparam.input) == ["data"] and all(lp.type != "Input" for lp in netparam.layer)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(protoseg.load(tmp_path / "back.prototxt", tmp_path / "back.caffemodel")(x),
                           protoseg.load(*demo)(x))


@pytest.mark.parametrize("fork, style", [("bvlc", "layer"), ("nvcaffe", "layer"), ("segnet", "shape"),
                                         ("crfasrnn", "shape"), ("deeplab-v1", "dim"), ("deconvnet", "dim")])
def test_inputs_are_declared_as_each_fork_reads_them(fork: str, style: str, tmp_path: Path) -> None:
    """Only BVLC and NVCaffe have the Input layer; older forks read net-level inputs (DeepLab v1 and DeconvNet
    four input_dim), as their own caffe.proto says; protoseg reads every form back to the same net."""
    prototxt, weights = _shared_net(tmp_path)
    gm = protoseg.load(prototxt, weights, fork=fork)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_caffe(gm, None, tmp_path / "w.prototxt", tmp_path / "w.caffemodel")
    # DeepLab v1's and DeconvNet's Caffe read V1 prototxts only: the V2 file says so
    assert any("reads V1 prototxts" in str(w.message) for w in caught) == (style == "dim")
    net = read_prototxt(written[0])
    assert any(lp.type == "Input" for lp in net.layer) == (style == "layer")
    assert list(net.input) == ([] if style == "layer" else ["data"])
    assert list(net.input_dim) == ([2, 3, 9, 7] if style == "dim" else [])
    assert [list(s.dim) for s in net.input_shape] == ([[2, 3, 9, 7]] if style == "shape" else [])
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(protoseg.load(*written, fork=fork)(x), gm(x))


def test_cli_writes_deeplab_v1_back_as_v2(tmp_path: Path) -> None:
    """A V1 net (enum types, ``hole``, legacy 4-D blobs) written back as V2 still computes real Caffe's blobs."""
    case_dir = need(FIXTURES / "nets" / "deeplab_v1_largefov_test")
    case = json.loads((case_dir / "case.json").read_text())
    materialize = materializer()
    weights = tmp_path / "v1.caffemodel"
    materialize.main([str(case_dir), str(weights)])
    defines = [f"-D{k}={v}" for k, v in case["defines"].items()]
    assert main(["export-caffe", str(SHARED / case["prototxt"]), str(weights), *defines, "-o",
                 str(tmp_path / "v2")]) == 0
    netparam = read_prototxt(tmp_path / "v2.prototxt")
    assert not netparam.layers and netparam.layer  # V2 layers only
    assert any(lp.convolution_param.dilation for lp in netparam.layer)  # hole became dilation
    report = verify_files(tmp_path / "v2.prototxt", tmp_path / "v2.caffemodel", case_dir / "reference.npz",
                          rtol=case.get("rtol", 1e-4))
    assert report.ok and len(report.blobs) == len(case["compared"])
    legacy, written = read_weights(weights), read_weights(tmp_path / "v2.caffemodel")
    assert {k: len(v) for k, v in written.items() if v} == {k: len(v) for k, v in legacy.items() if v}
    for name, blobs in legacy.items():
        for theirs, ours in zip(blobs, written[name]):
            np.testing.assert_array_equal(ours.reshape(theirs.shape), theirs)
    assert written["fc8_voc12"][1].shape == (21,)  # the shape the prototxt implies, not the V1 file's 1 x 1 x 1 x 21


def test_outputs_keep_their_names_and_reference_feeds_verify(tmp_path: Path) -> None:
    """A dict output names its blobs; the reference holds the input as ``data`` and every blob's own value, so
    ``protoseg verify`` compares the Caffe net with the module blob by blob."""

    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), _bn(4, 11)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x)))
            return {"features": y, "scores": torch.softmax(y, 1)}

    x, module = torch.randn(1, 3, 6, 5), Named().eval()
    paths = write_caffe(module, x, tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    assert [top for lp in read_prototxt(paths[0]).layer for top in lp.top][-2:] == ["features", "scores"]
    gm = protoseg.load(*paths)
    ref = reference(module, x, every_blob=True)
    assert {"data", "features", "scores", "conv", "bn"} <= set(ref)
    np.savez(tmp_path / "ref.npz", **ref)
    ref["bn"] = ref["bn"] + 1.0  # a wrong blob is named
    np.savez(tmp_path / "bad.npz", **ref)
    assert main(["verify", *map(str, paths), "-r", str(tmp_path / "ref.npz"), "--rtol", str(RANGE_TOL)]) == 0
    assert main(["verify", *map(str, paths), "-r", str(tmp_path / "bad.npz"), "--rtol", str(RANGE_TOL)]) == 1
    with pytest.raises(ProtosegError, match="its own Caffe net"):
        reference(gm, x)
