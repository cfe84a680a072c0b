"""DeepLab's DenseCRF (protoseg.crf) against real Caffe, and the layer's rules one at a time."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from protoseg import crf
from protoseg.crf import FLT_MIN, PRESETS, CrfParams, dense_crf
from protoseg.errors import LayerParamError, ShapeError
from tests.conftest import FIXTURES, PUBLISHED, need

#: The fixture's pass rule (case.json): Caffe uses the approximate lattice and a fast exp.
RTOL = 2e-3
#: Share of pixels whose argmax label must agree with Caffe's.
LABEL_AGREEMENT = 0.999

#: The two DenseCRF layers of fixtures/layers/densecrf/net.prototxt, written out.
FIXTURE_LAYERS = {
    "crf": dict(max_iter=10, pos_w=3, pos_xy_std=3, bi_w=5, bi_xy_std=50, bi_rgb_std=10),
    "crf_log": dict(
        max_iter=5, pos_w=4, pos_xy_std=1, bi_w=5, bi_xy_std=21, bi_rgb_std=3, output_probability=False
    ),
}
SMALL = dict(max_iter=5, pos_w=3, pos_xy_std=3, bi_w=5, bi_xy_std=20, bi_rgb_std=10)
NO_PAIRWISE = dict(max_iter=3, pos_w=0, pos_xy_std=3, bi_w=0, bi_xy_std=20, bi_rgb_std=10)


def _inputs(n: int = 1, c: int = 4, h: int = 9, w: int = 11, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, h, w, generator=g) * 2
    image = torch.rand(n, 3, h, w, generator=g) * 255 - 120
    return scores, image


@pytest.mark.parametrize("top", sorted(FIXTURE_LAYERS))
def test_matches_caffe(top: str) -> None:
    ref = np.load(need(FIXTURES / "layers" / "densecrf" / "reference.npz"))
    scores, data_dim, image = (torch.from_numpy(ref[k]) for k in ("unary", "data_dim", "image"))
    ours = dense_crf(scores, image, data_dim, **FIXTURE_LAYERS[top]).numpy()
    want = ref[top]
    assert ours.shape == want.shape and ours.dtype == np.float32
    assert np.abs(ours - want).max() <= RTOL * np.abs(want).max()
    assert (ours.argmax(1) == want.argmax(1)).mean() >= LABEL_AGREEMENT


def test_fixture_layers_are_the_ones_written_out() -> None:
    text = need(FIXTURES / "layers" / "densecrf" / "net.prototxt").read_text()
    for top, params in FIXTURE_LAYERS.items():
        block = re.search(rf'top: "{top}" dense_crf_param \{{([^}}]*)\}}', text)
        assert block is not None, top
        found = {k: v for k, v in re.findall(r"(\w+): (\w+)", block.group(1))}
        assert found.pop("output_probability", "true") == str(params.get("output_probability", True)).lower()
        assert {k: float(v) for k, v in found.items()} == {
            k: float(v) for k, v in params.items() if k != "output_probability"
        }


def test_zero_outside_data_dim_and_crop_equivalence() -> None:
    scores, image = _inputs(h=9, w=11)
    out = dense_crf(scores, image, torch.tensor([[[[5.0, 7.0]]]]), **SMALL)
    assert out[..., 5:, :].abs().max() == 0 and out[..., :, 7:].abs().max() == 0
    torch.testing.assert_close(out[0, :, :5, :7].sum(0), torch.ones(5, 7))
    # Solving the cropped blob gives the same probabilities: nothing outside the region leaks in.
    cropped = dense_crf(scores[..., :5, :7], image[..., :5, :7], **SMALL)
    torch.testing.assert_close(out[..., :5, :7], cropped, rtol=0, atol=1e-6)


def test_data_dim_no_smaller_than_blob_solves_whole_blob() -> None:
    scores, image = _inputs(h=9, w=11)
    whole = dense_crf(scores, image, **SMALL)
    torch.testing.assert_close(dense_crf(scores, image, torch.tensor([[[[20.0, 11.9]]]]), **SMALL), whole)
    # Larger on one axis only: the layer would read past the blob; protoseg clamps the region to it.
    partial = dense_crf(scores, image, torch.tensor([[[[6.0, 30.0]]]]), **SMALL)
    assert partial[..., 6:, :].abs().max() == 0
    torch.testing.assert_close(partial[0, :, :6].sum(0), torch.ones(6, 11))


def test_batch_uses_each_images_own_colours() -> None:
    scores, image = _inputs(n=2, seed=1)
    image[0] = 0  # one flat colour: the bilateral kernel of image 0 sees no edges, image 1's does
    params = dict(SMALL, bi_w=10, bi_rgb_std=60)
    batch = dense_crf(scores, image, torch.tensor([[[[9.0, 11.0]]], [[[6.0, 8.0]]]]), **params)
    first = dense_crf(scores[:1], image[:1], **params)
    second = dense_crf(scores[1:, :, :6, :8], image[1:, :, :6, :8], **params)
    torch.testing.assert_close(batch[:1], first, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch[1:, :, :6, :8], second, rtol=0, atol=1e-6)
    # Caffe would filter image 1 with image 0's colours: a different answer.
    caffe_quirk = dense_crf(scores[1:, :, :6, :8], image[:1, :, :6, :8], **params)
    assert (caffe_quirk - second).abs().max() > 0.05


def test_unary_is_negative_score_and_fast_exp_cutoff() -> None:
    """Without pairwise terms the layer returns softmax(scores); exp below -20 is exactly 0, as in fast_exp."""
    scores, image = _inputs()
    torch.testing.assert_close(dense_crf(scores, image, **NO_PAIRWISE), torch.softmax(scores, 1))
    far = torch.tensor([0.0, -19.0, -30.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    prob = dense_crf(far, torch.zeros(1, 3, 2, 2), **NO_PAIRWISE)
    assert prob[0, 2].abs().max() == 0 and prob[0, 1].min() > 0
    log = dense_crf(far, torch.zeros(1, 3, 2, 2), **NO_PAIRWISE, output_probability=False)
    torch.testing.assert_close(log[0, 2], torch.full((2, 2), float(np.log(np.float32(FLT_MIN)))))
    torch.testing.assert_close(log, torch.log(prob.clamp_min(FLT_MIN)))


def test_more_iterations_smooth_more() -> None:
    """A noisy two-region labelling: the positional and bilateral kernels pull pixels to their region's label."""
    g = torch.Generator().manual_seed(3)
    truth = torch.zeros(16, 16, dtype=torch.long)
    truth[:, 8:] = 1
    scores = torch.nn.functional.one_hot(truth, 2).permute(2, 0, 1)[None].float() + torch.randn(
        1, 2, 16, 16, generator=g
    )
    image = (truth.float() * 200 - 100).expand(1, 3, 16, 16).contiguous()
    before = (scores.argmax(1)[0] == truth).float().mean()
    after = (dense_crf(scores, image, **SMALL).argmax(1)[0] == truth).float().mean()
    assert before < 0.9 and after == 1.0


def test_row_keys_fallback_equals_int64_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(4)
    features = torch.rand(300, 5, generator=g) * 40
    values = torch.rand(300, 3, generator=g)
    coded = crf.Lattice(features)
    monkeypatch.setattr(crf, "_CODE_LIMIT", 0)
    rows = crf.Lattice(features)
    assert rows.size == coded.size
    torch.testing.assert_close(rows.filter(values), coded.filter(values))


def test_gather_path_equals_sparse_path() -> None:
    """The GPU code path (index_add_ splat, gathered slice), run on CPU, agrees with the CSR products."""
    g = torch.Generator().manual_seed(6)
    features = torch.rand(500, 5, generator=g) * 6
    values = torch.rand(500, 4, generator=g)
    lattice = crf.Lattice(features)
    sparse = lattice.filter(values)
    lattice.sparse = False
    torch.testing.assert_close(lattice.filter(values), sparse, rtol=1e-5, atol=1e-6)


def test_repeated_kernels_add_up() -> None:
    """``dense_crf_param`` fields are repeated: two kernels of one std act as one with the summed weight."""
    scores, image = _inputs()
    two = dense_crf(scores, image, **dict(SMALL, pos_w=[1.0, 2.0], pos_xy_std=[3.0, 3.0]))
    torch.testing.assert_close(two, dense_crf(scores, image, **SMALL), rtol=0, atol=1e-5)
    three = dense_crf(scores, image, **dict(SMALL, pos_w=[1.0, 2.0], pos_xy_std=[3.0, 1.0]))
    assert (three - two).abs().max() > 1e-3


def test_presets() -> None:
    assert {"deeplab_v1", "deeplab_v1_largefov", "deeplab_v1_msc", "deeplab_v2_resnet101"} <= set(PRESETS)
    for name, params in PRESETS.items():
        assert isinstance(params, CrfParams), name
        assert params.max_iter > 0 and params.source, name
        assert min(params.pos_w, params.pos_xy_std, params.bi_w, params.bi_xy_std, params.bi_rgb_std) > 0, name
    scores, image = _inputs()
    out = dense_crf(scores, image, **PRESETS["deeplab_v1"].as_kwargs())
    torch.testing.assert_close(out.sum(1), torch.ones(1, 9, 11))


@pytest.mark.parametrize(
    ("preset", "path"),
    [
        ("deeplab_v1", "deeplab_v1/largefov/test.prototxt"),
        ("deeplab_v2_resnet101", "deeplab_v2/resnet101/test.prototxt"),
    ],
)
def test_presets_match_published_prototxt(preset: str, path: str) -> None:
    text = need(PUBLISHED / path).read_text()
    block = re.search(r"dense_crf_param\s*\{([^}]*)\}", text)
    assert block is not None
    published = {k: float(v) for k, v in re.findall(r"(\w+):\s*([\d.]+)", block.group(1))}
    assert published == {k: float(v) for k, v in PRESETS[preset].as_kwargs().items()}


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (dict(image=torch.zeros(1, 3, 9, 10)), ShapeError, "does not fit scores"),
        (dict(image=torch.zeros(2, 3, 9, 11)), ShapeError, "batch size"),
        (dict(image=torch.zeros(1, 1, 9, 11)), ShapeError, "N×3×H×W"),
        (dict(scores=torch.zeros(4, 9, 11)), ShapeError, "N×C×H×W"),
        (dict(data_dim=torch.tensor([[[[9.0]]]])), ShapeError, "data_dim"),
        (dict(data_dim=torch.zeros(2, 1, 1, 2)), ShapeError, r"\(1, 1, 1, 2\)"),
        (dict(pos_w=[3, 4]), LayerParamError, "pos_w and pos_xy_std"),
        (dict(bi_rgb_std=[3, 4]), LayerParamError, "bi_w, bi_xy_std and bi_rgb_std"),
        (dict(bi_xy_std=0), LayerParamError, "bi_xy_std must be > 0"),
        (dict(pos_w=float("nan")), LayerParamError, "finite"),
        (dict(max_iter=-1), LayerParamError, "max_iter"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_raises(change: dict, error: type, message: str) -> None:
    scores, image = _inputs()
    args = dict(scores=scores, image=image, data_dim=None, **SMALL)
    args.update(change)
    with pytest.raises(error, match=message):
        dense_crf(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    scores, image = _inputs(n=2, c=5, h=40, w=37, seed=5)
    data_dim = torch.tensor([[[[40.0, 30.0]]], [[[33.0, 37.0]]]])
    cpu = dense_crf(scores, image, data_dim, **PRESETS["deeplab_v1"].as_kwargs())
    gpu = dense_crf(scores.cuda(), image.cuda(), data_dim.cuda(), **PRESETS["deeplab_v1"].as_kwargs())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)
