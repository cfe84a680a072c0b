"""CRF-as-RNN's Caffe fork (torrvision/caffe): ``MultiStageMeanfield``, on protoseg's permutohedral lattice.

``src/caffe/layers/multi_stage_meanfield.cpp`` and ``meanfield_iteration.cpp``, confirmed by the
``crfrnn_meanfield`` and ``crfrnn_deploy`` fixtures: bottoms are the unaries ``U``, the logits the first
iteration starts from, and the image (3 channels, in blob order). Three blobs, each 1 x 1 x C x C: spatial
kernel weights ``Ws``, bilateral kernel weights ``Wb``, compatibility ``M``. Every iteration takes
``Q = softmax(previous)`` over the channels, filters it with a spatial kernel (features ``(x, y) / theta_gamma``,
x the column) and a bilateral one (``(x, y) / theta_alpha`` and the image channels ``/ theta_beta``), each
divided per pixel by the filter of ones, and gives ``U - M (Ws S + Wb B)``, the matrices acting on the channel
axis; the output is the last iteration's logits. ``threshold``, ``compatibility_mode`` and the
``*_filter_weight`` fields do not change the forward pass. Caffe builds the layer for one input size; protoseg
builds the lattices per image, so any size works.
"""

from __future__ import annotations

import torch
from torch import nn

from protoseg.crf import MAX_ITERATIONS
from protoseg.layers.base import Bottoms, Converter, Shape, register


class MeanField(nn.Module):
    def __init__(self, iterations: int, theta_alpha: float, theta_beta: float, theta_gamma: float):
        super().__init__()
        self.iterations = iterations
        self.theta_alpha, self.theta_beta, self.theta_gamma = theta_alpha, theta_beta, theta_gamma
        self.spatial_weights: nn.Parameter | None = None
        self.bilateral_weights: nn.Parameter | None = None
        self.compatibility: nn.Parameter | None = None

    def forward(self, unary: torch.Tensor, logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        from protoseg.crf import _f32, normalized_kernel, pixel_grid

        n, c, h, w = unary.shape
        ws, wb, m = (blob.reshape(c, c).to(torch.float32) for blob in
                     (self.spatial_weights, self.bilateral_weights, self.compatibility))
        xs, ys = pixel_grid(h, w, unary.device)
        gamma, alpha, beta = _f32(self.theta_gamma), _f32(self.theta_alpha), _f32(self.theta_beta)
        spatial = normalized_kernel(torch.stack([xs / gamma, ys / gamma], 1), 1.0)
        out = []
        for b in range(n):
            colour = image[b].to(torch.float32).reshape(image.shape[1], h * w).t()
            bilateral = normalized_kernel(torch.cat([xs[:, None] / alpha, ys[:, None] / alpha, colour / beta], 1),
                                          1.0)
            u = unary[b].to(torch.float32).reshape(c, h * w).t()  # pixels x classes
            q = logits[b].to(torch.float32).reshape(c, h * w).t()
            for _ in range(self.iterations):
                p = torch.softmax(q, dim=1)
                s = spatial[0].filter(p) * spatial[1]
                bi = bilateral[0].filter(p) * bilateral[1]
                q = u - (s @ ws.t() + bi @ wb.t()) @ m.t()
            out.append(q.t().reshape(c, h, w))
        return torch.stack(out).to(unary.dtype)

    def extra_repr(self) -> str:
        return (f"iterations={self.iterations}, theta_alpha={self.theta_alpha}, theta_beta={self.theta_beta}, "
                f"theta_gamma={self.theta_gamma}")


@register("MultiStageMeanfield", fork="crfasrnn")
class MultiStageMeanfieldConverter(Converter):
    """CRF-as-RNN's MultiStageMeanfield: learned-kernel mean field on the permutohedral lattice."""

    bottoms = (3, 3)

    def setup(self) -> None:
        p = self.param.multi_stage_meanfield_param
        self.iterations = p.num_iterations
        self.thetas = (p.theta_alpha, p.theta_beta, p.theta_gamma)
        if self.iterations <= 1:
            raise self.error(f"num_iterations {self.iterations} must be greater than 1 (CRF-as-RNN's check)")
        if self.iterations > MAX_ITERATIONS:
            raise self.error(f"num_iterations {self.iterations:,} is more than {MAX_ITERATIONS:,} (the release uses 5 "
                             "at test time); mean field converges in a few")
        if not all(t > 0 for t in self.thetas):
            raise self.error(f"theta_alpha, theta_beta and theta_gamma must be > 0, got {self.thetas}")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        unary, logits, image = shapes
        if len(unary) != 4 or tuple(logits) != tuple(unary):
            raise self.shape_error(f"unaries {unary} and logits {logits} must be one N x C x H x W shape")
        if len(image) != 4 or image[1] != 3 or (image[0], *image[2:]) != (unary[0], *unary[2:]):
            raise self.shape_error(f"the image {image} must be N x 3 x H x W like the unaries {unary}")
        return [unary]

    def blob_shapes(self, shapes: Bottoms) -> list[Shape]:
        c = shapes[0][1]
        return [(1, 1, c, c)] * 3

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        m = MeanField(self.iterations, *self.thetas)
        m.spatial_weights, m.bilateral_weights, m.compatibility = blobs
        return m
