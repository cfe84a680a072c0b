"""Bringing any Caffe net definition to the V2 format, with Caffe's own upgrade semantics, in pure Python.

Mirrors ``UpgradeNetAsNeeded`` (BVLC ``src/caffe/util/upgrade_proto.cpp``) step by step: V0 → V1 (padding
layers folded into the conv/pool they feed), old data-transformation fields → ``transform_param``, V1 → V2
(enum types → type strings, including the DeepLab v1 fork's enum values), ``input:`` fields → an ``Input``
layer, old BatchNorm ``param`` specs; then DeepLab v1's ``hole`` → BVLC's ``dilation``. :func:`filter_net`
mirrors ``Net::FilterNet``/``StateMeetsRule`` (``src/caffe/net.cpp``). Everything downstream of
:func:`load_net` sees only V2 layers with ``dilation``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protoseg.errors import LayerParamError, ParseError, ProtosegError, ProtosegWarning, layer_error
from protoseg.io.prototxt import read_prototxt
from protoseg.proto import caffe_pb2

__all__ = ["filter_net", "load_net", "upgrade_net"]

NetParameter = caffe_pb2.NetParameter
V1Layer = caffe_pb2.V1LayerParameter

#: V1 enum name → V2 type string. BVLC's ``UpgradeV1LayerType`` table, then the DeepLab v1 fork's enum values
#: (registered there by enum with the layer classes ``<Name>Layer``; the v2 fork registers the same classes
#: as ``<Name>``, e.g. ``Interp``, ``ImageSegData``, ``MatWrite``, ``SegAccuracy``, ``DenseCRF``).
V1_TYPE_NAMES: dict[str, str] = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
    # DeepLab v1 fork (open-cv/deeplab-v1 caffe.proto + REGISTER_LAYER_CLASS(ENUM, <Name>Layer)).
    "ADAPTIVE_BIAS_CHANNEL": "AdaptiveBiasChannel",
    "BIAS_CHANNEL": "BiasChannel",
    "CENSOR_LABEL": "CensorLabel",
    "CHANNEL_AGGREGATOR": "ChannelAggregator",
    "DENSE_CRF": "DenseCRF",
    "DOMINANT_CHANNEL": "DominantChannel",
    "GAIN_CHANNEL": "GainChannel",
    "HISTOGRAM": "Histogram",
    "IGNORE_OVERLAY": "IgnoreOverlay",
    "IMAGE_SEG_DATA": "ImageSegData",
    "INTERP": "Interp",
    "MAT_READ": "MatRead",
    "MAT_WRITE": "MatWrite",
    "ONEHOT": "OneHot",
    "PADDING": "Padding",
    "RELATIVE_ERROR": "RelativeError",
    "SEG_ACCURACY": "SegAccuracy",
    "UNIQUE_LABEL": "UniqueLabel",
    # DeconvNet's fork (HyeonwooNoh/caffe: V1 only, layer classes <Name>Layer registered by enum), whose CROP is
    # also CRF-as-RNN's and HED's coordinate-map crop; CRF-as-RNN's 2015 fork (torrvision/crfasrnn).
    "CROP": "Crop",
    "BN": "BN",
    "UNPOOLING": "Unpooling",
    "ELTWISE_ACCURACY": "EltwiseAccuracy",
    "RED_SOFTMAX_LOSS": "RedSoftmaxWithLoss",
    "RED_ACCURACY": "RedAccuracy",
    "BIN_ACCURACY": "BinaryAccuracy",
    "WINDOW_SEG_DATA": "WindowSegData",
    "WINDOW_INST_SEG_DATA": "WindowInstSegData",
    "WINDOW_CLS_DATA": "WindowClsData",
    "WINDOW_SEG_BINARY": "WindowSegBinary",
    "SELECT_SEG_BINARY": "SelectSegBinary",
    "DROPOUT_CHANNEL": "DropoutChannel",
    "MULTI_STAGE_MEANFIELD": "MultiStageMeanfield",
    "SIMPLE_FAST_MEANFIELD": "SimpleFastMeanfield",
}

#: V0 type string → V1 enum name (BVLC ``UpgradeV0LayerType``).
V0_TYPE_NAMES: dict[str, str] = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

_ANY = "*"  # a V0 field that goes to the same place whatever the layer type
_DATA_LAYERS = ("data", "hdf5_data", "images", "window_data")

#: V0 field → {V0 type (or _ANY): (V1 ``*_param`` field, field inside it)} (BVLC ``UpgradeV0LayerParameter``).
V0_FIELD_MAP: dict[str, dict[str, tuple[str, str]]] = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"), "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"), "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"), "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {_ANY: ("transform_param", "scale")},
    "meanfile": {_ANY: ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"), "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"), "window_data": ("window_data_param", "batch_size")},
    "cropsize": {_ANY: ("transform_param", "crop_size")},
    "mirror": {_ANY: ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", "")},
}

#: V1 data layers whose own params once held the transformation fields (BVLC ``UpgradeNetDataTransformation``).
_DATA_TRANSFORM_LAYERS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

#: V1 fields with dedicated handling in :func:`_upgrade_v1_layer`; every other field is copied by name.
_V1_SPECIAL = frozenset(
    {"bottom", "top", "name", "include", "exclude", "type", "blobs", "param", "blob_share_mode", "blobs_lr",
     "weight_decay", "loss_weight", "layer"}
)


def upgrade_net(net: NetParameter) -> NetParameter:
    """Return a V2 copy of ``net`` (any version), upgraded as Caffe's ``UpgradeNetAsNeeded`` does, plus hole.

    Emits :class:`ProtosegWarning` for anything the upgrade has to drop.
    """
    out = NetParameter()
    out.CopyFrom(net)
    if len(out.layer) and len(out.layers):
        raise ParseError(
            f"net {out.name!r} mixes V2 'layer' and V1 'layers' definitions; Caffe refuses to upgrade it too: "
            "write every block in one format"
        )
    if any(layer.HasField("layer") for layer in out.layers):
        out = _upgrade_v0_net(out)
    _upgrade_data_transformation(out)
    if len(out.layers):
        _upgrade_v1_net(out)
    if len(out.input) or len(out.input_dim) or len(out.input_shape):
        _upgrade_input(out)
    _upgrade_batch_norm(out)
    for layer in out.layer:
        _upgrade_hole(layer)
    return out


def filter_net(
    net: NetParameter, phase: str | int = "TEST", stages: Iterable[str] = (), level: int = 0
) -> NetParameter:
    """Keep the layers of V2 ``net`` that Caffe keeps in this state (``Net::FilterNet``).

    As Caffe's ``Net`` constructor does, ``phase`` and ``level`` replace the file's ``state`` and ``stages``
    are added to its stages; the result carries that state.
    """
    out = NetParameter()
    out.CopyFrom(net)
    out.state.phase = _phase(phase)
    out.state.level = level
    out.state.stage.extend([stages] if isinstance(stages, str) else stages)
    del out.layer[:]
    for layer in net.layer:
        if len(layer.include) and len(layer.exclude):
            raise layer_error(
                LayerParamError, layer.name, layer.type,
                "has both include and exclude rules; Caffe accepts either include rules or exclude rules, not both",
            )
        if layer.include:
            keep = any(_meets(out.state, rule) for rule in layer.include)
        else:
            keep = not any(_meets(out.state, rule) for rule in layer.exclude)
        if keep:
            out.layer.add().CopyFrom(layer)
    return out


def load_net(
    path: str | Path,
    defines: Mapping[str, object] | None = None,
    phase: str | int = "TEST",
    stages: Iterable[str] = (),
    *,
    level: int = 0,
) -> NetParameter:
    """Read, upgrade and filter a prototxt: the one V2 ``NetParameter`` the rest of protoseg works from."""
    return filter_net(upgrade_net(read_prototxt(path, defines)), phase, stages, level)


# --------------------------------------------------------------------------------------------- filtering


def _phase(phase: str | int) -> int:
    if isinstance(phase, str):
        try:
            return caffe_pb2.Phase.Value(phase.upper())
        except ValueError:
            pass
    elif phase in caffe_pb2.Phase.values():
        return int(phase)
    raise ProtosegError(f"phase must be TRAIN or TEST, got {phase!r}")


def _meets(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """Caffe's ``StateMeetsRule``: every condition the rule sets must hold."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(stage not in state.stage for stage in rule.stage):
        return False
    return not any(stage in state.stage for stage in rule.not_stage)


# ----------------------------------------------------------------------------------------------- V0 → V1


def _upgrade_v0_net(net: NetParameter) -> NetParameter:
    """BVLC ``UpgradeV0Net``: fold padding layers, then translate each V0 layer; keeps only what V0 had."""
    folded = _fold_v0_padding(net)
    out = NetParameter()
    if net.HasField("name"):
        out.name = net.name
    for v0 in folded:
        out.layers.add().CopyFrom(_upgrade_v0_layer(v0))
    out.input.extend(net.input)
    out.input_dim.extend(net.input_dim)
    if net.HasField("force_backward"):
        out.force_backward = net.force_backward
    return out


def _fold_v0_padding(net: NetParameter) -> list[V1Layer]:
    """V0 ``padding`` layers become the ``pad`` of the conv/pool layer they feed (``UpgradeV0PaddingLayers``)."""
    last_top: dict[str, int] = {name: -1 for name in net.input}
    kept: list[V1Layer] = []
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type != "padding":
            copy = V1Layer()
            copy.CopyFrom(conn)
            kept.append(copy)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise layer_error(
                    LayerParamError, v0.name, v0.type, f"bottom {blob!r} is not the top of any earlier layer or input"
                )
            source_index = last_top[blob]
            if source_index < 0:
                continue
            source = net.layers[source_index]
            if source.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise layer_error(
                    LayerParamError, v0.name, v0.type,
                    f"takes padding layer {source.layer.name!r} as input; only conv and pool layers can",
                )
            if len(conn.bottom) != 1 or len(source.bottom) != 1 or len(source.top) != 1:
                raise layer_error(
                    LayerParamError, v0.name, v0.type,
                    f"padding layer {source.layer.name!r} can be folded only with one bottom and one top each",
                )
            kept[-1].layer.pad = source.layer.pad
            kept[-1].bottom[j] = source.bottom[0]
        for blob in conn.top:
            last_top[blob] = i
    return kept


def _upgrade_v0_layer(conn: V1Layer) -> V1Layer:
    """BVLC ``UpgradeV0LayerParameter``: one V0 layer (inside ``layers { layer { ... } }``) to a V1 layer."""
    out = V1Layer()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    out.protoseg_line = conn.protoseg_line
    if not conn.HasField("layer"):
        return out
    v0 = conn.layer
    v0_type = v0.type
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if v0_type not in V0_TYPE_NAMES:
            raise layer_error(
                ParseError, v0.name, v0_type,
                f"unknown V0 layer type; known V0 types: {', '.join(sorted(V0_TYPE_NAMES))}",
            )
        out.type = V1Layer.LayerType.Value(V0_TYPE_NAMES[v0_type])
    for blob in v0.blobs:
        out.blobs.add().CopyFrom(blob)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    dropped = []
    for fd, value in v0.ListFields():
        if fd.name in ("name", "type", "blobs", "blobs_lr", "weight_decay"):
            continue
        targets = V0_FIELD_MAP.get(fd.name, {})
        target = targets.get(v0_type) or targets.get(_ANY)
        if target is None:
            dropped.append(fd.name)
            continue
        param_name, field_name = target
        param = getattr(out, param_name)
        if not field_name:
            param.CopyFrom(value)
        else:
            _assign(param, field_name, fd, value)
    if dropped:
        _warn(f"V0 layer {v0.name!r} ({v0_type}): Caffe's upgrade has no place for {', '.join(dropped)}; dropped")
    return out


def _assign(message: Message, name: str, source: FieldDescriptor, value: object) -> None:
    """Set ``message.name`` from a V0 value: append to repeated fields, map enums by value name."""
    target = message.DESCRIPTOR.fields_by_name[name]
    if target.type == FieldDescriptor.TYPE_ENUM and source.type == FieldDescriptor.TYPE_ENUM:
        value = target.enum_type.values_by_name[source.enum_type.values_by_number[value].name].number
    if target.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(message, name).CopyFrom(value)
    elif target.is_repeated:
        getattr(message, name).append(value)
    else:
        setattr(message, name, value)


# ------------------------------------------------------------------------------------ data transformation


def _upgrade_data_transformation(net: NetParameter) -> None:
    """Move V1 data layers' own ``scale``/``mean_file``/``crop_size``/``mirror`` into ``transform_param``."""
    for layer in net.layers:
        param_name = _DATA_TRANSFORM_LAYERS.get(_v1_type_name(layer))
        if param_name is None or not layer.HasField(param_name):
            continue
        param = getattr(layer, param_name)
        for name in _TRANSFORM_FIELDS:
            if name in param.DESCRIPTOR.fields_by_name and param.HasField(name):
                setattr(layer.transform_param, name, getattr(param, name))
                param.ClearField(name)


# ----------------------------------------------------------------------------------------------- V1 → V2


def _v1_type_name(layer: V1Layer) -> str:
    return V1Layer.LayerType.Name(layer.type)


def _upgrade_v1_net(net: NetParameter) -> None:
    """BVLC ``UpgradeV1Net``, in place: every ``layers`` entry becomes a ``layer``."""
    v1_layers = list(net.layers)
    del net.layers[:]
    dropped: dict[str, list[str]] = {}
    for v1 in v1_layers:
        for name in _upgrade_v1_layer(v1, net.layer.add()):
            dropped.setdefault(name, []).append(v1.name)
    if dropped:
        listed = "; ".join(f"{name} (layers {', '.join(map(repr, layers))})" for name, layers in dropped.items())
        _warn(f"net {net.name!r}: V2 layers have no place for {listed}; dropped in the V1 → V2 upgrade")


def _upgrade_v1_layer(v1: V1Layer, out: caffe_pb2.LayerParameter) -> list[str]:
    """BVLC ``UpgradeV1LayerParameter``, widened to copy every field the union schema shares by name.

    Returns the names of the set fields that V2 has no place for.
    """
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    for rule in v1.include:
        out.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        out.exclude.add().CopyFrom(rule)
    if v1.HasField("type"):
        enum_name = _v1_type_name(v1)
        if enum_name not in V1_TYPE_NAMES:
            raise layer_error(ParseError, v1.name, enum_name, "no V2 type string is known for this V1 layer type")
        out.type = V1_TYPE_NAMES[enum_name]
    for blob in v1.blobs:
        out.blobs.add().CopyFrom(blob)
    count = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for _ in range(count):
        out.param.add()
    for spec, name in zip(out.param, v1.param):
        spec.name = name
    for spec, mode in zip(out.param, v1.blob_share_mode):
        spec.share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(V1Layer.DimCheckMode.Name(mode))
    for spec, lr in zip(out.param, v1.blobs_lr):
        spec.lr_mult = lr
    for spec, decay in zip(out.param, v1.weight_decay):
        spec.decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    targets = out.DESCRIPTOR.fields_by_name
    dropped = []
    for fd, value in v1.ListFields():
        if fd.name in _V1_SPECIAL:
            continue
        target = targets.get(fd.name)
        if target is None or target.type != fd.type or target.is_repeated != fd.is_repeated or (
            fd.message_type is not None and target.message_type.full_name != fd.message_type.full_name
        ):
            dropped.append(fd.name)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.is_repeated:
                for item in value:
                    getattr(out, fd.name).add().CopyFrom(item)
            else:
                getattr(out, fd.name).CopyFrom(value)
        elif fd.is_repeated:
            getattr(out, fd.name).extend(value)
        else:
            setattr(out, fd.name, value)
    if v1.HasField("layer"):
        dropped.append("layer (a V0 definition)")
    return dropped


# -------------------------------------------------------------------------------------------- input fields


def _upgrade_input(net: NetParameter) -> None:
    """BVLC ``UpgradeNetInput``: ``input:`` + ``input_dim``/``input_shape`` become a first ``Input`` layer."""
    names = list(net.input)
    if len(net.input_shape):
        if len(net.input_shape) != len(names):
            raise ParseError(
                f"net {net.name!r}: {len(names)} 'input' fields but {len(net.input_shape)} 'input_shape' fields; "
                "give one input_shape per input"
            )
        shapes = [list(shape.dim) for shape in net.input_shape]
    elif len(net.input_dim):
        if len(net.input_dim) != 4 * len(names):
            raise ParseError(
                f"net {net.name!r}: {len(names)} 'input' fields but {len(net.input_dim)} 'input_dim' values; "
                "give four (num, channels, height, width) per input"
            )
        dims = list(net.input_dim)
        shapes = [dims[4 * i : 4 * i + 4] for i in range(len(names))]
    else:
        shapes = []
        if names:
            _warn(
                f"net {net.name!r}: input {', '.join(map(repr, names))} has no input_dim/input_shape; "
                "dropped as Caffe does (add an Input layer with a shape)"
            )
    if shapes:
        layer = caffe_pb2.LayerParameter(name="input", type="Input", top=names)
        for dims in shapes:
            layer.input_param.shape.add().dim.extend(dims)
        rest = list(net.layer)
        del net.layer[:]
        net.layer.add().CopyFrom(layer)
        for other in rest:
            net.layer.add().CopyFrom(other)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


# ---------------------------------------------------------------------------------- BatchNorm, hole, warn


def _upgrade_batch_norm(net: NetParameter) -> None:
    """Caffe 1.0 ``UpgradeNetBatchNorm``: old BatchNorm's three param specs get lr_mult = decay_mult = 0.

    (An earlier Caffe dropped the specs; 1.0 keeps them, so a ``name`` that shares statistics survives.)
    """
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


def _upgrade_hole(layer: caffe_pb2.LayerParameter) -> None:
    """DeepLab v1's ``hole``/``hole_h``/``hole_w`` → ``dilation``: the v1 fork's im2col spaces kernel taps
    ``hole`` apart (effective kernel ``(k - 1) * hole + 1``), exactly BVLC's dilation."""
    if not layer.HasField("convolution_param"):
        return
    conv = layer.convolution_param
    fields = conv.DESCRIPTOR.fields_by_name
    if "hole" not in fields:
        return
    has = {name: conv.HasField(name) for name in ("hole", "hole_h", "hole_w")}
    if not any(has.values()):
        return
    if has["hole"] and (has["hole_h"] or has["hole_w"]) or has["hole_h"] != has["hole_w"]:
        raise layer_error(LayerParamError, layer.name, layer.type, "give either hole, or both hole_h and hole_w")
    hole = (conv.hole, conv.hole) if has["hole"] else (conv.hole_h, conv.hole_w)
    if min(hole) < 1:
        raise layer_error(LayerParamError, layer.name, layer.type, f"hole must be at least 1, got {hole}")
    wanted = [hole[0]] if hole[0] == hole[1] else list(hole)
    if len(conv.dilation):
        current = list(conv.dilation)
        as_pair = (current[0], current[0]) if len(current) == 1 else tuple(current)
        if as_pair != hole:
            raise layer_error(
                LayerParamError, layer.name, layer.type,
                f"hole {hole} disagrees with dilation {current}; give only one of them",
            )
    elif hole != (1, 1):
        conv.dilation.extend(wanted)
    for name in ("hole", "hole_h", "hole_w"):
        conv.ClearField(name)


def _warn(message: str) -> None:
    warnings.warn(message, ProtosegWarning, stacklevel=3)
