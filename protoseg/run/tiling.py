"""Sliding-window inference, as the evaluation code of fixed-size releases runs it.

Two schemes are in use, and :class:`protoseg.zoo.Tiling` says which:

* **PSPNet** (``margin`` 0, ``softmax``, ``flip``; hszhao/PSPNet ``evaluation/scale_process.m``): an image no
  larger than the window is padded bottom/right with zeros (the mean, after subtraction) and run once; a larger
  one is padded up to the window where it is smaller, then windows start every ``stride`` pixels, the last one
  flush with the bottom/right edge. Each window's logits plus those of its mirror image (flipped back) go
  through a softmax, and overlapping probabilities are averaged.
* **Dilation** (``margin`` 186; fyu/dilation ``predict.py``): the image is padded by ``margin`` on every side
  by reflection (OpenCV's ``BORDER_REFLECT_101``), windows step by their labelled area (window - 2 margin) and
  do not overlap, a window running past the padded image is reflected again at its bottom/right, and the
  outputs are laid side by side. An output smaller than the labelled area (Dilation8's 1/8 ``prob``) is
  zoomed as ``util.interp_map`` does: output pixel ``y`` reads the map at ``y / zoom`` bilinearly (its last
  row and column repeated where that reads past the map).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from protoseg.errors import ProtosegError
from protoseg.zoo import Tiling

__all__ = ["tiled_scores"]

Forward = Callable[[torch.Tensor], torch.Tensor]


def tiled_scores(forward: Forward, x: torch.Tensor, window: tuple[int, int], tiling: Tiling) -> torch.Tensor:
    """Scores ``1 x C x H x W`` for one preprocessed image ``x`` (``1 x 3 x H x W``) from ``forward``, a net that
    takes ``window``-sized inputs (H, W)."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ProtosegError(f"tiled inference takes one image at a time, got a batch of shape {tuple(x.shape)}")
    if tiling.margin:
        return _reflected_tiles(forward, x, window, tiling)
    return _overlapping_windows(forward, x, window, tiling)


def _window_scores(forward: Forward, x: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    out = forward(x)
    if tiling.flip:
        out = out + forward(x.flip(-1)).flip(-1)
    return torch.softmax(out, dim=1) if tiling.softmax else out


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride``, the last flush with the end (PSPNet's grid)."""
    count = -(-(size - window) // stride) + 1
    return sorted({min(i * stride, size - window) for i in range(count)})


def _overlapping_windows(forward: Forward, x: torch.Tensor, window: tuple[int, int], tiling: Tiling) -> torch.Tensor:
    h, w = x.shape[2:]
    wh, ww = window
    padded = F.pad(x, (0, max(0, ww - w), 0, max(0, wh - h)))  # zeros: the mean, after subtraction
    ph, pw = padded.shape[2:]
    total = count = None
    for y in _starts(ph, wh, tiling.stride):
        for x0 in _starts(pw, ww, tiling.stride):
            scores = _window_scores(forward, padded[:, :, y:y + wh, x0:x0 + ww], tiling)
            if scores.shape[2:] != (wh, ww):
                raise ProtosegError(f"tiled inference: the net's output is {scores.shape[3]}x{scores.shape[2]} for "
                                    f"a {ww}x{wh} window; overlapping windows need outputs at window size")
            if total is None:
                total = scores.new_zeros((1, scores.shape[1], ph, pw))
                count = scores.new_zeros((1, 1, ph, pw))
            total[:, :, y:y + wh, x0:x0 + ww] += scores
            count[:, :, y:y + wh, x0:x0 + ww] += 1
    return (total / count)[:, :, :h, :w]


def _reflect(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflection padding without repeating the edge (``BORDER_REFLECT_101``), any amount: torch's reflect mode
    takes less than the size per call, so wide pads are done in steps."""
    while top or bottom or left or right:
        h, w = x.shape[2:]
        step = [min(p, size - 1) for p, size in ((left, w), (right, w), (top, h), (bottom, h))]
        if max(step) == 0:
            raise ProtosegError(f"cannot reflect a {w}x{h} image to pad it; it is too small for this net")
        x = F.pad(x, tuple(step), mode="reflect")
        left, right, top, bottom = (p - s for p, s in zip((left, right, top, bottom), step))
    return x


def _zoom(prob: torch.Tensor, zoom: int, h: int, w: int) -> torch.Tensor:
    """``util.interp_map`` of fyu/dilation: output ``(y, x)`` is the map bilinearly at ``(y / zoom, x / zoom)``."""
    def axis(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(n, device=prob.device)
        lo = pos // zoom
        frac = ((pos % zoom).to(prob.dtype) / zoom)
        return lo.clamp(max=size - 1), (lo + 1).clamp(max=size - 1), frac

    r0, r1, fy = axis(h, prob.shape[2])
    c0, c1, fx = axis(w, prob.shape[3])
    rows = prob[:, :, r0] * (1 - fy)[:, None] + prob[:, :, r1] * fy[:, None]
    return rows[:, :, :, c0] * (1 - fx) + rows[:, :, :, c1] * fx


def _reflected_tiles(forward: Forward, x: torch.Tensor, window: tuple[int, int], tiling: Tiling) -> torch.Tensor:
    h, w = x.shape[2:]
    m = tiling.margin
    oh, ow = window[0] - 2 * m, window[1] - 2 * m
    if oh <= 0 or ow <= 0 or tiling.stride != oh or oh != ow:
        raise ProtosegError(f"tiled inference: a {window[1]}x{window[0]} window with margin {m} labels "
                            f"{ow}x{oh} pixels, so its stride must be that ({tiling.stride} given)")
    padded = _reflect(x, m, m, m, m)
    rows = []
    for y in range(0, h, oh):
        tiles = []
        for x0 in range(0, w, ow):
            tile = padded[:, :, y:y + window[0], x0:x0 + window[1]]
            tile = _reflect(tile, 0, window[0] - tile.shape[2], 0, window[1] - tile.shape[3])
            tiles.append(_window_scores(forward, tile, tiling))
        rows.append(torch.cat(tiles, dim=3))
    prob = torch.cat(rows, dim=2)
    th, tw = tiles[0].shape[2:]
    if th != tw or oh % th:
        raise ProtosegError(f"tiled inference: the net labels {ow}x{oh} pixels per window with an output of "
                            f"{tw}x{th}; that is no whole zoom")
    zoom = oh // th
    return _zoom(prob, zoom, h, w) if zoom > 1 else prob[:, :, :h, :w]
