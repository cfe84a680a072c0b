"""The converter contract, checked for every registered (fork, type): what ``infer`` says is what runs.

Each Caffe type has a minimal net here. A compute layer runs on random inputs at two sizes: every top's runtime
shape must be the one shape inference gave, and the graph built at the first size must run at the second (the
module sizes itself from live tensors, through the same rule). ``torch.export`` of the one-layer graph must
give the graph's outputs. A data layer must become a graph input, a training-only layer must vanish and leave
its bottom's producer as an output. A new layer type without a case here fails :func:`test_every_type_has_a_case`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from protoseg.graph import to_graph
from protoseg.layers.base import layers_markdown, registered
from tests.layers.helpers import build, inputs_text, layer_text, one_layer, run

DOCS = Path(__file__).resolve().parents[2] / "docs" / "layers.md"

IMAGE = {"x": (2, 3, 6, 8)}
IMAGE_2 = {"x": (1, 3, 9, 5)}


@dataclass(frozen=True)
class Compute:
    """Layer ``L`` over inputs (its bottoms, in order) at two sizes; ``second`` None where the layer fixes it."""

    params: str = ""
    inputs: dict = field(default_factory=lambda: IMAGE)
    second: dict | None = field(default_factory=lambda: IMAGE_2)
    tops: tuple[str, ...] = ("y",)


@dataclass(frozen=True)
class Data:
    """A data layer with top ``data`` (and ``label``), read by a ReLU: ``data`` must become the graph input."""

    params: str = ""


@dataclass(frozen=True)
class Pruned:
    """A training-only layer over ``score`` (a ReLU's top) and ``label``: dropped, ``score`` the output."""


FILE_DATA = Data("transform_param { crop_size: 5 }")
TWO_IMAGES = {"a": (2, 3, 6, 8), "b": (2, 3, 6, 8)}
CRF_INPUTS = {"unary": (1, 3, 6, 8), "logits": (1, 3, 6, 8), "image": (1, 3, 6, 8)}

#: One case per Caffe type, whichever forks register it.
CASES: dict[str, Compute | Data | Pruned] = {
    "AbsVal": Compute(),
    "ArgMax": Compute("argmax_param { axis: 1 top_k: 2 }"),
    "BN": Compute(),
    "BatchNorm": Compute(),
    "Concat": Compute(inputs={"a": (2, 3, 6, 8), "b": (2, 1, 6, 8)}, second={"a": (1, 3, 4, 4), "b": (1, 2, 4, 4)}),
    "Convolution": Compute("convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 1 }"),
    "Crop": Compute("crop_param { axis: 2 offset: 1 }", {"a": (2, 3, 8, 9), "b": (2, 3, 5, 6)},
                    {"a": (1, 3, 7, 7), "b": (1, 3, 2, 6)}),
    "Deconvolution": Compute("convolution_param { num_output: 3 kernel_size: 4 stride: 2 group: 3 bias_term: false }"),
    "DenseCRF": Compute("dense_crf_param { max_iter: 2 pos_w: 3 pos_xy_std: 3 bi_w: 5 bi_xy_std: 20 bi_rgb_std: 10 }",
                        {"scores": (1, 3, 6, 8), "data_dim": (1, 1, 1, 2), "image": (1, 3, 6, 8)},
                        {"scores": (1, 3, 5, 4), "data_dim": (1, 1, 1, 2), "image": (1, 3, 5, 4)}),
    "DeephiResize": Compute("deephi_resize_param { resize_type: BILINEAR scale_h: 2 scale_w: 1.5 }"),
    "Dropout": Compute("dropout_param { dropout_ratio: 0.3 }"),
    "Eltwise": Compute("eltwise_param { operation: SUM coeff: 2 coeff: -1 }", TWO_IMAGES,
                       {"a": (1, 3, 4, 9), "b": (1, 3, 4, 9)}),
    "Flatten": Compute(),
    "InnerProduct": Compute("inner_product_param { num_output: 5 }", second={"x": (5, 3, 6, 8)}),
    "Interp": Compute("interp_param { zoom_factor: 2 pad_beg: -1 }"),
    "LRN": Compute("lrn_param { local_size: 3 }"),
    "MultiStageMeanfield": Compute("multi_stage_meanfield_param { num_iterations: 2 }", CRF_INPUTS,
                                   {k: (1, 3, 5, 4) for k in CRF_INPUTS}),
    "PReLU": Compute(),
    "Padding": Compute("padding_param { pad_beg: 2 pad_end: 1 }"),
    "Pooling": Compute("pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }", tops=("y", "mask")),
    "Power": Compute("power_param { power: 2 scale: 0.5 shift: 1 }"),
    "ReLU": Compute("relu_param { negative_slope: 0.1 }"),
    "Reshape": Compute("reshape_param { shape { dim: 0 dim: 0 dim: -1 } }"),
    "Scale": Compute("scale_param { bias_term: true }"),
    "Sigmoid": Compute(),
    "Slice": Compute("slice_param { axis: 1 slice_point: 1 }", tops=("y", "z")),
    "Softmax": Compute(),
    "Split": Compute(tops=("y", "z")),
    "TanH": Compute(),
    "Unpooling": Compute("unpooling_param { kernel_size: 2 stride: 2 }"),
    "Upsample": Compute("upsample_param { scale: 2 }", {"x": (2, 3, 3, 4), "mask": (2, 3, 3, 4)},
                        {"x": (1, 3, 5, 2), "mask": (1, 3, 5, 2)}),
    "Input": Data("input_param { shape { dim: 1 dim: 3 dim: 5 dim: 5 } }"),
    "DummyData": Data("dummy_data_param { shape { dim: 1 dim: 3 dim: 5 dim: 5 } }"),
    "MemoryData": Data("memory_data_param { batch_size: 1 channels: 3 height: 5 width: 5 }"),
    "Python": Data('python_param { module: "voc_layers" layer: "VOCSegDataLayer" }'),
    **dict.fromkeys(["Data", "DenseImageData", "HDF5Data", "ImageData", "ImageLabelmapData", "ImageSegData",
                     "MatRead", "WindowClsData", "WindowData", "WindowInstSegData", "WindowSegBinary",
                     "WindowSegData"], FILE_DATA),
    **dict.fromkeys(["Accuracy", "BinaryAccuracy", "ContrastiveLoss", "EltwiseAccuracy", "EuclideanLoss",
                     "HDF5Output", "HingeLoss", "InfogainLoss", "MatWrite", "MultinomialLogisticLoss",
                     "RedAccuracy", "RedSoftmaxWithLoss", "SegAccuracy", "SegmentPixelIOU",
                     "SigmoidCrossEntropyLoss", "Silence", "SoftmaxWithLoss"], Pruned()),
}

#: torch.export cannot trace the permutohedral lattice (its vertex count is data-dependent: torch.unique), so
#: ``protoseg convert --format pt2`` refuses nets with these layers and suggests --format py.
NOT_EXPORTABLE = {"DenseCRF", "MultiStageMeanfield"}


def pairs_of(kind: type, failing: set[str] = frozenset(), reason: str = "") -> list:
    """Every registered (fork, type) whose case is a ``kind``, as parameters; those of ``failing`` types xfail."""
    xfail = [pytest.mark.xfail(strict=True, reason=reason)]
    return [pytest.param(fork, t, id=f"{fork}-{t}", marks=xfail if t in failing else [])
            for fork, t in sorted(registered(), key=lambda p: (p[1], p[0])) if isinstance(CASES.get(t), kind)]


def random_inputs(shapes: dict, seed: int) -> dict[str, np.ndarray]:
    """Uniform in [0, 4): valid enough as pooling masks and DenseCRF's data_dim, finite through Power."""
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(0, 4, shape).astype(np.float32) for name, shape in shapes.items()}


def random_blobs(net) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    return {layer.name: [rng.uniform(0.5, 1.5, s).astype(np.float32) for s in layer.blob_shapes]
            for layer in net.layers}


def test_every_type_has_a_case() -> None:
    missing = sorted({f"{fork}:{t}" for fork, t in registered() if t not in CASES})
    assert not missing, f"add a case to CASES for {missing}"


def built(fork: str, type_name: str):
    """The one-layer net of a compute case, its graph with random blobs, and random inputs at the first size."""
    case = CASES[type_name]
    net = one_layer(type_name, case.params, case.inputs, tops=case.tops, fork=fork)
    return case, net, to_graph(net, random_blobs(net)), random_inputs(case.inputs, 0)


@pytest.mark.parametrize("fork, type_name", pairs_of(Compute))
def test_compute_layer_runs_as_inferred(fork: str, type_name: str) -> None:
    case, net, gm, inputs = built(fork, type_name)
    (layer,) = net.layers
    assert layer.converter.role == "compute" and layer.name == "L"
    out = run(net, inputs, gm=gm)
    assert {t: out[t].shape for t in case.tops} == dict(zip(case.tops, layer.shapes))
    if case.second is not None:  # the same graph at another size, against the IR built for that size
        text = inputs_text(case.inputs) + layer_text(type_name, case.params, tuple(case.inputs), case.tops)
        resized = build(text, fork, input_shapes=case.second)
        out = run(resized, random_inputs(case.second, 1), gm=gm)
        assert {t: out[t].shape for t in case.tops} == dict(zip(case.tops, resized.layers[0].shapes))


@pytest.mark.parametrize("fork, type_name", pairs_of(Compute, NOT_EXPORTABLE, "the lattice is not traceable"))
def test_compute_layer_exports(fork: str, type_name: str) -> None:
    """torch.export of the one-layer graph (static shapes: the cheap path) computes what the graph does."""
    _, net, gm, inputs = built(fork, type_name)
    tensors = tuple(torch.from_numpy(inputs[net.caffe_name[i]]) for i in net.inputs)
    with torch.no_grad():
        want, got = gm(*tensors), torch.export.export(gm, tensors).module()(*tensors)
    if isinstance(want, dict):
        assert want.keys() == got.keys()
        want, got = list(want.values()), [got[k] for k in want]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("fork, type_name", pairs_of(Data))
def test_data_layer_becomes_a_graph_input(fork: str, type_name: str) -> None:
    text = (layer_text(type_name, CASES[type_name].params, (), ("data", "label")) +
            layer_text("ReLU", "", ("data",), ("y",), name="relu"))
    net = build(text, fork, input_shapes={"data": (1, 3, 5, 5), "label": (1, 1, 5, 5)})
    assert net.inputs == {"data": (1, 3, 5, 5)} and [layer.name for layer in net.layers] == ["relu"]
    gm = to_graph(net)
    assert [n.target for n in gm.graph.nodes if n.op == "placeholder"] == ["data"]
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(net, {"data": x}, gm=gm)["y"], np.maximum(x, 0))


@pytest.mark.parametrize("fork, type_name", pairs_of(Pruned))
def test_training_only_layer_is_dropped(fork: str, type_name: str) -> None:
    text = (inputs_text({"data": (1, 3, 5, 5), "label": (1, 1, 5, 5)}) +
            layer_text("ReLU", "", ("data",), ("score",), name="relu") +
            layer_text(type_name, "", ("score", "label"), ("loss",)))
    net = build(text, fork)
    assert net.pruned == ["L"] and net.outputs == ["score"] and list(net.inputs) == ["data"]
    assert [layer.name for layer in net.layers] == ["relu"]
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(net, {"data": x})["score"], np.maximum(x, 0))


def test_every_converter_has_a_one_line_docstring() -> None:
    """Its first line is the layer's row in docs/layers.md: it must be the whole summary, and table-safe."""
    for cls in set(registered().values()):
        doc = (cls.__dict__.get("__doc__") or "").strip()
        assert doc and "\n" not in doc and doc.endswith(".") and "|" not in doc, cls.__name__


def test_layers_doc_is_current() -> None:
    """scripts/gen_layers_doc.py --check, in-process: a registered layer changes the table."""
    assert DOCS.read_text() == layers_markdown(), "docs/layers.md is stale: run python scripts/gen_layers_doc.py"
