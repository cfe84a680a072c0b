"""Every published prototxt parses, names its fork, infers shapes, converts and runs; fixed-size nets say so;
the paper's parameter counts hold."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from protoseg.errors import ShapeError
from protoseg.graph import to_graph
from protoseg.info import describe
from protoseg.io.weights import write_weights
from protoseg.loader import open_net
from tests.conftest import PUBLISHED

DEFINES = {"NET_ID": "net", "EXP": "voc12", "DATA_ROOT": "/d", "TEST_SET": "val", "TRAIN_SET": "train",
           "FEATURE_DIR": "/f", "NUM_LABELS": "21", "MODEL": "m", "LIST_DIR": "/l"}

#: The Caffe each folder's files were written for; files that use nothing fork-specific read as BVLC Caffe.
FORK = {
    "crfasrnn": "crfasrnn", "deconvnet": "deconvnet", "deeplab_v1": "deeplab-v1", "deeplab_v2": "deeplab-v2",
    "dilation": "bvlc", "enet": "segnet", "fcn": "bvlc", "fcn_2016_early": "bvlc", "hed": "hed",
    "icnet": "pspnet", "opencv": "bvlc", "pspnet": "pspnet", "seed_caffe_segmentation": "pspnet",
    "segnet": "segnet",
}
FORK_OF_FILE = {
    "hed/deploy.prototxt": "bvlc",  # only BVLC layers (Input, parameterless Crop)
    "icnet/icnet_cityscapes.prototxt": "deeplab-v2",  # BN merged away: only Interp, which DeepLab v2 has too
    "seed_caffe_segmentation/DeepLabv2-VGG16_deploy.prototxt": "bvlc",  # Input, convolutions, Eltwise
    "seed_caffe_segmentation/DeepLabv2-VGG16_train.prototxt": "deeplab-v2",
}
#: SegNet's data layer gives no size and its Upsamples fix one: CamVid's 360 x 480.
NATIVE = {"segnet/segnet_inference.prototxt": (1, 3, 360, 480),
          "segnet/bayesian_segnet_inference.prototxt": (1, 3, 360, 480),
          "segnet/segnet_basic_inference.prototxt": (1, 3, 360, 480)}
#: Sizes tried, smallest first, for a quick forward pass.
SMALL = [(64, 64), (97, 123), (360, 480)]


def _published() -> list[Path]:
    return sorted(PUBLISHED.rglob("*.prototxt")) if PUBLISHED.exists() else []


def _rel(path: Path) -> str:
    return str(path.relative_to(PUBLISHED))


def _open(path: Path, shape=None, weights=None):
    rel = _rel(path)
    shapes = {"data": shape or NATIVE[rel]} if shape or rel in NATIVE else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_net(path, weights, defines=DEFINES, input_shapes=shapes,
                        phase="TRAIN" if "train" in path.name else "TEST")


@pytest.mark.parametrize("path", _published(), ids=_rel)
def test_published_prototxt_builds_and_names_its_fork(path: Path) -> None:
    rel = _rel(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = describe(path, defines=DEFINES, phase="TRAIN" if "train" in path.name else "TEST",
                           input_shapes={"data": NATIVE[rel]} if rel in NATIVE else None)
    assert summary["layers"] and summary["outputs"]
    assert all(all(d > 0 for s in layer["shapes"] for d in s) for layer in summary["layers"])
    assert summary["fork"]["name"] == FORK_OF_FILE.get(rel, FORK[rel.split("/")[0]]), summary["fork"]
    assert not summary["fork"]["unexplained"]


def _small(path: Path):
    """The net at the smallest of SMALL it takes, or None for a net that takes one size only (or a big one)."""
    net = _open(path).net
    if len(net.inputs) != 1 or any(layer.converter.fixed_size() for layer in net.layers):
        return None
    for h, w in SMALL:
        try:
            return _open(path, (1, 3, h, w))
        except ShapeError:
            continue
    return None


@pytest.mark.parametrize("path", _published(), ids=_rel)
def test_published_net_runs_at_a_small_size_or_says_why_not(path: Path) -> None:
    opened = _small(path)
    if opened is None:  # a fixed-size net: another size must be refused with the reason
        net = _open(path).net
        if not any(layer.converter.fixed_size() for layer in net.layers):
            pytest.skip("takes large inputs only (no padding, like Dilation) or several inputs")
        (name, shape), = [(net.caffe_name[k], v) for k, v in net.inputs.items() if len(v) == 4][:1]
        with pytest.raises(ShapeError, match="takes only the input size it was built for|give the input size"):
            _open(path, (shape[0], shape[1], shape[2] + 32, shape[3] + 32))
        return
    gm = to_graph(opened.net)
    x = torch.randn(*next(iter(opened.net.inputs.values())))
    with torch.no_grad():
        out = gm(x)
    outs = out.values() if isinstance(out, dict) else [out]
    assert all(torch.isfinite(o).all() for o in outs)


#: One file per fork-specific weights layout, small enough to write a caffemodel for in a test.
WEIGHTS_CASES = ["enet/enet_deploy.prototxt", "segnet/segnet_basic_camvid.prototxt", "hed/deploy.prototxt",
                 "icnet/icnet_cityscapes_bnnomerge.prototxt", "pspnet/pspnet50_ADE20K_473.prototxt"]


@pytest.mark.parametrize("rel", WEIGHTS_CASES)
def test_published_net_takes_weights_that_fit_it(rel: str, tmp_path: Path) -> None:
    path = PUBLISHED / rel
    if not path.exists():
        pytest.skip(f"{path} is absent")
    net = _open(path).net
    rng = np.random.default_rng(0)
    blobs = {layer.name: [rng.standard_normal(s).astype(np.float32) * 0.01 for s in layer.blob_shapes]
             for layer in net.layers if layer.blob_shapes}
    weights = tmp_path / "w.caffemodel"
    write_weights(weights, blobs)
    opened = _open(path, weights=weights)
    assert opened.report.ok, opened.report.problems
    gm = opened.graph()
    first = next(layer for layer in opened.net.layers if layer.blob_shapes)
    module = gm.get_submodule(next(a for a, owner in gm.meta["owners"].items() if owner[0] == first.name)
                              .rsplit(".", 1)[0])
    assert any(torch.equal(p, torch.from_numpy(blobs[first.name][0]).reshape(p.shape)) for p in module.parameters())


@pytest.mark.parametrize(
    "relative, params",
    [
        ("deeplab_v1/largefov/test.prototxt", 20_505_429),
        ("deeplab_v1/deeplab_base/test.prototxt", 65_140_565),
        ("deeplab_v2/resnet101/test.prototxt", 44_153_980),
    ],
)
def test_paper_parameter_counts(relative: str, params: int, published_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert describe(published_dir / relative, defines=DEFINES)["total_params"] == params
