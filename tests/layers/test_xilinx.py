"""caffe-xilinx's DeephiResize against a NumPy transcription of the layer and of the ``cv::resize`` it calls,
and against OpenCV's own ``cv2.resize`` where OpenCV is installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protoseg.errors import LayerParamError, ShapeError
from protoseg.io.prototxt import parse_prototxt
from protoseg.loader import detect_fork
from tests.layers.helpers import assert_close, expect_error, forward, rand


def cv_resize(src: np.ndarray, cols: int, rows: int, bilinear: bool) -> np.ndarray:
    """``cv::resize`` of a float32 matrix to ``rows x cols``: INTER_NEAREST, or INTER_LINEAR's generic path
    (horizontal pass with exact edges, then vertical with clipped rows; INTER_AREA for an exact halving)."""
    src_rows, src_cols = src.shape
    if (src_rows, src_cols) == (rows, cols):
        return src.copy()
    if not bilinear:
        fx, fy = 1.0 / (cols / src_cols), 1.0 / (rows / src_rows)
        xs = [min(math.floor(x * fx), src_cols - 1) for x in range(cols)]
        ys = [min(math.floor(y * fy), src_rows - 1) for y in range(rows)]
        return src[np.ix_(ys, xs)]
    if (src_rows, src_cols) == (2 * rows, 2 * cols):
        blocks = src.reshape(rows, 2, cols, 2)
        return ((blocks[:, 0, :, 0] + blocks[:, 0, :, 1] + blocks[:, 1, :, 0] + blocks[:, 1, :, 1])
                * np.float32(0.25)).astype(np.float32)
    scale_x, scale_y = 1.0 / (cols / src_cols), 1.0 / (rows / src_rows)
    horizontal = np.empty((src_rows, cols), np.float32)
    for dx in range(cols):
        f = np.float32((dx + 0.5) * scale_x - 0.5)
        sx = math.floor(f)
        f = np.float32(f - np.float32(sx))
        if sx < 0:
            f, sx = np.float32(0), 0
        if sx >= src_cols - 1:
            horizontal[:, dx] = src[:, src_cols - 1]
            continue
        horizontal[:, dx] = src[:, sx] * (np.float32(1) - f) + src[:, sx + 1] * f
    out = np.empty((rows, cols), np.float32)
    for dy in range(rows):
        f = np.float32((dy + 0.5) * scale_y - 0.5)
        sy = math.floor(f)
        f = np.float32(f - np.float32(sy))
        r0, r1 = min(max(sy, 0), src_rows - 1), min(max(sy + 1, 0), src_rows - 1)
        out[dy] = horizontal[r0] * (np.float32(1) - f) + horizontal[r1] * f
    return out


def deephi_resize(x: np.ndarray, out_h: int, out_w: int, bilinear: bool, resize=cv_resize) -> np.ndarray:
    """DeephiResizeLayer::Forward_cpu: each plane into a W x H matrix (``at<float>(w, h)``), resized to
    ``Size(out_h, out_w)``, read back transposed."""
    n, c = x.shape[:2]
    top = np.empty((n, c, out_h, out_w), np.float32)
    for i in range(n):
        for ch in range(c):
            top[i, ch] = resize(np.ascontiguousarray(x[i, ch].T), out_h, out_w, bilinear).T
    return top


CASES = [
    pytest.param("resize_type: BILINEAR scale_h: 2 scale_w: 2", (1, 3, 5, 7), (10, 14), True, id="fpn-x2"),
    pytest.param("resize_type: BILINEAR scale_h: 1.5 scale_w: 0.7", (2, 2, 6, 9), (9, 6), True, id="mixed"),
    pytest.param("resize_type: BILINEAR new_height: 11 new_width: 4", (1, 2, 4, 9), (11, 4), True, id="fixed-size"),
    pytest.param("resize_type: BILINEAR new_height: 3 new_width: 4", (1, 2, 6, 8), (3, 4), True, id="halving"),
    pytest.param("scale_h: 2 scale_w: 3", (1, 2, 3, 4), (6, 12), False, id="nearest-default"),
    pytest.param("resize_type: NEAREST new_height: 7 new_width: 5", (1, 1, 10, 3), (7, 5), False, id="nearest-odd"),
    pytest.param("resize_type: BILINEAR scale_h: 1.1 scale_w: 0.3", (1, 1, 3, 10), (3, 3), True, id="float-truncation"),
    pytest.param("", (1, 2, 4, 5), (4, 5), False, id="defaults-identity"),
]


@pytest.mark.parametrize("params, shape, size, bilinear", CASES)
def test_deephi_resize_matches_the_layer_over_cv_resize(params: str, shape, size, bilinear: bool) -> None:
    x = rand(*shape)
    (y,) = forward("DeephiResize", f"deephi_resize_param {{ {params} }}", {"x": x}, fork="xilinx")
    assert y.shape == (*shape[:2], *size)
    assert_close(y, deephi_resize(x, *size, bilinear))


@pytest.mark.parametrize("params, shape, size, bilinear", CASES)
def test_deephi_resize_matches_opencv_itself(params: str, shape, size, bilinear: bool) -> None:
    cv2 = pytest.importorskip("cv2")

    def resize(src, cols, rows, linear):
        return cv2.resize(src, (cols, rows), interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST)

    x = rand(*shape)
    (y,) = forward("DeephiResize", f"deephi_resize_param {{ {params} }}", {"x": x}, fork="xilinx")
    np.testing.assert_allclose(y, deephi_resize(x, *size, bilinear, resize), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("params, shape, error, match", [
    pytest.param("new_height: 4", (1, 1, 5, 5), LayerParamError, "both new_height and new_width", id="half-size"),
    pytest.param("scale_w: 2", (1, 1, 5, 5), LayerParamError, "both scale_h and scale_w", id="half-scale"),
    pytest.param("use_dpu: true", (1, 1, 5, 5), LayerParamError, "fixed-point", id="dpu"),
    pytest.param("scale_h: -1 scale_w: 2", (1, 1, 5, 5), LayerParamError, "must be positive", id="negative-scale"),
    pytest.param("scale_h: 0.1 scale_w: 1", (1, 1, 5, 5), ShapeError, "resizes 5 x 5 to 0 x 5", id="to-nothing"),
    pytest.param("scale_h: 1e30 scale_w: 1e30", (1, 1, 5, 5), ShapeError, "beyond any blob", id="overflow"),
])
def test_invalid(params: str, shape, error, match: str) -> None:
    expect_error(error, match, "DeephiResize", f"deephi_resize_param {{ {params} }}", {"x": shape}, fork="xilinx")


def test_a_deephi_resize_file_reads_as_caffe_xilinx() -> None:
    text = ('layer { name: "up" type: "DeephiResize" bottom: "x" top: "y" '
            'deephi_resize_param { scale_h: 2 scale_w: 2 } }\n')
    detection = detect_fork(parse_prototxt(text))
    assert detection.fork == "xilinx", detection
