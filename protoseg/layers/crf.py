"""DeepLab's DenseCRF layer: bottoms (scores, data_dim[, image]) -> refined probabilities (or their log).

The arithmetic lives in :func:`protoseg.crf.dense_crf`; this converter only reads ``dense_crf_param``.
"""

from __future__ import annotations

import torch
from torch import nn

from protoseg.errors import ProtosegError
from protoseg.layers.base import Bottoms, Converter, Shape, register


class DenseCRF(nn.Module):
    def __init__(self, max_iter: int, pos_w: tuple[float, ...], pos_xy_std: tuple[float, ...],
                 bi_w: tuple[float, ...], bi_xy_std: tuple[float, ...], bi_rgb_std: tuple[float, ...],
                 output_probability: bool):
        super().__init__()
        self.max_iter, self.output_probability = max_iter, output_probability
        self.pos_w, self.pos_xy_std = pos_w, pos_xy_std
        self.bi_w, self.bi_xy_std, self.bi_rgb_std = bi_w, bi_xy_std, bi_rgb_std

    def forward(self, scores: torch.Tensor, data_dim: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        from protoseg.crf import dense_crf

        return dense_crf(scores, image, data_dim, max_iter=self.max_iter, pos_w=self.pos_w,
                         pos_xy_std=self.pos_xy_std, bi_w=self.bi_w, bi_xy_std=self.bi_xy_std,
                         bi_rgb_std=self.bi_rgb_std, output_probability=self.output_probability)

    def extra_repr(self) -> str:
        return (f"max_iter={self.max_iter}, pos_w={self.pos_w}, pos_xy_std={self.pos_xy_std}, bi_w={self.bi_w}, "
                f"bi_xy_std={self.bi_xy_std}, bi_rgb_std={self.bi_rgb_std}, output_probability={self.output_probability}")


@register("DenseCRF", fork=("deeplab-v1", "deeplab-v2"))
class DenseCRFConverter(Converter):
    """DeepLab's DenseCRF: mean-field inference on the permutohedral lattice."""

    bottoms = (2, 3)

    def setup(self) -> None:
        from protoseg.crf import check_params

        p = self.param.dense_crf_param
        self.config = dict(max_iter=p.max_iter, pos_w=tuple(p.pos_w), pos_xy_std=tuple(p.pos_xy_std),
                           bi_w=tuple(p.bi_w), bi_xy_std=tuple(p.bi_xy_std), bi_rgb_std=tuple(p.bi_rgb_std),
                           output_probability=p.output_probability)
        try:
            check_params(p.max_iter, p.pos_w, p.pos_xy_std, p.bi_w, p.bi_xy_std, p.bi_rgb_std)
        except ProtosegError as e:
            raise self.error(str(e).removeprefix("dense_crf: ")) from None
        if p.bi_w and len(self.param.bottom) < 3:
            raise self.error("a bilateral kernel needs the image as a third bottom")

    def infer(self, shapes: Bottoms) -> list[Shape]:
        scores = shapes[0]
        if len(scores) != 4:
            raise self.shape_error(f"scores must be N x C x H x W, got {scores}")
        if tuple(shapes[1]) != (scores[0], 1, 1, 2):
            raise self.shape_error(f"data_dim must be {(scores[0], 1, 1, 2)}, got {shapes[1]}")
        if len(shapes) == 3 and (shapes[2][0], *shapes[2][2:]) != (scores[0], *scores[2:]):
            raise self.shape_error(f"the image {shapes[2]} does not match the scores {scores}")
        return [scores]

    def module(self, shapes: Bottoms, blobs: list) -> nn.Module:
        return DenseCRF(**self.config)
