"""DeepLab's fully connected CRF (the ``DenseCRF`` layer of the DeepLab v1/v2 Caffe forks) in PyTorch.

This mirrors ``src/caffe/layers/densecrf_layer.cpp`` and the bundled Krähenbühl code it calls
(``src/caffe/util/densecrf_pairwise.cpp``, ``permutohedral.cpp``, ``include/caffe/util/densecrf_util.hpp``) of
DeepLab v2's fork, so that its output matches Caffe's to the tolerance of the approximation itself:

* the bottom scores are log-probabilities up to a constant: the layer stores ``unary = -score``, starts from
  ``Q = softmax(score)`` and in every mean-field step sets ``Q = softmax(score + sum_k w_k * norm_k * filter_k(Q))``
  (Potts compatibility, attractive for positive weights, the filtered value of a pixel includes the pixel itself);
* every kernel is filtered with the permutohedral lattice (Adams et al. 2010) with the same elevation, rounding
  (to nearest, ties to even, as the SSE build does), barycentric weights, ``[1/2, 1, 1/2]`` blur along the ``d + 1``
  lattice directions, and the magic slice factor ``1 / (1 + 2^-d)``;
* each kernel is normalised per pixel: ``norm = 1 / (filter(1) + 1e-20)``;
* the exponential is Caffe's ``fast_exp``, which returns 0 below ``-20``; its polynomial differs from ``exp`` by
  less than 5e-6 relative, so ``torch.exp`` with that cut-off stands in for it.

The lattice is built once per image and kernel (keys hashed to int64, ``torch.unique`` for the vertices, sorted
keys and ``searchsorted`` for the blur neighbours) and reused by every iteration. Splat and slice are sparse
products (CSR matrices on CPU, ``index_add_`` and gathers on GPU), the blur is two gathers per lattice direction:
no Python loops over pixels, on CPU and CUDA tensors alike. At 513×513, 21 classes, 10 iterations, on a real
photograph, it takes about a second on CPU, within 2× of the single-threaded C++ (``bench/bench_crf.py``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from protoseg.errors import LayerParamError, ShapeError

__all__ = ["CrfParams", "PRESETS", "check_params", "dense_crf"]

#: Smallest normal float32: Caffe clamps probabilities to it before taking the log (``output_probability: false``).
FLT_MIN = torch.finfo(torch.float32).tiny
#: ``fast_exp`` in DeepLab's ``densecrf_util.hpp`` returns 0 for arguments below minus this.
_FAST_EXP_CUTOFF = 20.0
#: Caffe adds this before inverting a kernel's normaliser.
_NORM_EPS = 1e-20
#: Lattice keys are packed into one int64 code when the product of their coordinate ranges stays below this.
_CODE_LIMIT = 2**62


@dataclass(frozen=True)
class CrfParams:
    """A ``dense_crf_param`` block: pass ``**params.as_kwargs()`` to :func:`dense_crf`."""

    max_iter: int  # mean-field iterations
    pos_w: float  # weight of the positional (smoothness) kernel
    pos_xy_std: float  # its spatial standard deviation, in pixels
    bi_w: float  # weight of the bilateral (appearance) kernel
    bi_xy_std: float  # its spatial standard deviation, in pixels
    bi_rgb_std: float  # its colour standard deviation, in the image blob's units (0..255, mean-subtracted)
    source: str  # where these values were published

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`dense_crf` (everything but ``source``)."""
        kwargs = asdict(self)
        del kwargs["source"]
        return kwargs


_V1_SETUP = "deeplab-public-ver2 matlab/my_script/SetupEnv.m (DeepLab v1 cross-validated values)"
_V1_README = "DeepLab v1 release README (bitbucket deeplab/deeplab-public), 'FOV' CRF values"

#: Parameter sets of the published DeepLab releases, by release name.
PRESETS: dict[str, CrfParams] = {
    # DeepLab-CRF (vgg128_noup): the commented DenseCRF layer of the published deeplab_v1/largefov/test.prototxt;
    # the same values are listed for "vgg128_noup, aka DeepLab" in SetupEnv.m.
    "deeplab_v1": CrfParams(10, 3, 3, 5, 50, 10, "published deeplab_v1/largefov/test.prototxt (commented crf layer)"),
    # DeepLab-MSc-CRF (vgg128_ms_pool3): SetupEnv.m; pos_w/pos_xy_std are that file's defaults (3, 3).
    "deeplab_v1_msc": CrfParams(10, 3, 3, 3, 95, 3, _V1_SETUP),
    # DeepLab-CRF-COCO (vgg128_noup_pool3_cocomix): SetupEnv.m.
    "deeplab_v1_coco": CrfParams(10, 3, 3, 5, 67, 3, _V1_SETUP),
    # DeepLab-CRF-LargeFOV and DeepLab-MSc-CRF-LargeFOV: the v1 release README's list of CRF parameters.
    "deeplab_v1_largefov": CrfParams(10, 3, 3, 4, 121, 5, _V1_README),
    "deeplab_v1_msc_largefov": CrfParams(10, 3, 3, 4, 83, 5, _V1_README),
    # DeepLab v2 ResNet-101: the commented DenseCRF layer of the published deeplab_v2/resnet101/test.prototxt.
    "deeplab_v2_resnet101": CrfParams(
        10, 4, 1, 5, 21, 3, "published deeplab_v2/resnet101/test.prototxt (commented crf layer)"
    ),
}


def _as_list(name: str, value: float | Sequence[float]) -> list[float]:
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if not all(math.isfinite(v) for v in values):
        raise LayerParamError(f"dense_crf: {name} must be finite, got {values}")
    return values


def _positive(name: str, values: list[float]) -> None:
    if any(v <= 0 for v in values):
        raise LayerParamError(f"dense_crf: {name} must be > 0 (it divides the features), got {values}")


def _f32(x: float) -> float:
    """``x`` rounded to float32, as a Python float, so that scalar arithmetic happens on Caffe's float values."""
    return float(torch.tensor(x, dtype=torch.float32))


class Lattice:
    """The permutohedral lattice of one image's features, built once and applied to any number of value sets.

    Mirrors ``Permutohedral::init``/``compute`` of DeepLab's fork: ``offsets``/``weights`` are each pixel's
    ``d + 1`` enclosing simplex vertices and barycentric weights, ``neighbours[j]`` the two lattice neighbours of
    every vertex along direction ``j`` (index ``M`` stands for a missing neighbour: a row that stays zero).
    """

    def __init__(self, features: Tensor) -> None:
        n, d = features.shape
        dev = features.device
        self.d = d
        f = features.to(torch.float32)
        # Elevation onto the hyperplane x_0 + ... + x_d = 0, scaled to the filter's standard deviation.
        inv_std = _f32(math.sqrt(2.0 / 3.0) * (d + 1))
        scale = [_f32(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std) for i in range(d)]
        columns = [f.new_zeros(n)] * (d + 1)
        acc = f.new_zeros(n)
        for j in range(d, 0, -1):
            cf = f[:, j - 1] * scale[j - 1]
            columns[j] = acc - cf * float(j)
            acc = acc + cf
        columns[0] = acc
        elevated = torch.stack(columns, 1)
        # Nearest remainder-0 lattice point (round half to even, like the SSE conversion Caffe's build uses).
        down = _f32(1.0 / (d + 1))
        rounded = torch.round(elevated * down)
        rem0 = rounded * float(d + 1)
        total = rounded.sum(1, keepdim=True).to(torch.int64)
        # Caffe's pairwise loop ranks the residuals in descending order, equal ones by coordinate index: exactly
        # a stable descending sort. order[:, k] is the coordinate of rank k.
        residual = elevated - rem0
        order = torch.sort(residual, dim=1, descending=True, stable=True).indices
        levels = torch.arange(d + 1, device=dev).expand(n, d + 1)
        rank = torch.empty_like(order).scatter_(1, order, levels)
        # Points off the plane (total != 0): shift the ranks cyclically and move rem0 by d + 1 where they wrap.
        shifted = rank + total
        rank = torch.remainder(shifted, d + 1)
        rem0 = rem0 + (rank - shifted).to(torch.float32)
        # Barycentric coordinates. In Caffe's accumulation slot p receives +part of the coordinate ranked d - p
        # and -part of the one ranked d + 1 - p: two terms, so their order does not matter.
        part = (elevated - rem0) * down
        by_rank = part.gather(1, order.gather(1, torch.remainder(levels - total, d + 1)))  # [:, k]: rank k
        flipped = by_rank.flip(1)  # [:, p]: the part ranked d - p
        bary = flipped.clone()
        bary[:, 1:] -= flipped[:, :-1]
        bary[:, 0] += 1.0 - flipped[:, d]
        self.weights = bary
        alpha = _f32(1.0 / (1.0 + 2.0 ** (-d)))  # cancels against the per-pixel normalisation; kept for fidelity
        self.slice_weights = self.weights * alpha
        self.offsets, self.neighbours, self.size = self._index(rem0.to(torch.int64)[:, :d], rank[:, :d])
        #: Splat and slice as CSR matrix products (fastest on CPU) rather than index_add_ and gathers (GPU).
        self.sparse = dev.type == "cpu"
        self._splat: Tensor | None = None
        self._slice: Tensor | None = None

    def _index(self, rem0: Tensor, rank: Tensor) -> tuple[Tensor, Tensor, int]:
        """Hash the simplex vertices: (offsets N×(d+1), neighbours (d+1)×2×(M+1), M)."""
        d = self.d
        n = rem0.shape[0]
        dev = rem0.device
        # Vertex r of a pixel has key rem0 + r - (d+1)·[rank > d - r], within [rem0 - (d+1), rem0 + d]; its
        # neighbours differ by at most d more in one coordinate. Keep all of them encodable.
        lo = rem0.amin(0) - 2 * (d + 1)
        span = (rem0.amax(0) + 2 * (d + 1) - lo + 1).tolist()
        if math.prod(span) < _CODE_LIMIT:
            # Mixed-radix int64 codes are linear in the key, so a neighbour's code is the vertex's plus a constant.
            stride = [math.prod(span[i + 1 :]) for i in range(d)]
            strides = torch.tensor(stride, dtype=torch.int64, device=dev)
            ring = sum(stride)
            base = ((rem0 - lo) * strides).sum(1)
            codes = torch.stack(
                [base + (r * ring) - (d + 1) * ((rank > d - r) * strides).sum(1) for r in range(d + 1)], 1
            )
            unique, inverse = torch.unique(codes.reshape(-1), return_inverse=True)
            m = unique.numel()
            neighbours = torch.full((d + 1, 2, m + 1), m, dtype=torch.int64, device=dev)
            everyone = torch.arange(m, device=dev)
            for j in range(d + 1):
                step = ring - (d + 1) * stride[j] if j < d else ring
                # The "minus" neighbour by binary search; the "plus" one is its inverse (v + step = u iff
                # u - step = v), so a scatter replaces the second search.
                wanted = unique - step
                pos = torch.searchsorted(unique, wanted).clamp_(max=m - 1)
                hit = unique[pos] == wanted
                neighbours[j, 0, :m] = torch.where(hit, pos, m)
                neighbours[j, 1, pos[hit]] = everyone[hit]
        else:  # a lattice too wide for int64 codes: compare whole key rows instead
            r = torch.arange(d + 1, device=dev)[None, :, None]
            keys = (rem0[:, None, :] + r - (d + 1) * (rank[:, None, :] > d - r)).reshape(-1, d)
            vertex_keys, inverse = torch.unique(keys, dim=0, return_inverse=True)
            m = vertex_keys.shape[0]
            wanted = []
            for j in range(d + 1):
                minus, plus = vertex_keys - 1, vertex_keys + 1
                if j < d:
                    minus[:, j] = vertex_keys[:, j] + d
                    plus[:, j] = vertex_keys[:, j] - d
                wanted += [minus, plus]
            _, ids = torch.unique(torch.cat([vertex_keys, *wanted]), dim=0, return_inverse=True)
            table = torch.full((int(ids.max()) + 1,), m, dtype=torch.int64, device=dev)
            table[ids[:m]] = torch.arange(m, device=dev)
            pad = torch.full((d + 1, 2, 1), m, dtype=torch.int64, device=dev)
            neighbours = torch.cat([table[ids[m:]].reshape(d + 1, 2, m), pad], dim=2)
        # Index m is the zero row standing for a missing neighbour; its own neighbours are itself.
        return inverse.reshape(n, d + 1), neighbours, m

    def _matrices(self) -> tuple[Tensor, Tensor]:
        """Splat (vertices × pixels) and slice (pixels × vertices) as CSR matrices, for CPU.

        On CPU a CSR product is several times faster than ``index_add_`` and a gather per vertex, and it sums in
        Caffe's order: each vertex over its pixels in pixel order, each pixel over its vertices r = 0..d.
        """
        if self._splat is None or self._slice is None:
            n, rows = self.offsets.shape[0], self.size + 1
            vertex = self.offsets.reshape(-1)
            order = torch.argsort(vertex, stable=True)
            crow = torch.zeros(rows + 1, dtype=torch.int64)
            torch.cumsum(torch.bincount(vertex, minlength=rows), 0, out=crow[1:])
            pixel = torch.div(order, self.d + 1, rounding_mode="floor")
            per_pixel = torch.arange(0, n * (self.d + 1) + 1, self.d + 1)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self._splat = torch.sparse_csr_tensor(crow, pixel, self.weights.reshape(-1)[order], size=(rows, n))
                self._slice = torch.sparse_csr_tensor(
                    per_pixel, vertex, self.slice_weights.reshape(-1), size=(n, rows)
                )
        return self._splat, self._slice

    def filter(self, values: Tensor) -> Tensor:
        """Gaussian-filter ``values`` (pixels × channels) over the features: splat, blur, slice."""
        if self.sparse:
            splat, slice_ = self._matrices()
            grid = splat @ values
        else:  # GPUs scatter-add with atomics and gather fast: no sparse matrices to build
            grid = values.new_zeros(self.size + 1, values.shape[1])
            for r in range(self.d + 1):
                grid.index_add_(0, self.offsets[:, r], values * self.weights[:, r : r + 1])
        # Each direction reads the previous pass only (Caffe swaps two buffers): new = old + 0.5 (n1 + n2),
        # in three preallocated buffers.
        pair = torch.empty_like(grid)
        side = torch.empty_like(grid)
        spare = torch.empty_like(grid)
        for j in range(self.d + 1):
            torch.index_select(grid, 0, self.neighbours[j, 0], out=pair)
            torch.index_select(grid, 0, self.neighbours[j, 1], out=side)
            pair.add_(side)
            torch.add(grid, pair, alpha=0.5, out=spare)
            grid, spare = spare, grid
        if self.sparse:
            return slice_ @ grid
        out = self.slice_weights[:, :1] * grid[self.offsets[:, 0]]
        for r in range(1, self.d + 1):
            out.addcmul_(grid[self.offsets[:, r]], self.slice_weights[:, r : r + 1])
        return out


def _exp_normalize_(x: Tensor) -> Tensor:
    """Softmax over classes (dim 1), in place, with Caffe's ``fast_exp`` cut-off: terms below exp(-20) are 0.

    In place because on CPU every fresh pixels × classes tensor costs page faults as much as the arithmetic.
    """
    x.sub_(x.amax(1, keepdim=True))
    negligible = x < -_FAST_EXP_CUTOFF
    x.exp_().masked_fill_(negligible, 0.0)
    return x.div_(x.sum(1, keepdim=True))


def _region(data_dim: Tensor | None, n: int, height: int, width: int) -> list[tuple[int, int]]:
    """The (height, width) each image is solved on, by the layer's rule; clamped to the blob (see dense_crf)."""
    if data_dim is None:
        return [(height, width)] * n
    if data_dim.shape[0] != n or data_dim.numel() != 2 * n:
        raise ShapeError(
            f"dense_crf: data_dim must hold (height, width) per image, shape ({n}, 1, 1, 2), got "
            f"{tuple(data_dim.shape)}"
        )
    out = []
    for real_h, real_w in data_dim.reshape(n, 2).tolist():
        h, w = int(real_h), int(real_w)  # C++ float -> int conversion truncates toward zero
        if not (height <= h and width <= w):
            height_i, width_i = h, w
        else:
            height_i, width_i = height, width
        out.append((min(max(height_i, 0), height), min(max(width_i, 0), width)))
    return out


#: Most mean-field iterations a CRF layer may ask for: the releases use 5 to 10 (mean field converges in a few),
#: and a count of billions would only turn a file into a hang.
MAX_ITERATIONS = 1000


@torch.no_grad()
def check_params(max_iter, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std) -> tuple[list, list]:
    """Validate a ``dense_crf_param`` set (the layer checks it when the net is built, :func:`dense_crf` again):
    the positional kernels ``[(w, xy_std)]`` and the bilateral ones ``[(w, xy_std, rgb_std)]``."""
    if int(max_iter) != max_iter or not 0 <= max_iter <= MAX_ITERATIONS:
        raise LayerParamError(f"dense_crf: max_iter must be an integer from 0 to {MAX_ITERATIONS:,}, got "
                              f"{max_iter!r} (the releases use 10)")
    pos_lists = [_as_list("pos_w", pos_w), _as_list("pos_xy_std", pos_xy_std)]
    if len(pos_lists[0]) != len(pos_lists[1]):
        raise LayerParamError(
            "dense_crf: pos_w and pos_xy_std must have the same number of values (one per positional kernel), "
            f"got {len(pos_lists[0])} and {len(pos_lists[1])}"
        )
    pos = list(zip(*pos_lists, strict=True))
    bi_lists = [_as_list("bi_w", bi_w), _as_list("bi_xy_std", bi_xy_std), _as_list("bi_rgb_std", bi_rgb_std)]
    if len({len(v) for v in bi_lists}) != 1:
        raise LayerParamError(
            "dense_crf: bi_w, bi_xy_std and bi_rgb_std must have the same number of values (one per bilateral "
            f"kernel), got {len(bi_lists[0])}, {len(bi_lists[1])} and {len(bi_lists[2])}"
        )
    bil = list(zip(*bi_lists, strict=True))
    _positive("pos_xy_std", pos_lists[1])
    _positive("bi_xy_std", bi_lists[1])
    _positive("bi_rgb_std", bi_lists[2])
    return pos, bil


def dense_crf(
    scores: Tensor,
    image: Tensor | None,
    data_dim: Tensor | None = None,
    *,
    max_iter: int = 10,
    pos_w: float | Sequence[float],
    pos_xy_std: float | Sequence[float],
    bi_w: float | Sequence[float],
    bi_xy_std: float | Sequence[float],
    bi_rgb_std: float | Sequence[float],
    output_probability: bool = True,
) -> Tensor:
    """Mean-field inference of DeepLab's fully connected CRF, as Caffe's ``DenseCRF`` layer computes it.

    ``scores`` (N×C×H×W) are the net's log-probabilities up to a constant (``fc8_interp``: unnormalised scores),
    ``image`` (N×3×H×W) the image blob the net was fed (Caffe's channel order, BGR for DeepLab, mean-subtracted
    floats; used as is, without rounding) or None for no bilateral kernel, ``data_dim`` (N×1×1×2) each image's
    real (height, width) inside the padded blob. The ``*_w``/``*_std`` parameters are ``dense_crf_param``'s
    repeated fields: one kernel per value (positional kernels first, then bilateral ones, as Caffe adds them).

    Returns N×C×H×W probabilities, or ``log(max(p, FLT_MIN))`` when ``output_probability`` is false; pixels outside
    the solved region are 0. The region follows the layer: the whole blob when it is no larger than ``data_dim``
    on both axes, else ``data_dim``; where the layer would then read past the blob (``data_dim`` larger on one
    axis, smaller on the other) protoseg clamps to the blob.

    Differences from Caffe, on purpose: Caffe's layer reads the image blob without a batch offset, so every image
    of a batch is filtered with the *first* image's colours; protoseg uses each image's own, which is what the
    layer means and what Caffe gives at batch size 1 (DeepLab's test nets). No gradient (Caffe has no backward).
    """
    if scores.dim() != 4:
        raise ShapeError(f"dense_crf: scores must be N×C×H×W, got shape {tuple(scores.shape)}")
    n, c, height, width = scores.shape
    if c < 1:
        raise ShapeError("dense_crf: scores has no classes (C = 0)")
    pos, bil = check_params(max_iter, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std)
    if image is not None:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ShapeError(f"dense_crf: image must be N×3×H×W (a colour image blob), got {tuple(image.shape)}")
        if image.shape[0] != n or image.shape[2:] != scores.shape[2:]:
            raise ShapeError(
                f"dense_crf: image {tuple(image.shape)} does not fit scores {tuple(scores.shape)}: the batch "
                "size, height and width must be equal (upsample the scores to the image size first)"
            )
        if image.device != scores.device:
            raise ShapeError(f"dense_crf: image is on {image.device} but scores are on {scores.device}")
    else:
        bil = []
    regions = _region(data_dim, n, height, width)

    dev = scores.device
    out_dtype = scores.dtype if scores.is_floating_point() else torch.float32
    result = torch.zeros(n, c, height, width, dtype=torch.float32, device=dev)
    for b, (h, w) in enumerate(regions):
        if h == 0 or w == 0:
            continue
        score = scores[b, :, :h, :w].to(torch.float32).reshape(c, h * w).t().contiguous()
        xs, ys = pixel_grid(h, w, dev)
        kernels: list[tuple[Lattice, Tensor]] = []
        for weight, std in pos:
            s = _f32(std)
            kernels.append(normalized_kernel(torch.stack([xs / s, ys / s], 1), weight))
        if bil:
            colour = image[b, :, :h, :w].to(torch.float32).reshape(3, h * w).t()
            for weight, xy_std, rgb_std in bil:
                s, t = _f32(xy_std), _f32(rgb_std)
                kernels.append(normalized_kernel(torch.cat([xs[:, None] / s, ys[:, None] / s, colour / t], 1), weight))
        q = _exp_normalize_(score.clone())
        energy = torch.empty_like(score)
        for _ in range(int(max_iter)):
            energy.copy_(score)
            for lattice, coef in kernels:
                energy.addcmul_(lattice.filter(q), coef)
            q, energy = _exp_normalize_(energy), q
        if not output_probability:
            q = torch.log(q.clamp_min(FLT_MIN))
        result[b, :, :h, :w] = q.t().reshape(c, h, w)
    return result.to(out_dtype)


def pixel_grid(h: int, w: int, device) -> tuple[Tensor, Tensor]:
    """Column (x) and row (y) of every pixel, raster order, as float32: the positional features."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return xs.reshape(-1), ys.reshape(-1)


def normalized_kernel(features: Tensor, weight: float) -> tuple[Lattice, Tensor]:
    """A Potts kernel: its lattice and the per-pixel factor ``w * norm`` Caffe multiplies the filtered Q by."""
    lattice = Lattice(features)
    ones = features.new_ones(features.shape[0], 1)
    norm = 1.0 / (lattice.filter(ones) + _NORM_EPS)
    return lattice, (_f32(weight) * norm)
