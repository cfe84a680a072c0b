"""The published FCN and DeepLab models protoseg knows by name, torchvision-weights style.

Each entry is a frozen record of everything needed to run a released caffemodel faithfully: our deploy prototxt
(``prototxt/*.prototxt``, installed as ``protoseg.prototxt`` package data), where the authors published the
weights, the preprocessing the nets were trained with, the class list, and the score the authors reported, so a
user can check a conversion against the paper with ``protoseg eval``.

Only facts with a public source are recorded: a checksum is ``None`` where the release published none and no
trusted third party (OpenCV's test-data downloader for FCN-8s) pinned one.
"""

from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from protoseg.errors import ProtosegError

__all__ = ["VOC_CLASSES", "Score", "ZooModel", "Zoo", "get", "names", "prototxt_path"]

#: PASCAL VOC 2012 segmentation classes in label order (index 0 = background; 255 = void is not a class).
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

#: BGR means subtracted by the FCN reference code (``voc_layers.py`` / ``infer.py`` of fcn.berkeleyvision.org).
FCN_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
#: BGR means in the ``transform_param`` of every DeepLab v1/v2 test prototxt.
DEEPLAB_MEAN_BGR = (104.008, 116.669, 122.675)

_FCN_PAPER = (
    "E. Shelhamer, J. Long, T. Darrell. Fully Convolutional Networks for Semantic Segmentation. "
    "TPAMI 2017, arXiv:1605.06211 (CVPR 2015 version: arXiv:1411.4038)"
)
_DEEPLAB_V1_PAPER = (
    "L.-C. Chen, G. Papandreou, I. Kokkinos, K. Murphy, A. L. Yuille. Semantic Image Segmentation with Deep "
    "Convolutional Nets and Fully Connected CRFs. ICLR 2015, arXiv:1412.7062"
)
_DEEPLAB_V2_PAPER = (
    "L.-C. Chen, G. Papandreou, I. Kokkinos, K. Murphy, A. L. Yuille. DeepLab: Semantic Image Segmentation with "
    "Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs. TPAMI 2018, arXiv:1606.00915"
)
_FCN_README = "https://github.com/shelhamer/fcn.berkeleyvision.org (README)"


@dataclass(frozen=True)
class Score:
    """One published result: mean IoU in percent on a named split."""

    miou: float  # mean intersection over union, percent, as printed by the authors
    split: str  # the evaluation set, e.g. "VOC2012 val" or "VOC2011 seg11valid" (FCN's non-SBD subset)
    crf: bool  # whether DenseCRF post-processing was applied (protoseg's plain forward pass has none)
    source: str  # where the number is printed


@dataclass(frozen=True)
class ZooModel:
    """A released model: how to get its weights, how to feed it, what it outputs and how good it is."""

    name: str  # registry key, also the ``--model`` value on the command line
    title: str  # human-readable name
    prototxt: str  # file name inside the ``protoseg.prototxt`` package (our deploy net)
    url: str  # official download location of the weights (a caffemodel, or an archive holding it)
    archive_member: str | None  # the caffemodel inside ``url`` when ``url`` is an archive, else None
    sha1: str | None  # SHA-1 of the file at ``url``, None where no source publishes one
    input_size: tuple[int, int]  # (height, width) of the deploy prototxt's Input layer
    pad_to_input: bool  # True: the reference test pads each image (with the mean) to input_size and crops back
    mean_bgr: tuple[float, float, float]  # subtracted from 0-255 BGR pixels; no scaling
    categories: tuple[str, ...]  # class names in output-channel order
    output: str  # blob holding the per-class scores at input resolution
    scores: tuple[Score, ...]  # published results, the one matching this exact caffemodel first
    paper: str  # citation
    note: str = ""  # anything a user must know to reproduce the published number

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def prototxt_path(self) -> Path:
        """The deploy prototxt as a real file path (see :func:`prototxt_path`)."""
        return prototxt_path(self.prototxt)


class Zoo(enum.Enum):
    """Registry of the supported releases; ``Zoo.FCN8S.value`` is the :class:`ZooModel`."""

    FCN32S = ZooModel(
        name="fcn32s",
        title="FCN-32s PASCAL VOC",
        prototxt="fcn32s.prototxt",
        url="http://dl.caffe.berkeleyvision.org/fcn32s-heavy-pascal.caffemodel",
        archive_member=None,
        sha1=None,
        input_size=(500, 500),
        pad_to_input=False,
        mean_bgr=FCN_MEAN_BGR,
        categories=VOC_CLASSES,
        output="score",
        scores=(Score(63.6, "VOC2011 seg11valid", False, _FCN_README),),
        paper=_FCN_PAPER,
        note="URL from voc-fcn32s/caffemodel-url; seg11valid excludes the SBD training images from VOC2011 val",
    )
    FCN16S = ZooModel(
        name="fcn16s",
        title="FCN-16s PASCAL VOC",
        prototxt="fcn16s.prototxt",
        url="http://dl.caffe.berkeleyvision.org/fcn16s-heavy-pascal.caffemodel",
        archive_member=None,
        sha1=None,
        input_size=(500, 500),
        pad_to_input=False,
        mean_bgr=FCN_MEAN_BGR,
        categories=VOC_CLASSES,
        output="score",
        scores=(Score(65.0, "VOC2011 seg11valid", False, _FCN_README),),
        paper=_FCN_PAPER,
        note="URL from voc-fcn16s/caffemodel-url",
    )
    FCN8S = ZooModel(
        name="fcn8s",
        title="FCN-8s PASCAL VOC",
        prototxt="fcn8s.prototxt",
        url="http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",
        archive_member=None,
        # pinned by OpenCV's test-data downloader (opencv_extra testdata/dnn/download_models.py, model 'Fcn')
        sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962",
        input_size=(500, 500),
        pad_to_input=False,
        mean_bgr=FCN_MEAN_BGR,
        categories=VOC_CLASSES,
        output="score",
        scores=(
            Score(65.5, "VOC2011 seg11valid", False, _FCN_README),
            Score(67.2, "VOC2012 test", False, _FCN_README),
        ),
        paper=_FCN_PAPER,
        note="URL from voc-fcn8s/caffemodel-url",
    )
    DEEPLAB_V1_LARGEFOV = ZooModel(
        name="deeplab-v1-largefov",
        title="DeepLab-LargeFOV (v1)",
        prototxt="deeplab_v1_largefov.prototxt",
        url="http://www.cs.jhu.edu/~alanlab/ccvl/DeepLab-LargeFOV/train2_iter_8000.caffemodel",
        archive_member=None,
        sha1=None,
        input_size=(513, 513),
        pad_to_input=True,
        mean_bgr=DEEPLAB_MEAN_BGR,
        categories=VOC_CLASSES,
        output="fc8_interp",
        scores=(
            Score(70.3, "VOC2012 test", True, "arXiv:1412.7062 (DeepLab-CRF-LargeFOV, test server)"),
            Score(62.25, "VOC2012 val", False, "arXiv:1412.7062 (DeepLab-LargeFOV, before CRF)"),
            Score(67.64, "VOC2012 val", True, "arXiv:1412.7062 (DeepLab-CRF-LargeFOV)"),
        ),
        paper=_DEEPLAB_V1_PAPER,
        note=(
            "the released train2 model was fine-tuned on trainval_aug for the test server, so scoring it on VOC2012 "
            "val overstates the val numbers above (those are of the train_aug model, not released)"
        ),
    )
    DEEPLAB_V2_VGG16 = ZooModel(
        name="deeplab-v2-vgg16",
        title="DeepLab v2 VGG-16 ASPP-L",
        prototxt="deeplab_v2_vgg16.prototxt",
        url="http://liangchiehchen.com/projects/released/deeplab_aspp_vgg16/prototxt_and_model.zip",
        # assumed to follow the ResNet-101 zip's layout (train_iter_20000 = train_aug model, scored on val)
        archive_member="train_iter_20000.caffemodel",
        sha1=None,
        input_size=(513, 513),
        pad_to_input=True,
        mean_bgr=DEEPLAB_MEAN_BGR,
        categories=VOC_CLASSES,
        output="fc8_interp",
        scores=(
            Score(68.96, "VOC2012 val", False, "arXiv:1606.00915, Table 3 (ASPP-L, before CRF)"),
            Score(71.57, "VOC2012 val", True, "arXiv:1606.00915, Table 3 (ASPP-L, after CRF)"),
        ),
        paper=_DEEPLAB_V2_PAPER,
        note="release page http://liangchiehchen.com/projects/DeepLabv2_vgg.html; the zip also holds train2 "
        "(trainval_aug) weights for the test server",
    )
    DEEPLAB_V2_RESNET101 = ZooModel(
        name="deeplab-v2-resnet101",
        title="DeepLab v2 ResNet-101 MSC (COCO-pretrained)",
        prototxt="deeplab_v2_resnet101_msc.prototxt",
        url="http://liangchiehchen.com/projects/released/deeplab_aspp_resnet101/prototxt_and_model.zip",
        archive_member="train_iter_20000.caffemodel",
        sha1=None,
        input_size=(513, 513),
        pad_to_input=True,
        mean_bgr=DEEPLAB_MEAN_BGR,
        categories=VOC_CLASSES,
        output="fc1_interp",
        scores=(
            Score(76.35, "VOC2012 val", False, "arXiv:1606.00915, Table 4 (MSC+COCO+Aug+ASPP-L, before CRF)"),
            Score(77.69, "VOC2012 val", True, "arXiv:1606.00915, Table 4 (MSC+COCO+Aug+ASPP-L+CRF)"),
            Score(79.7, "VOC2012 test", True, "arXiv:1606.00915, abstract and Table 5"),
        ),
        paper=_DEEPLAB_V2_PAPER,
        note="release page http://liangchiehchen.com/projects/DeepLabv2_resnet.html; the test-server number is of "
        "the train2 (trainval_aug) weights in the same zip",
    )


_BY_NAME: dict[str, Zoo] = {member.value.name: member for member in Zoo}


def names() -> list[str]:
    """Registry keys in a stable order (the order of :class:`Zoo`)."""
    return list(_BY_NAME)


def get(name: str | Zoo | ZooModel) -> ZooModel:
    """The :class:`ZooModel` for ``name``: a registry key (``"fcn8s"``), an enum name (``"FCN8S"`` or
    ``"Zoo.FCN8S"``) or an entry itself. Unknown names raise :class:`ProtosegError` listing the known ones.
    """
    if isinstance(name, ZooModel):
        return name
    if isinstance(name, Zoo):
        return name.value
    key = str(name).strip()
    if key in _BY_NAME:
        return _BY_NAME[key].value
    enum_key = key.removeprefix("Zoo.").upper().replace("-", "_")
    if enum_key in Zoo.__members__:
        return Zoo[enum_key].value
    lowered = key.lower().replace("_", "-")
    if lowered in _BY_NAME:
        return _BY_NAME[lowered].value
    close = difflib.get_close_matches(lowered, names(), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ProtosegError(f"unknown model {name!r}; {hint}known models: {', '.join(names())}")


def _resource_dir() -> Traversable | Path:
    """The installed ``protoseg.prototxt`` package data, else the checkout's top-level ``prototxt/`` folder."""
    try:
        return resources.files("protoseg.prototxt")
    except (ModuleNotFoundError, TypeError):  # not installed as a package (a plain checkout)
        return Path(__file__).resolve().parent.parent / "prototxt"


def prototxt_path(filename: str) -> Path:
    """A filesystem path to one of the zoo's prototxts (they are plain files in every supported install)."""
    for base in (_resource_dir(), Path(__file__).resolve().parent.parent / "prototxt"):
        candidate = base / filename
        if candidate.is_file():
            return Path(str(candidate))
    raise ProtosegError(
        f"zoo prototxt {filename!r} is missing from the installation; reinstall protoseg "
        "(or run scripts/gen_zoo_prototxt.py in a checkout)"
    )
