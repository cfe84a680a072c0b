#!/usr/bin/env python3
"""Train the bundled demo model (``protoseg/demo/``): a tiny FCN that segments coloured shapes.

    python scripts/train_demo.py [--steps 1500] [--out protoseg/demo]

Everything is generated here from fixed seeds: a synthetic data set (disks, squares and triangles with
class-typical hues on textured, desaturated backgrounds), the prototxt, the trained caffemodel, a few test
images with their ground-truth label PNGs, and ``classes.txt``.

The net is trained *through protoseg's own conversion* of the prototxt it writes (``to_graph`` of the parsed
net, with Caffe's pooling rounding, Deconvolution and Crop), and fed by the same :class:`Preprocess` that
``protoseg run`` uses, so the caffemodel reproduces the training-time predictions exactly when protoseg (or
Caffe) loads it back. No step depends on wall-clock time; rerunning gives the same files on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protoseg.graph import attr_name, to_graph  # noqa: E402
from protoseg.io.prototxt import parse_prototxt  # noqa: E402
from protoseg.io.upgrade import upgrade_net  # noqa: E402
from protoseg.io.weights import write_weights  # noqa: E402
from protoseg.ir import build_net  # noqa: E402
from protoseg.run.palette import label_image  # noqa: E402
from protoseg.run.preprocess import from_netparam  # noqa: E402

CLASSES = ("background", "disk", "square", "triangle")
#: Hue range (degrees) of each object class; backgrounds are desaturated, so colour and shape both tell.
HUES = {1: (-30.0, 30.0), 2: (90.0, 150.0), 3: (200.0, 260.0)}
TRAIN_SIZE = 64
#: (width, height) of the bundled test images: varied, one not a multiple of the net's stride 4.
TEST_SIZES = ((96, 96), (128, 80), (80, 112), (90, 70), (112, 96), (72, 72))

PROTOTXT = """\
# The protoseg demo net (scripts/train_demo.py): a tiny FCN over 4 classes (background, disk, square, triangle).
# conv/relu x2 -> pool (stride 2) -> conv/relu x2 -> pool (stride 4) -> dilated conv -> 1x1 score ->
# learned 8x8 Deconvolution (x4) -> Crop to the input (offset 2, from the coordinate mapping).
name: "protoseg-demo"
layer {
  name: "data"
  type: "MemoryData"
  top: "data"
  top: "label"
  transform_param { scale: 0.015625 mean_value: 128 mean_value: 128 mean_value: 128 }
  memory_data_param { batch_size: 1 channels: 3 height: 64 width: 64 }
}
layer { name: "conv1_1" type: "Convolution" bottom: "data" top: "conv1_1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "relu1_1" type: "ReLU" bottom: "conv1_1" top: "conv1_1" }
layer { name: "conv1_2" type: "Convolution" bottom: "conv1_1" top: "conv1_2"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "relu1_2" type: "ReLU" bottom: "conv1_2" top: "conv1_2" }
layer { name: "pool1" type: "Pooling" bottom: "conv1_2" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2_1" type: "Convolution" bottom: "pool1" top: "conv2_1"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "relu2_1" type: "ReLU" bottom: "conv2_1" top: "conv2_1" }
layer { name: "conv2_2" type: "Convolution" bottom: "conv2_1" top: "conv2_2"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "relu2_2" type: "ReLU" bottom: "conv2_2" top: "conv2_2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2_2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
  convolution_param { num_output: 64 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
  convolution_param { num_output: 64 kernel_size: 3 pad: 1 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "score_fr" type: "Convolution" bottom: "conv4" top: "score_fr"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "upscore" type: "Deconvolution" bottom: "score_fr" top: "upscore"
  convolution_param { num_output: 4 kernel_size: 8 stride: 4 bias_term: false } }
layer { name: "score" type: "Crop" bottom: "upscore" bottom: "data" top: "score"
  crop_param { axis: 2 offset: 2 } }
"""


# ------------------------------------------------------------------------------------------------ data set
def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    return np.array([r, g, b]) + (v - c)


def _background(rs: np.random.RandomState, h: int, w: int) -> np.ndarray:
    """A desaturated texture: a random grey-ish tint, stripes at a random angle, smooth blotches, pixel noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = _hsv_to_rgb(rs.uniform(0, 360), rs.uniform(0.0, 0.25), rs.uniform(0.3, 0.8)) * 255
    angle, period = rs.uniform(0, np.pi), rs.uniform(4, 16)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    coarse = rs.standard_normal((h // 8 + 2, w // 8 + 2))
    blotch = np.asarray(Image.fromarray(coarse.astype(np.float32)).resize((w, h), Image.BILINEAR))
    texture = rs.uniform(5, 30) * stripes + 20 * blotch
    img = base[None, None, :] + texture[..., None] + rs.normal(0, 6, (h, w, 3))
    return img


def _mask(kind: int, rs: np.random.RandomState, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    r = rs.uniform(7, 16)
    cy, cx = rs.uniform(r * 0.5, h - r * 0.5), rs.uniform(r * 0.5, w - r * 0.5)
    if kind == 1:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    a = rs.uniform(0, np.pi / 2)
    u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
    v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
    if kind == 2:
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    inside = np.ones((h, w), bool)  # equilateral triangle: three half-planes at distance r/2 from the centre
    for k in range(3):
        t = a + k * 2 * np.pi / 3
        inside &= (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t) <= r * 0.6
    return inside


def sample(rs: np.random.RandomState, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image and its label map: 1-4 objects, later ones occluding earlier ones."""
    img = _background(rs, h, w)
    labels = np.zeros((h, w), np.uint8)
    for _ in range(rs.randint(1, 5)):
        kind = rs.randint(1, 4)
        m = _mask(kind, rs, h, w)
        lo, hi = HUES[kind]
        colour = _hsv_to_rgb(rs.uniform(lo, hi), rs.uniform(0.55, 1.0), rs.uniform(0.45, 1.0)) * 255
        shade = colour[None, None, :] + rs.normal(0, 8, (h, w, 3))
        img = np.where(m[..., None], shade, img)
        labels[m] = kind
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels


# ------------------------------------------------------------------------------------------------ training
def _init(net, rs: np.random.RandomState) -> dict[str, list[np.ndarray]]:
    """He-normal convolutions, zero biases, the upscore Deconvolution started as bilinear upsampling."""
    blobs = {}
    for layer in net.layers:
        if not layer.blob_shapes:
            continue
        w_shape = layer.blob_shapes[0]
        if layer.type == "Deconvolution":
            k = w_shape[-1]
            f = (k + 1) // 2
            c = f - 1 if k % 2 else f - 0.5
            og = np.ogrid[:k, :k]
            filt = (1 - abs(og[0] - c) / f) * (1 - abs(og[1] - c) / f)
            w = np.zeros(w_shape, np.float32)
            for i in range(w_shape[0]):
                w[i, i] = filt
            blobs[layer.name] = [w]
            continue
        fan_in = int(np.prod(w_shape[1:]))
        w = (rs.standard_normal(w_shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        blobs[layer.name] = [w] + [np.zeros(s, np.float32) for s in layer.blob_shapes[1:]]
    return blobs


def _trained(gm, net) -> dict[str, list[np.ndarray]]:
    """Read the weights back from the graph's modules (Convolution/Deconvolution: weight, then bias)."""
    taken: set[str] = set()
    out = {}
    for layer in net.layers:
        attr = attr_name(layer.name, taken)
        if not layer.blob_shapes:
            continue
        mod = gm.get_submodule(attr)
        arrays = [mod.weight.detach().numpy().copy()]
        if len(layer.blob_shapes) > 1:
            arrays.append(mod.bias.detach().numpy().copy())
        out[layer.name] = arrays
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "protoseg" / "demo")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    out: Path = args.out
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "demo.prototxt").write_text(PROTOTXT)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")

    netparam = upgrade_net(parse_prototxt(PROTOTXT, filename="demo.prototxt"))
    pre = from_netparam(netparam, prototxt=out / "demo.prototxt")
    net = build_net(netparam, {"data": (args.batch, 3, TRAIN_SIZE, TRAIN_SIZE)})
    rs = np.random.RandomState(0)
    gm = to_graph(net, _init(net, rs))
    gm.train()
    params = list(gm.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    data_rs = np.random.RandomState(1)
    start = time.perf_counter()
    for step in range(args.steps):
        batch = [sample(data_rs, TRAIN_SIZE, TRAIN_SIZE) for _ in range(args.batch)]
        x = torch.from_numpy(np.stack([pre.blob(img)[0] for img, _ in batch]))
        y = torch.from_numpy(np.stack([lab for _, lab in batch]).astype(np.int64))
        loss = F.cross_entropy(gm(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  ({time.perf_counter() - start:.0f} s)", flush=True)

    weights = _trained(gm, net)
    types = {layer.name: layer.type for layer in net.layers if layer.name in weights}
    write_weights(out / "demo.caffemodel", weights, types=types)

    test_rs = np.random.RandomState(2024)
    for i, (w, h) in enumerate(TEST_SIZES):
        img, lab = sample(test_rs, h, w)
        Image.fromarray(img).save(out / "images" / f"shapes_{i + 1}.png", optimize=True)
        label_image(lab).save(out / "labels" / f"shapes_{i + 1}.png", optimize=True)
    print(f"wrote {out}/demo.prototxt, demo.caffemodel, classes.txt, images/, labels/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
