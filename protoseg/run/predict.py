"""Images in, per-class scores and label maps out: the converted net wrapped with its preprocessing.

Scores always come back at the image's own size. FCN nets end in a Crop to the input and DeepLab's test nets
in an Interp to it, so normally nothing is resized; a net whose output has another size (a DeepLab v1 net
without its ``fc8_interp``, say) is resized bilinearly with Caffe Interp's corner alignment, with a warning.
Padded inputs (DeepLab, fixed-size ``.pt2``) are cropped back to the image; resized ones (SegNet, ENet, ICNet)
are resized back (bilinear, pixel centres aligned, as their scripts resize the image); tiled ones (PSPNet,
Dilation: :mod:`protoseg.run.tiling`) are assembled at the image's size.

Images are batched only with neighbours of the same input size: padding an FCN input to batch it would change
its scores near the border.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from protoseg import zoo
from protoseg.errors import FormatError, ProtosegError, ProtosegWarning
from protoseg.io.atomic import write_file
from protoseg.run.preprocess import IMAGE_SUFFIXES, Preprocess, from_netparam, read_image

__all__ = ["Prediction", "Segmenter", "collect_images", "write_prediction", "planned_outputs", "evaluate"]

PathLike = str | os.PathLike


@dataclass
class Prediction:
    """One image's result; ``scores`` are C×H×W at the image's size, ``labels`` H×W class indices.

    A net with one output channel (HED's edges, a Sigmoid foreground probability) gives a *map*: its labels
    are ``scores[0] > threshold`` (1 where above), and :func:`write_prediction` writes the map itself.
    """

    name: str  # the image's file stem (or a caller's name for an array)
    image: np.ndarray  # H×W×3 uint8 RGB, as read
    scores: np.ndarray  # float32 C×H×W, the net's output (PSPNet's tiling: probabilities); with samples, their mean
    labels: np.ndarray  # int64 H×W, argmax of scores
    crf_labels: np.ndarray | None = None  # int64 H×W after DenseCRF, when asked for
    variance: np.ndarray | None = None  # float32 C×H×W over Monte Carlo samples (Bayesian SegNet), when asked for

    @property
    def is_map(self) -> bool:
        """One channel: a probability or edge map rather than per-class scores."""
        return self.scores.shape[0] == 1


class Segmenter:
    """A converted net with the preprocessing it was trained with; see :meth:`from_caffe`, :meth:`from_pt2`,
    :meth:`from_zoo`."""

    def __init__(
        self,
        module: nn.Module,
        preprocess: Preprocess,
        *,
        output: str | None = None,
        input_names: Sequence[str] = ("data",),
        categories: Sequence[str] | None = None,
        crf: str | None = None,
        device: str | torch.device = "cpu",
        name: str = "model",
        samples: int = 1,
        seed: int = 0,
        precision: str = "fp32",
        fast: bool = True,
        threshold: float = 0.5,
        tiling: zoo.Tiling | None = None,
        window: tuple[int, int] | None = None,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input size per batch: let cuDNN pick its kernels once
        fast = fast and isinstance(module, torch.fx.GraphModule) and "owners" in module.meta  # a protoseg graph
        if precision != "fp32" and not fast:
            raise ProtosegError(f"--precision {precision} runs the fast form of a protoseg graph only")
        if fast:  # the faithful graph is for inspecting; predictions run its fast form (same outputs in fp32)
            from protoseg.optimize import optimize

            module = optimize(module, precision=precision, device=self.device)
        self.precision = precision
        self.module = module.to(self.device).eval()
        self.preprocess = preprocess
        self.output = output
        #: Where a one-channel output (a map) counts as label 1.
        self.threshold = float(threshold)
        self.input_names = list(input_names)
        self.categories = list(categories) if categories else None
        self.name = name
        self.crf_params = _crf_preset(crf) if crf else None
        if samples < 1:
            raise ProtosegError(f"--samples must be at least 1, got {samples}")
        #: Forward passes per image; their outputs' mean and variance are reported (Bayesian SegNet: the nets'
        #: Dropout layers with sample_weights_test draw anew each pass, from torch's generator seeded by ``seed``).
        self.samples, self.seed = samples, seed
        #: Sliding windows of ``window`` (H, W) over each image instead of one forward pass (PSPNet, Dilation).
        self.tiling, self.window = tiling, window
        if tiling is not None and (window is None or samples != 1 or "data_dim" in self.input_names):
            raise ProtosegError(f"{name}: tiled inference needs the window size and runs one sample per window")
        self._warned_resize = False
        extra = [n for n in self.input_names[1:] if n != "data_dim"]
        if extra:
            raise ProtosegError(
                f"{name}: the net takes inputs {', '.join(self.input_names)}; protoseg feeds images to the first "
                f"and knows no value for {', '.join(extra)} (remove that input from the prototxt)"
            )

    # ----------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_caffe(
        cls,
        prototxt: PathLike,
        weights: PathLike,
        *,
        defines: Mapping[str, str] | None = None,
        mean: Sequence[float] | None = None,
        entry: zoo.ZooModel | None = None,
        fork: str | None = None,
        scale: float | None = None,
        **kwargs,
    ) -> Segmenter:
        """Convert ``prototxt`` + ``weights``; the mean comes from ``mean``, the data layer, or the zoo entry
        (given, or found because ``prototxt`` is one of the zoo's own files); ``scale`` overrides the data
        layer's."""
        from protoseg.loader import open_net

        entry = entry or _zoo_entry_for(prototxt)
        output = kwargs.pop("output", None) or (entry.output if entry is not None else None)
        # the chosen blob becomes the net's output, even one that later layers consume
        if entry is not None:
            fork = fork or entry.fork
            scale = scale if scale is not None or entry.scale == 1 else entry.scale
        opened = open_net(prototxt, weights, defines=dict(defines) if defines else None, fork=fork,
                          outputs=[output] if output else None)
        pre = from_netparam(
            opened.netparam,
            prototxt=prototxt,
            mean=mean,
            pad_to=entry.input_size if entry is not None and entry.fit == "pad" else None,
            resize_to=entry.input_size if entry is not None and entry.fit == "resize" else None,
            fallback_mean=entry.mean_bgr if entry is not None else None,
            fallback_source=f"zoo entry {entry.name!r}" if entry is not None else "",
            fork=opened.net.fork,
            scale=scale,
        )
        net = opened.net
        inputs = [net.caffe_name.get(i, i) for i in net.inputs]
        categories = kwargs.pop("categories", None) or (entry.categories if entry is not None else None)
        if entry is not None and entry.tile is not None:
            kwargs.setdefault("tiling", entry.tile)
            kwargs.setdefault("window", entry.input_size)
        return cls(opened.graph(), pre, output=output, input_names=inputs, categories=categories,
                   name=kwargs.pop("name", Path(prototxt).name), **kwargs)

    @classmethod
    def from_zoo(cls, name: str, weights: PathLike, *, mean: Sequence[float] | None = None, **kwargs) -> Segmenter:
        """A registry model (``protoseg.zoo``) with its published preprocessing; ``weights`` is its caffemodel."""
        entry = zoo.get(name)
        return cls.from_caffe(entry.prototxt_path(), weights, mean=mean, entry=entry, name=entry.name, **kwargs)

    @classmethod
    def from_pt2(cls, path: PathLike, *, mean: Sequence[float] | None = None, scale: float | None = None,
                 **kwargs) -> Segmenter:
        """A ``.pt2`` written by ``protoseg convert``, read without running anything in it (:mod:`protoseg.pt2`).

        Its preprocessing is the one recorded at conversion; ``mean`` (``--mean B,G,R``) overrides the mean and
        is required when none was recorded (an ``Input``-layer deploy net).
        """
        from protoseg import pt2

        path = Path(path)
        model = pt2.read(path)
        recorded = model.preprocess or {}
        if mean is None and recorded.get("mean") is None:
            raise ProtosegError(
                f"{path}: the net records no mean (an Input-layer deploy net?); pass --mean B,G,R (FCN and DeepLab "
                "on VOC: 104.008,116.669,122.675)"
            )
        pad_to = recorded.get("pad_to")
        try:
            pre = Preprocess(
                mean=np.asarray(mean if mean is not None else recorded["mean"], dtype=np.float64).reshape(3),
                scale=float(scale if scale is not None else recorded.get("scale", 1.0)),
                pad_to=(int(pad_to[0]), int(pad_to[1])) if pad_to else None,
                bgr=bool(recorded.get("bgr", True)),
                source="--mean" if mean is not None else f"{path.name} (recorded at conversion)",
            )
        except (TypeError, ValueError, IndexError) as e:
            raise FormatError(f"{path}: its recorded preprocessing is malformed ({e})") from None
        net = model.net
        inputs = [net.caffe_name.get(i, i) for i in net.inputs]
        if kwargs.get("precision", "fp32") == "fp32":  # unless asked otherwise, run as it was converted
            kwargs["precision"] = model.precision
        return cls(model.graph, pre, input_names=inputs, name=path.name, **kwargs)

    # ----------------------------------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict_arrays(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[Prediction]:
        """Predict a batch of H×W×3 uint8 RGB arrays (they must share one input size after padding)."""
        names = list(names) if names is not None else [f"image{i}" for i in range(len(images))]
        blobs, sizes = zip(*(self.preprocess.blob(img, name=n) for img, n in zip(images, names)))
        batch = np.stack(blobs)
        n_real = batch.shape[0]
        x = torch.from_numpy(batch).to(self.device)
        args = [x]
        if "data_dim" in self.input_names[1:]:
            dims = [[[[h, w]]] for h, w in sizes] + [[[list(sizes[-1])]]] * (batch.shape[0] - n_real)
            args.append(torch.tensor(dims, dtype=torch.float32, device=self.device))
        variance = None
        if self.tiling is not None:
            from protoseg.run.tiling import tiled_scores

            out = torch.cat([tiled_scores(lambda w: self._pick(self.module(w)), x[i:i + 1], self.window, self.tiling)
                             for i in range(n_real)])
        elif self.samples == 1:
            out = self._pick(self.module(*args))[:n_real]
        else:
            draws = torch.stack([self._pick(self.module(*args))[:n_real] for _ in range(self.samples)])
            out, variance = draws.mean(0), draws.var(0, unbiased=False)
        if out.dim() != 4:
            raise ProtosegError(f"{self.name}: output {self.output or ''} has shape {tuple(out.shape)}; "
                                "expected per-class scores N×C×H×W")
        if tuple(out.shape[2:]) != tuple(x.shape[2:]):
            if not self._warned_resize:
                warnings.warn(
                    f"{self.name}: the net's output is {out.shape[3]}x{out.shape[2]} (WxH) but its input "
                    f"{x.shape[3]}x{x.shape[2]}; resizing scores bilinearly (Caffe Interp alignment)",
                    ProtosegWarning, stacklevel=2,
                )
                self._warned_resize = True
            out = torch.nn.functional.interpolate(out, size=tuple(x.shape[2:]), mode="bilinear", align_corners=True)
            if variance is not None:
                variance = torch.nn.functional.interpolate(variance, size=tuple(x.shape[2:]), mode="bilinear",
                                                           align_corners=True)
        if out.shape[1] == 1 and self.crf_params is not None:
            raise ProtosegError(f"{self.name}: --crf needs per-class scores, but output {self.output or ''} has one "
                                "channel (a probability or edge map)")
        results = []
        for i, (h, w) in enumerate(sizes):
            scores, blob = out[i:i + 1], x[i:i + 1]
            var = None if variance is None else variance[i:i + 1]
            if self.preprocess.resize_to is not None:  # back from the net's size, as the image was resized to it
                scores, blob, var = (None if t is None else torch.nn.functional.interpolate(
                    t, size=(h, w), mode="bilinear", align_corners=False) for t in (scores, blob, var))
            scores, blob = scores[:, :, :h, :w], blob[:, :, :h, :w]
            crf_labels = None
            if self.crf_params is not None:
                from protoseg.crf import dense_crf

                probs = dense_crf(scores, blob, **self.crf_params.as_kwargs())
                crf_labels = probs[0].argmax(0).cpu().numpy()
            scores_np = scores[0].float().cpu().numpy()
            var = None if var is None else var[0, :, :h, :w].float().cpu().numpy()
            labels = (scores_np[0] > self.threshold).astype(np.int64) if len(scores_np) == 1 else scores_np.argmax(0)
            results.append(Prediction(names[i], images[i], scores_np, labels, crf_labels, var))
        return results

    def predict(
        self,
        images: Iterable[PathLike | np.ndarray],
        *,
        batch_size: int = 1,
        progress: bool = False,
        workers: int = 0,
    ) -> Iterator[Prediction]:
        """Predict image files (or arrays) in order, ``batch_size`` at a time; a tqdm bar on a terminal if
        ``progress``; ``workers`` processes decode the files ahead of the net (torch's DataLoader)."""
        from tqdm import tqdm

        if batch_size < 1:
            raise ProtosegError(f"--batch-size must be at least 1, got {batch_size}")
        if workers < 0:
            raise ProtosegError(f"--workers must be 0 or more, got {workers}")
        items = list(images)
        if self.samples > 1:
            torch.manual_seed(self.seed)
        bar = tqdm(total=len(items), unit="img", desc=self.name, leave=False,
                   disable=None if progress else True)  # None: only on a terminal
        pending: list[tuple[np.ndarray, str]] = []
        key = None
        try:
            for img, name in _decoded(items, workers):
                size = self.preprocess.pad_to or self.preprocess.resize_to or img.shape[:2]
                if pending and (size != key or len(pending) >= batch_size):
                    yield from self._flush(pending, bar)
                    pending = []
                key = size
                pending.append((img, name))
            if pending:
                yield from self._flush(pending, bar)
        finally:
            bar.close()

    def _flush(self, pending: list[tuple[np.ndarray, str]], bar) -> Iterator[Prediction]:
        results = self.predict_arrays([p[0] for p in pending], [p[1] for p in pending])
        bar.update(len(results))
        yield from results

    def _pick(self, out) -> torch.Tensor:
        """The score tensor among the net's outputs: ``self.output`` by name, else the only/last 4-D one."""
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, Mapping):
            if self.output is not None:
                if self.output not in out:
                    raise ProtosegError(f"{self.name}: no output named {self.output!r}; outputs are {', '.join(out)}")
                return out[self.output]
            four_d = [k for k, v in out.items() if isinstance(v, torch.Tensor) and v.dim() == 4]
            if not four_d:
                raise ProtosegError(f"{self.name}: none of the outputs {', '.join(out)} is N×C×H×W scores")
            return out[four_d[-1]]
        if isinstance(out, (list, tuple)) and out:
            return self._pick(out[-1])
        raise ProtosegError(f"{self.name}: the model returned {type(out).__name__}, not a score tensor")


class _Decode(torch.utils.data.Dataset):
    """Images by index, decoded in DataLoader workers; an error travels back as data, raised in order."""

    def __init__(self, items: Sequence[PathLike | np.ndarray]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        if isinstance(item, np.ndarray):
            return item, f"image{i}", None
        try:
            return read_image(item), Path(item).stem, None
        except ProtosegError as e:
            return None, None, e


def _keep(sample):
    return sample  # no collation: each sample is one image


def _decoded(items: Sequence[PathLike | np.ndarray], workers: int) -> Iterator[tuple[np.ndarray, str]]:
    """``(image, name)`` for each item in order, decoded here or by ``workers`` processes ahead of use."""
    dataset = _Decode(items)
    source = (dataset[i] for i in range(len(dataset))) if workers == 0 else torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, collate_fn=_keep)
    for img, name, error in source:
        if error is not None:
            raise error
        yield img, name


def _crf_preset(name: str):
    """The DenseCRF preset ``name`` from :mod:`protoseg.crf`, with a clear error for an unknown one."""
    from protoseg.crf import PRESETS

    if name not in PRESETS:
        raise ProtosegError(f"--crf {name!r} is not a known preset; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def _zoo_entry_for(prototxt: PathLike) -> zoo.ZooModel | None:
    """The zoo entry whose bundled prototxt ``prototxt`` is, so its published mean and padding apply."""
    path = Path(prototxt)
    for name in zoo.names():
        entry = zoo.get(name)
        try:
            if path.resolve() == entry.prototxt_path().resolve():
                return entry
        except ProtosegError:  # that prototxt is not installed
            continue
    return None


def collect_images(paths: Iterable[PathLike]) -> list[Path]:
    """Image files named directly or found (sorted, non-recursive) in named folders; duplicates by stem refused,
    since each one's outputs are named after it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inner = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not inner:
                raise FormatError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(inner)
        elif p.is_file():
            found.append(p)
        else:
            raise FormatError(f"{p}: no such image file or folder")
    stems: dict[str, Path] = {}
    for p in found:
        if p.stem in stems:
            raise ProtosegError(f"{p} and {stems[p.stem]} would write the same output files ({p.stem}.png); "
                                "run them into separate output folders")
        stems[p.stem] = p
    return found


def planned_outputs(out_dir: Path, stem: str, *, save_scores: bool, crf: bool, samples: bool = False
                    ) -> dict[str, Path]:
    """The files :func:`write_prediction` writes for one image, by kind."""
    files = {"labels": out_dir / f"{stem}.png", "overlay": out_dir / f"{stem}_overlay.jpg"}
    if save_scores:
        files["scores"] = out_dir / f"{stem}_scores.npy"
    if crf:
        files["crf"] = out_dir / f"{stem}_crf.png"
    if samples:
        files["uncertainty"] = out_dir / f"{stem}_uncertainty.png"
        if save_scores:
            files["variance"] = out_dir / f"{stem}_variance.npy"
    return files


def check_free(paths: Iterable[Path], *, force: bool) -> None:
    """Refuse to overwrite anything unless ``force``: checked for every image before the first is run."""
    if force:
        return
    taken = [p for p in paths if os.path.lexists(p)]  # a dangling symlink counts: it is replaced, not followed
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise ProtosegError(f"{taken[0]}{more} already exist(s); pass --force to overwrite, or choose another -o")


def write_prediction(pred: Prediction, out_dir: Path, *, palette: np.ndarray | None = None,
                     save_scores: bool = False) -> list[Path]:
    """Write a palette PNG of the labels, an overlay JPEG, and optionally the scores and CRF labels. For a map
    (one output channel) the PNG is the map itself in grey (0..1 as 0..255, clipped), and the overlay shows where
    it passes the threshold."""
    from PIL import Image

    from protoseg.run.palette import label_image, overlay

    files = planned_outputs(out_dir, pred.name, save_scores=save_scores, crf=pred.crf_labels is not None,
                            samples=pred.variance is not None)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_labels(pred.labels)
    if pred.is_map:
        grey = np.round(255 * np.clip(pred.scores[0], 0.0, 1.0)).astype(np.uint8)
        write_file(files["labels"], lambda tmp: Image.fromarray(grey, mode="L").save(tmp, format="PNG"))
    else:
        write_file(files["labels"], lambda tmp: label_image(pred.labels, palette).save(tmp, format="PNG"))
    write_file(files["overlay"], lambda tmp: overlay(Image.fromarray(pred.image), pred.labels, palette)
               .save(tmp, format="JPEG", quality=90))
    if save_scores:
        write_file(files["scores"], lambda tmp: np.save(tmp, pred.scores.astype(np.float32)))
    if pred.crf_labels is not None:
        write_file(files["crf"], lambda tmp: label_image(pred.crf_labels, palette).save(tmp, format="PNG"))
    if pred.variance is not None:
        # Bayesian SegNet's uncertainty picture: the variance averaged over classes, white = most uncertain.
        average = pred.variance.mean(0)
        grey = np.round(255 * average / max(float(average.max()), 1e-12)).astype(np.uint8)
        write_file(files["uncertainty"], lambda tmp: Image.fromarray(grey, mode="L").save(tmp, format="PNG"))
        if save_scores:
            write_file(files["variance"], lambda tmp: np.save(tmp, pred.variance.astype(np.float32)))
    return list(files.values())


def _check_labels(labels: np.ndarray) -> None:
    if labels.size and labels.max() > 255:
        raise ProtosegError(f"the net predicts class {labels.max()}; a palette PNG holds classes 0-255 only")


def evaluate(segmenter: Segmenter, pairs: Sequence[tuple[Path, Path]], *, batch_size: int = 1,
             progress: bool = False, num_classes: int | None = None, workers: int = 0, world=None):
    """Score ``segmenter`` on ``(image, label PNG)`` pairs: the accumulated VOC confusion matrix.

    With a :class:`~protoseg.run.distributed.World` of several processes, ``pairs`` is this process's share and
    the matrix returned is the sum over all processes (each may have scored none).
    """
    from PIL import Image

    from protoseg.run.metrics import ConfusionMatrix
    from protoseg.run.palette import labels_from_image

    cm = None
    labels_by_stem = {img.stem: lab for img, lab in pairs}
    for pred in segmenter.predict([img for img, _ in pairs], batch_size=batch_size, progress=progress,
                                  workers=workers):
        if cm is None:
            cm = ConfusionMatrix(num_classes or max(2, pred.scores.shape[0]))  # a map: background and foreground
        lab_path = labels_by_stem[pred.name]
        try:
            with Image.open(lab_path) as im:
                gt = labels_from_image(im)
        except OSError as exc:
            raise FormatError(f"{lab_path}: cannot read the label image ({exc})") from None
        if gt.shape != pred.labels.shape:
            raise FormatError(f"{lab_path}: label is {gt.shape[1]}x{gt.shape[0]} but its image is "
                              f"{pred.labels.shape[1]}x{pred.labels.shape[0]}; they must match")
        cm.update(pred.crf_labels if pred.crf_labels is not None else pred.labels, gt)
    if world is not None and world.size > 1:
        classes = int(world.max(np.array([cm.num_classes if cm is not None else 0]))[0])
        merged = ConfusionMatrix(classes) if classes else None
        if merged is not None:
            if cm is not None:
                merged.matrix[: cm.num_classes, : cm.num_classes] = cm.matrix
            merged.matrix[:] = world.sum(merged.matrix)
        cm = merged
    if cm is None:
        raise ProtosegError("no images to evaluate")
    return cm
