#!/usr/bin/env python3
"""Time protoseg's DenseCRF against Krähenbühl's C++ dense CRF (pydensecrf), same inputs, same model.

    python bench/bench_crf.py [--size 513] [--classes 21] [--iters 10] [--preset deeplab_v1] [--repeat 1]
                              [--threads N]

The inputs are a real photograph (``../shared/images/people.jpg``, resized to SIZE×SIZE, BGR, DeepLab's mean
subtracted, as the layer sees it) and scores made from PSPNet's label map of it (one-hot at 1/8 resolution,
noise added, bilinearly upsampled ×8 like ``fc8_interp``); without ../shared, a synthetic image and scores.

The C++ side is ``pydensecrf`` (PyPI ``pydensecrf2`` builds it from source), given DeepLab's exact model: the
layer's features (x/σ, y/σ[, c/σ_rgb]), Potts weights, ``NORMALIZE_AFTER`` (the layer's per-pixel
normalisation) and the unary ``-score``. It is the 2013 version of the code DeepLab bundles: the same lattice,
but a real ``exp`` instead of ``fast_exp``. Both timings include building the lattices. Without pydensecrf the
script times protoseg alone and says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
sys.path.insert(0, str(ROOT))

from protoseg.crf import PRESETS, CrfParams, dense_crf  # noqa: E402

#: DeepLab's BGR mean, subtracted by its data layer before the image reaches DenseCRF.
MEAN_BGR = (104.008, 116.669, 122.675)


def make_inputs(size: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(scores C×H×W, image 3×H×W BGR mean-subtracted, description), float32."""
    rng = np.random.default_rng(seed)
    photo, labels = IMAGES / "people.jpg", IMAGES / "people_pascal_voc.png"
    if photo.exists() and labels.exists():
        from PIL import Image

        rgb = np.asarray(Image.open(photo).convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
        image = rgb[:, :, ::-1].transpose(2, 0, 1) - np.array(MEAN_BGR, np.float32)[:, None, None]
        from protoseg.run.palette import labels_from_image

        label = labels_from_image(Image.open(labels).resize((size, size), Image.NEAREST)).astype(np.int64)
        label = np.where(label < classes, label, 0)
        source = f"{photo.name} + PSPNet labels"
    else:
        yy, xx = np.mgrid[:size, :size] / size
        label = (np.floor(xx * 4) + 4 * np.floor(yy * 3)).astype(np.int64) % classes
        image = np.stack([np.sin(7 * xx + c) * 100 for c in range(3)]).astype(np.float32)
        image += rng.normal(0, 8, image.shape).astype(np.float32)
        source = "synthetic blocks"
    coarse = np.eye(classes, dtype=np.float32)[label[::8, ::8]].transpose(2, 0, 1)
    coarse = 4 * (coarse + rng.normal(0, 0.6, coarse.shape).astype(np.float32))
    scores = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None], size=(size, size), mode="bilinear", align_corners=True
    )[0].numpy()
    return np.ascontiguousarray(scores), np.ascontiguousarray(image, dtype=np.float32), source


def run_pydensecrf(scores: np.ndarray, image: np.ndarray, p: CrfParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    c, h, w = scores.shape
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    crf = dcrf.DenseCRF(h * w, c)
    crf.setUnaryEnergy(np.ascontiguousarray(-scores.reshape(c, -1)))
    pos = np.stack([xs.ravel() / np.float32(p.pos_xy_std), ys.ravel() / np.float32(p.pos_xy_std)])
    crf.addPairwiseEnergy(np.ascontiguousarray(pos), compat=float(p.pos_w), normalization=dcrf.NORMALIZE_AFTER)
    s, t = np.float32(p.bi_xy_std), np.float32(p.bi_rgb_std)
    bil = np.concatenate([np.stack([xs.ravel() / s, ys.ravel() / s]), image.reshape(3, -1) / t])
    crf.addPairwiseEnergy(np.ascontiguousarray(bil), compat=float(p.bi_w), normalization=dcrf.NORMALIZE_AFTER)
    return np.array(crf.inference(p.max_iter), dtype=np.float32).reshape(c, h, w)


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--preset", default="deeplab_v1", choices=sorted(PRESETS))
    parser.add_argument("--repeat", type=int, default=1, help="report the best of this many runs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = PRESETS[args.preset]
    params = CrfParams(**{**base.as_kwargs(), "max_iter": args.iters}, source=base.source)
    scores, image, source = make_inputs(args.size, args.classes)
    print(f"{args.size}x{args.size}, {args.classes} classes, {args.iters} iterations, preset {args.preset} "
          f"({source}); torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    s, im = torch.from_numpy(scores)[None], torch.from_numpy(image)[None]
    cpu_time, ours = timed(lambda: dense_crf(s, im, **params.as_kwargs())[0].numpy(), args.repeat)
    print(f"protoseg CPU:       {cpu_time:7.2f} s")
    if torch.cuda.is_available():
        sc, imc = s.cuda(), im.cuda()

        def on_gpu() -> np.ndarray:
            out = dense_crf(sc, imc, **params.as_kwargs())
            torch.cuda.synchronize()
            return out[0].cpu().numpy()

        on_gpu()  # warm-up: CUDA context and kernels
        gpu_time, ours_gpu = timed(on_gpu, args.repeat)
        print(f"protoseg CUDA:      {gpu_time:7.2f} s   ({torch.cuda.get_device_name()}); "
              f"max |CUDA - CPU| = {np.abs(ours_gpu - ours).max():.2e}")
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        print("pydensecrf is not installed (pip install pydensecrf2): no C++ comparison, protoseg timed alone")
        return
    cxx_time, cxx = timed(lambda: run_pydensecrf(scores, image, params), args.repeat)
    agree = (ours.argmax(0) == cxx.argmax(0)).mean()
    print(f"pydensecrf (C++):   {cxx_time:7.2f} s   (single-threaded)")
    print(f"time ratio protoseg CPU / C++: {cpu_time / cxx_time:.2f}")
    print(f"label agreement: {100 * agree:.3f} % of pixels; max |p_protoseg - p_C++| = {np.abs(ours - cxx).max():.2e}")


if __name__ == "__main__":
    main()
