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

__all__ = ["VOC_CLASSES", "CAMVID_CLASSES", "CITYSCAPES_CLASSES", "ADE20K_CLASSES", "FITS", "Tiling", "Score",
           "ZooModel", "Zoo", "get", "names", "prototxt_path"]

#: PASCAL VOC 2012 segmentation classes in label order (index 0 = background; 255 = void is not a class).
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

#: CamVid's 11 classes as SegNet labels them (``label_colours`` of SegNet-Tutorial's test script; 11 is void).
CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign/symbol", "fence", "car", "pedestrian", "bicyclist",
)

#: Cityscapes' 19 evaluated classes in trainId order (cityscapesScripts ``helpers/labels.py``).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

#: ADE20K (SceneParsing 150) classes, each by the first of its names in CSAILVision/sceneparsing objectInfo150.txt;
#: output channel k is ADE class k + 1 (0, "other", is never predicted).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass", "clock", "flag",
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
#: BGR means of PSPNet's and ICNet's evaluation code (subtracted in RGB there, then the channels reversed).
PSPNET_MEAN_BGR = (103.939, 116.779, 123.68)
_SEGNET_PAPER = (
    "V. Badrinarayanan, A. Kendall, R. Cipolla. SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image "
    "Segmentation. TPAMI 2017, arXiv:1511.00561"
)
_SEGNET_ZOO = "alexgkendall/SegNet-Tutorial, Example_Models/segnet_model_zoo.md"
_PSPNET_PAPER = "H. Zhao, J. Shi, X. Qi, X. Wang, J. Jia. Pyramid Scene Parsing Network. CVPR 2017, arXiv:1612.01105"
_PSPNET_README = "hszhao/PSPNet README (expected scores: single scale with flip)"
_PSPNET_TILE = ("PSPNet's evaluation (evaluation/eval_all.m) first resizes the image so its long side is "
                "{base} + 1, then slides windows; protoseg runs the windows on the image as given")
_DILATION_PAPER = ("F. Yu, V. Koltun. Multi-Scale Context Aggregation by Dilated Convolutions. ICLR 2016, "
                   "arXiv:1511.07122")


#: How a release's test code fits an image to its net, which ``protoseg run`` reproduces:
FITS = {
    "native": "the net is reshaped to each image (fully convolutional, any size)",
    "pad": "the image is padded bottom/right with the mean to the input size, and the scores cropped back",
    "resize": "the image is resized (bilinear) to the input size, and the scores resized back",
    "tile": "windows of the input size slide over the image (see ZooModel.tile) and their scores are averaged",
}


@dataclass(frozen=True)
class Tiling:
    """Sliding-window inference as a release's evaluation code does it (PSPNet, Dilation)."""

    stride: int  # step between windows, pixels
    margin: int = 0  # context each window reads beyond the pixels it labels, filled by reflection at the border
    flip: bool = False  # the horizontally mirrored window's scores are added to each window's (PSPNet)
    softmax: bool = False  # window outputs are logits, each window's go through a softmax before averaging (PSPNet)


@dataclass(frozen=True)
class Score:
    """One published result on a named split: mean IoU in percent unless ``metric`` says otherwise."""

    value: float  # as printed by the authors
    split: str  # the evaluation set, e.g. "VOC2012 val" or "VOC2011 seg11valid" (FCN's non-SBD subset)
    crf: bool  # whether CRF post-processing was applied on top of the released net
    source: str  # where the number is printed
    metric: str = "mIoU"  # e.g. "class average accuracy" (SegNet), "ODS F-measure" (HED, 0-1)


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
    fit: str  # how the release's own test fed images of other sizes: see FITS
    mean_bgr: tuple[float, float, float]  # subtracted from 0-255 BGR pixels (zeros: the release feeds raw pixels)
    categories: tuple[str, ...]  # class names in output-channel order (one name: a probability / edge map)
    output: str  # blob holding the per-class scores (or the map) at input resolution
    scores: tuple[Score, ...]  # published results, the one matching this exact caffemodel first
    paper: str  # citation
    note: str = ""  # anything a user must know to reproduce the published number
    scale: float = 1.0  # multiplies the input after the mean is subtracted, as transform_param's scale
    fork: str | None = None  # the Caffe fork that wrote the weights, when the prototxt alone does not say
    tile: Tiling | None = None  # the windows of fit="tile"
    md5: str | None = None  # MD5 of the file at ``url``, where the authors publish that instead of a SHA-1

    def __post_init__(self) -> None:
        if self.fit not in FITS or (self.fit == "tile") != (self.tile is not None):
            raise ValueError(f"zoo entry {self.name!r}: fit {self.fit!r} with tile {self.tile!r}")

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
        fit="native",
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
        fit="native",
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
        fit="native",
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
        fit="pad",
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
        fit="pad",
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
        fit="pad",
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

    SEGNET_DRIVING = ZooModel(
        name="segnet-driving",
        title="SegNet road scenes (web demo)",
        prototxt="segnet_driving.prototxt",
        url="http://mi.eng.cam.ac.uk/~agk34/resources/SegNet/segnet_weights_driving_webdemo.caffemodel",
        archive_member=None,
        sha1=None,
        input_size=(360, 480),
        fit="resize",
        mean_bgr=(0.0, 0.0, 0.0),
        categories=tuple(f"class {i}" for i in range(12)),
        output="conv1_1_D",
        scores=(),
        paper=_SEGNET_PAPER,
        note=f"from {_SEGNET_ZOO}; the release names none of its 12 classes (its palette is Scripts/camvid12.png) "
        "and reports no score; its net ends in an ArgMax, so protoseg reads the scores before it",
        fork="segnet",
    )
    BAYESIAN_SEGNET_CAMVID = ZooModel(
        name="bayesian-segnet-camvid",
        title="Bayesian SegNet CamVid",
        prototxt="bayesian_segnet_camvid.prototxt",
        url="http://mi.eng.cam.ac.uk/~agk34/resources/SegNet/bayesian_segnet_camvid.caffemodel",
        archive_member=None,
        sha1=None,
        input_size=(360, 480),
        fit="resize",
        mean_bgr=(0.0, 0.0, 0.0),
        categories=CAMVID_CLASSES,
        output="prob",
        scores=(),
        paper="A. Kendall, V. Badrinarayanan, R. Cipolla. Bayesian SegNet: Model Uncertainty in Deep Convolutional "
        "Encoder-Decoder Architectures for Scene Understanding. BMVC 2017, arXiv:1511.02680",
        note=f"from {_SEGNET_ZOO}, which reports no score; dropout samples at test time: run with --samples N for "
        "the mean and the variance the paper uses",
        fork="segnet",
    )
    ENET_CITYSCAPES = ZooModel(
        name="enet-cityscapes",
        title="ENet Cityscapes (BN merged)",
        prototxt="enet_cityscapes.prototxt",
        url="https://www.dropbox.com/sh/5wjmb5twfr5b0wo/AADEpW5a8-GSSt5pfJYCKxoOa?dl=1",
        archive_member=None,
        sha1=None,
        input_size=(512, 1024),
        fit="resize",
        mean_bgr=(0.0, 0.0, 0.0),
        categories=CITYSCAPES_CLASSES,
        output="deconv6_0_0",
        scores=(),
        paper="A. Paszke, A. Chaurasia, S. Kim, E. Culurciello. ENet: A Deep Neural Network Architecture for "
        "Real-Time Semantic Segmentation. arXiv:1606.02147",
        note="TimoSaemann/ENet enet_weights_zoo/cityscapes_weights.sh: the link is a Dropbox folder, downloaded as a "
        "zip holding the caffemodel; these Caffe weights are a re-training of the paper's Torch model and the "
        "release reports no score for them",
        fork="segnet",
    )
    DILATION8_VOC = ZooModel(
        name="dilation8-voc",
        title="Dilation8 PASCAL VOC (front end + context module)",
        prototxt="dilation8_voc.prototxt",
        url="http://dl.yf.io/dilation/models/dilation8_pascal_voc.caffemodel",
        archive_member=None,
        sha1=None,
        input_size=(900, 900),
        fit="tile",
        tile=Tiling(stride=528, margin=186),
        mean_bgr=(102.93, 111.36, 116.52),
        categories=VOC_CLASSES,
        output="prob",
        scores=(),
        paper=_DILATION_PAPER,
        note="fyu/dilation pretrained/download_pascal_voc.sh; the repository reports no score for the release; "
        "prob is at 1/8 resolution and is upsampled bilinearly, as its predict.py does",
    )
    DILATION10_CITYSCAPES = ZooModel(
        name="dilation10-cityscapes",
        title="Dilation10 Cityscapes",
        prototxt="dilation10_cityscapes.prototxt",
        url="http://dl.yf.io/dilation/models/dilation10_cityscapes.caffemodel",
        archive_member=None,
        sha1=None,
        input_size=(1396, 1396),
        fit="tile",
        tile=Tiling(stride=1024, margin=186),
        mean_bgr=(72.39, 82.91, 73.16),
        categories=CITYSCAPES_CLASSES,
        output="prob",
        scores=(),
        paper=_DILATION_PAPER,
        note="fyu/dilation pretrained/download_cityscapes.sh; the repository reports no score for the release",
    )
    CRFASRNN_VOC = ZooModel(
        name="crfasrnn-voc",
        title="CRF-as-RNN (FCN-8s + mean-field iterations), COCO + VOC",
        prototxt="crfasrnn_voc.prototxt",
        url="http://goo.gl/j7PrPZ",
        archive_member=None,
        # the model card's sha1 (torrvision/crfasrnn python-scripts/README.md)
        sha1="bfda5c5149d566aa56695789fa9a08e7a7f3070a",
        input_size=(500, 500),
        fit="pad",
        mean_bgr=FCN_MEAN_BGR,
        categories=VOC_CLASSES,
        output="pred",
        scores=(Score(73.0, "VOC2012 val, reduced (346 images)", False,
                      "torrvision/crfasrnn python-scripts/README.md (model card)"),),
        paper="S. Zheng, S. Jayasumana, B. Romera-Paredes, V. Vineet, Z. Su, D. Du, C. Huang, P. H. S. Torr. "
        "Conditional Random Fields as Recurrent Neural Networks. ICCV 2015, arXiv:1502.03240",
        note="TVG_CRFRNN_COCO_VOC.caffemodel (python-scripts/download_trained_model.sh); the CRF is inside the net; "
        "the mean is the model card's (the Python demo since 2017 subtracts it in RGB order)",
        fork="crfasrnn",
    )
    HED_BSDS = ZooModel(
        name="hed-bsds",
        title="HED edge detection, BSDS500",
        prototxt="hed_bsds.prototxt",
        fork="hed",  # its Crop layers infer their offsets, as HED's Caffe did
        url="https://vcl.ucsd.edu/hed/hed_pretrained_bsds.caffemodel",
        archive_member=None,
        sha1=None,
        input_size=(500, 500),
        fit="native",
        mean_bgr=FCN_MEAN_BGR,
        categories=("edge",),
        output="sigmoid-fuse",
        scores=(
            Score(0.790, "BSDS500 test", False, "s9xie/hed README (fusion output)", metric="ODS F-measure"),
            Score(0.808, "BSDS500 test", False, "s9xie/hed README (fusion output)", metric="OIS F-measure"),
        ),
        paper="S. Xie, Z. Tu. Holistically-Nested Edge Detection. ICCV 2015, arXiv:1504.06375",
        note="an edge probability map (run writes it as a grey PNG); the benchmark thins edges with non-maximum "
        "suppression first (Dollar's edges toolbox), which protoseg does not do",
    )
    PSPNET50_ADE20K = ZooModel(
        name="pspnet50-ade20k",
        title="PSPNet ResNet-50 ADE20K",
        prototxt="pspnet50_ade20k.prototxt",
        url="https://drive.google.com/file/d/1SyCa_mEB-WiwvnqyBBBkWycS1zQDtDzW/view?usp=sharing",
        archive_member=None,
        sha1=None,
        input_size=(473, 473),
        fit="tile",
        tile=Tiling(stride=316, flip=True, softmax=True),
        mean_bgr=PSPNET_MEAN_BGR,
        categories=ADE20K_CLASSES,
        output="conv6_interp",
        scores=(Score(41.68, "ADE20K val", False, _PSPNET_README),),
        paper=_PSPNET_PAPER,
        note=_PSPNET_TILE.format(base=512) + "; label k is ADE20K class k + 1",
        fork="pspnet",
    )
    PSPNET101_CITYSCAPES = ZooModel(
        name="pspnet101-cityscapes",
        title="PSPNet ResNet-101 Cityscapes",
        prototxt="pspnet101_cityscapes.prototxt",
        url="https://drive.google.com/file/d/1-Me01pX1KUsut_7l6uJXkIbaBxxSVgX0/view?usp=sharing",
        archive_member=None,
        sha1=None,
        input_size=(713, 713),
        fit="tile",
        tile=Tiling(stride=476, flip=True, softmax=True),
        mean_bgr=PSPNET_MEAN_BGR,
        categories=CITYSCAPES_CLASSES,
        output="conv6_interp",
        scores=(Score(79.70, "Cityscapes val", False, _PSPNET_README),),
        paper=_PSPNET_PAPER,
        note=_PSPNET_TILE.format(base=2048),
        fork="pspnet",
    )
    ICNET_CITYSCAPES = ZooModel(
        name="icnet-cityscapes",
        title="ICNet Cityscapes (trainval, 90k iterations, BN merged)",
        prototxt="icnet_cityscapes.prototxt",
        url="https://drive.google.com/file/d/19SRLIqLiKCgYnt305A8J0Pre9H-vuZ-u/view?usp=sharing",
        archive_member=None,
        sha1=None,
        md5="4f4dd9eecd465dd8de7e4cf88ba5d5d5",  # hszhao/ICNet README
        input_size=(1025, 2049),
        fit="resize",
        mean_bgr=PSPNET_MEAN_BGR,
        categories=CITYSCAPES_CLASSES,
        output="conv6_interp",
        scores=(Score(69.5, "Cityscapes test", False, "hszhao/ICNet README (trainval_90k model)"),),
        paper="H. Zhao, X. Qi, X. Shen, J. Shi, J. Jia. ICNet for Real-Time Semantic Segmentation on High-Resolution "
        "Images. ECCV 2018, arXiv:1704.08545",
        note="icnet_cityscapes_trainval_90k.caffemodel; its evaluation resizes every image to 1025 x 2049",
        fork="pspnet",
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
