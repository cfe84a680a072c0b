"""The model zoo: our deploy prototxts are the published nets, and every registry entry is complete."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import text_format

from protoseg import zoo
from protoseg.errors import ProtosegError, ProtosegWarning
from protoseg.forks import FORKS
from protoseg.io.upgrade import load_net
from protoseg.loader import open_net
from protoseg.proto import caffe_pb2
from tests.conftest import FIXTURES, PUBLISHED, ROOT, load_script, need

# Layers that feed, score or dump the net during Caffe's own test runs; a deploy net has none of them.
NOT_INFERENCE = {"Input", "Python", "ImageSegData", "ImageData", "Data", "DenseImageData", "ImageLabelmapData",
                 "WindowSegData", "MemoryData", "SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "Accuracy", "SegAccuracy",
                 "SegmentPixelIOU", "MatWrite", "Silence"}

# zoo name -> (published test net under ../shared/published, net case whose case.json holds its ${} defines)
PUBLISHED_NETS = {
    "fcn32s": ("fcn/voc-fcn32s/val.prototxt", None),
    "fcn16s": ("fcn/voc-fcn16s/val.prototxt", None),
    "fcn8s": ("fcn/voc-fcn8s/val.prototxt", None),
    "deeplab-v1-largefov": ("deeplab_v1/largefov/test.prototxt", "deeplab_v1_largefov_test"),
    "deeplab-v2-vgg16": ("deeplab_v2/vgg16/test.prototxt", "deeplab_v2_vgg16_test"),
    "deeplab-v2-resnet101": ("deeplab_v2/resnet101/test.prototxt", "deeplab_v2_resnet101_test"),
    "segnet-driving": ("segnet/segnet_model_driving_webdemo.prototxt", None),
    "bayesian-segnet-camvid": ("segnet/bayesian_segnet_camvid.prototxt", None),
    "enet-cityscapes": ("enet/enet_deploy_final.prototxt", None),
    "dilation8-voc": ("dilation/dilation8_pascal_voc_deploy.prototxt", None),
    "dilation10-cityscapes": ("dilation/dilation10_cityscapes_deploy.prototxt", None),
    "crfasrnn-voc": ("crfasrnn/TVG_CRFRNN_new_deploy.prototxt", None),
    "hed-bsds": ("hed/deploy.prototxt", None),
    "pspnet50-ade20k": ("pspnet/pspnet50_ADE20K_473.prototxt", None),
    "pspnet101-cityscapes": ("pspnet/pspnet101_cityscapes_713.prototxt", None),
    "icnet-cityscapes": ("icnet/icnet_cityscapes.prototxt", None),
}
#: Written by scripts/export_deeplabv3.py from protoseg.models (DeepLab v3 had no Caffe release, so no weights
#: and no registry entry); tests/test_deeplabv3.py checks them.
EXPORTED = {"deeplab_v3_resnet101_os16.prototxt", "deeplab_v3_resnet101_os8.prototxt"}
#: The class lists each release was trained on.
DATASETS = {zoo.VOC_CLASSES: "VOC20", zoo.CAMVID_CLASSES: "CamVid", zoo.CITYSCAPES_CLASSES: "Cityscapes",
            zoo.ADE20K_CLASSES: "ADE20K", ("edge",): "BSDS500"}


def _load_quiet(path: Path, defines: dict[str, str] | None = None) -> caffe_pb2.NetParameter:
    """Load a net, tolerating the upgrade's notices about V1-only fields it drops."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtosegWarning)
        return load_net(path, defines=defines)


def _inference_layers(net: caffe_pb2.NetParameter) -> list[caffe_pb2.LayerParameter]:
    """The layers that define the computation, with training-only fields cleared."""
    out = []
    for layer in net.layer:
        if layer.type in NOT_INFERENCE:
            continue
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(layer)
        # strict_dim is DeepLab v1's training-time flag for reshaping fc weights; it changes no computation.
        for field in ("include", "exclude", "phase", "loss_weight", "propagate_down", "strict_dim", "protoseg_line"):
            lp.ClearField(field)
        for spec in lp.param:
            spec.ClearField("lr_mult")
            spec.ClearField("decay_mult")
        # a param {} left empty said only lr/decay: drop trailing empties so "no param" equals "param {}".
        while len(lp.param) and lp.param[-1] == caffe_pb2.ParamSpec():
            del lp.param[-1]
        for holder, sub in lp.ListFields():  # fillers only initialise training (BN's scale/shift/slope too)
            if holder.name.endswith("_param") and holder.message_type is not None:
                for field, _ in sub.ListFields():
                    if field.name.endswith("filler"):
                        sub.ClearField(field.name)
        out.append(lp)
    return out


def _defines(case: str | None) -> dict[str, str] | None:
    if case is None:
        return None
    return json.loads(need(FIXTURES / "nets" / case / "case.json").read_text())["defines"]


@pytest.mark.parametrize("name", sorted(PUBLISHED_NETS))
def test_zoo_prototxt_is_the_published_net(name: str) -> None:
    published, case = PUBLISHED_NETS[name]
    theirs = _inference_layers(_load_quiet(need(PUBLISHED / published), _defines(case)))
    ours = _inference_layers(_load_quiet(zoo.get(name).prototxt_path()))
    assert [lp.name for lp in ours] == [lp.name for lp in theirs]
    for mine, ref in zip(ours, theirs):
        assert mine == ref, (
            f"layer {ref.name!r} differs from {published}:\n--- published\n{text_format.MessageToString(ref)}"
            f"--- ours\n{text_format.MessageToString(mine)}"
        )


def _generator() -> ModuleType:
    return load_script(ROOT / "scripts" / "gen_zoo_prototxt.py")


def test_committed_prototxts_match_generator() -> None:
    rendered = _generator().render_all()
    committed = {p.name for p in (ROOT / "prototxt").glob("*.prototxt")} - EXPORTED
    assert committed == set(rendered)
    for filename, text in rendered.items():
        assert (ROOT / "prototxt" / filename).read_text() == text, (
            f"prototxt/{filename} is stale; run scripts/gen_zoo_prototxt.py"
        )


def test_every_zoo_prototxt_is_registered() -> None:
    registered = {zoo.get(n).prototxt for n in zoo.names()}
    assert registered == {p.name for p in (ROOT / "prototxt").glob("*.prototxt")} - EXPORTED
    assert set(PUBLISHED_NETS) == set(zoo.names())


@pytest.mark.parametrize("name", zoo.names())
def test_registry_entry_is_complete(name: str) -> None:
    entry = zoo.get(name)
    assert entry.name == name and entry.title and entry.paper
    assert re.fullmatch(r"https?://\S+", entry.url)
    assert entry.sha1 is None or re.fullmatch(r"[0-9a-f]{40}", entry.sha1)
    assert entry.md5 is None or re.fullmatch(r"[0-9a-f]{32}", entry.md5)
    assert entry.archive_member is None or entry.url.endswith(".zip")
    assert entry.fit in zoo.FITS and (entry.fit == "tile") == (entry.tile is not None)
    assert len(entry.mean_bgr) == 3 and all(0 <= m < 130 for m in entry.mean_bgr) and entry.scale > 0
    assert len(set(entry.categories)) == entry.num_classes and all(c == c.strip() for c in entry.categories)
    dataset = DATASETS.get(entry.categories, "")
    assert dataset or entry.name == "segnet-driving"  # the one release that names no classes
    assert entry.scores or "no score" in entry.note  # say so where the release reports none
    for score in entry.scores:
        assert 0 < score.value < 100 and score.split.startswith(dataset) and score.source
        assert score.metric == "mIoU" or score.value < 1  # F-measures are fractions
    if entry.fork is not None:
        assert entry.fork in FORKS

    net = _load_quiet(entry.prototxt_path())
    first = net.layer[0]
    assert first.type == "Input" and list(first.top) == ["data"]
    assert list(first.input_param.shape[0].dim) == [1, 3, *entry.input_size]
    assert sum(1 for lp in net.layer if lp.type in NOT_INFERENCE) == 1  # the Input layer only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtosegWarning)
        opened = open_net(entry.prototxt_path(), fork=entry.fork, outputs=[entry.output])
    assert opened.net.fork == (entry.fork or opened.net.fork)
    assert opened.net.shape(entry.output)[1] == entry.num_classes  # the scores have one channel per class


def test_resnet_scales_share_every_weight() -> None:
    """The three trunks and heads of ResNet-101 MSC must name the same parameters, so one set of blobs loads."""
    net = _load_quiet(zoo.get("deeplab-v2-resnet101").prototxt_path())
    by_scale: dict[str, list[str]] = {"": [], "_res05": [], "_res075": []}
    for lp in net.layer:
        if not lp.param:
            continue
        suffix = next((s for s in ("_res075", "_res05") if s in lp.name), "")
        by_scale[suffix] += [p.name for p in lp.param]
    assert all(by_scale.values())
    assert by_scale[""] == by_scale["_res05"] == by_scale["_res075"]
    assert len(set(by_scale[""])) == len(by_scale[""])


@pytest.mark.parametrize(
    "alias, expected",
    [("fcn8s", "fcn8s"), ("FCN8S", "fcn8s"), ("Zoo.FCN16S", "fcn16s"), ("deeplab_v2_vgg16", "deeplab-v2-vgg16"),
     ("DEEPLAB-V1-LARGEFOV", "deeplab-v1-largefov")],
)
def test_get_accepts_aliases(alias: str, expected: str) -> None:
    assert zoo.get(alias).name == expected
    assert zoo.get(zoo.Zoo.FCN8S) is zoo.Zoo.FCN8S.value
    assert zoo.get(zoo.Zoo.FCN8S.value) is zoo.Zoo.FCN8S.value


def test_get_unknown_suggests_and_lists() -> None:
    with pytest.raises(ProtosegError, match=r"unknown model 'fcn8'; did you mean 'fcn8s'\? known models: fcn32s"):
        zoo.get("fcn8")
    with pytest.raises(ProtosegError, match="known models: .*deeplab-v2-resnet101") as info:
        zoo.get("unet")
    assert "did you mean" not in str(info.value)


def test_entries_are_frozen() -> None:
    entry = zoo.get("fcn32s")
    with pytest.raises(AttributeError):
        entry.url = "http://example.invalid"  # type: ignore[misc]


def test_prototxt_path_missing_is_a_clear_error() -> None:
    with pytest.raises(ProtosegError, match="missing from the installation"):
        zoo.prototxt_path("no_such_net.prototxt")
