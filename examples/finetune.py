"""Fine-tune the bundled demo FCN for a few SGD steps as Caffe would train it, then save the weights.

    python examples/finetune.py --steps 5 --out demo-finetuned

The demo net (``protoseg/demo``) is a small Caffe FCN. Its six images and label maps are fed as its prototxt's
``transform_param`` says (BGR, mean 128, scale 1/64), padded to one size with the ignored label 255. The optimizer
groups come from the prototxt's ``lr_mult``/``decay_mult`` (:func:`protoseg.train.param_groups`) and the loss is
Caffe's ``SoftmaxWithLoss``: pixel-wise cross-entropy that skips label 255, averaged over the labelled pixels.
The fine-tuned net is written back as Caffe files (``OUT.prototxt``, ``OUT.caffemodel``) by
:func:`protoseg.to_caffe.write_caffe`: Caffe, or ``protoseg.load``, reads them as it read the original.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from protoseg.loader import open_net
from protoseg.run.demo import demo_files
from protoseg.run.palette import labels_from_image
from protoseg.run.preprocess import from_netparam, read_image
from protoseg.to_caffe import write_caffe
from protoseg.train import param_groups

#: SoftmaxWithLoss's ignore_label in the FCN and DeepLab training nets.
IGNORE_LABEL = 255


def demo_batch(netparam, prototxt: Path, images: Sequence[Path], label_dir: Path):
    """The demo images as one N x 3 x H x W blob and their labels as N x H x W, padded to the largest."""
    rgb = [read_image(p) for p in images]
    size = (max(a.shape[0] for a in rgb), max(a.shape[1] for a in rgb))
    pre = from_netparam(netparam, prototxt=prototxt).padded(size)
    labels = np.full((len(rgb), *size), IGNORE_LABEL, dtype=np.int64)
    for i, path in enumerate(images):
        with Image.open(label_dir / path.name) as im:
            gt = labels_from_image(im)
        labels[i, : gt.shape[0], : gt.shape[1]] = gt
    blobs = np.stack([pre.blob(a, name=str(p))[0] for a, p in zip(rgb, images)])
    return torch.from_numpy(blobs), torch.from_numpy(labels)


def main(argv: Sequence[str] | None = None) -> list[float]:
    """Run the fine-tuning; returns the loss of every step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2, help="base_lr (times each blob's lr_mult)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="times each blob's decay_mult")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=Path("demo-finetuned"), help="writes OUT.prototxt, OUT.caffemodel")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)

    prototxt, weights, images, label_dir = demo_files()
    opened = open_net(prototxt, weights)
    gm = opened.graph(trainable=True)
    x, labels = demo_batch(opened.netparam, prototxt, images, label_dir)
    optimizer = torch.optim.SGD(param_groups(gm, args.lr, args.weight_decay), lr=args.lr, momentum=args.momentum)
    gm.train()
    losses = []
    for step in range(args.steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(gm(x), labels, ignore_index=IGNORE_LABEL)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"step {step + 1}: loss {losses[-1]:.4f}")
    gm.eval()
    written = write_caffe(gm, x, Path(f"{args.out}.prototxt"), Path(f"{args.out}.caffemodel"), overwrite=args.force)
    print("wrote", " and ".join(map(str, written)))
    return losses


if __name__ == "__main__":
    main()
