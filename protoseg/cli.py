"""The ``protoseg`` command line. It only wires the library together: every decision lives in the modules.

Errors a user can cause arrive as :class:`~protoseg.errors.ProtosegError` and leave as one line on stderr with
exit code 2; ``verify`` exits 1 when a blob differs from Caffe's.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

import click
import numpy as np

from protoseg.errors import ProtosegError

DEFINE_HELP = "Fill a ${NAME} template variable of the prototxt (repeatable)."


def _parse_defines(ctx, param, values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE")
        out[name] = value
    return out


def _parse_inputs(ctx, param, values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    out = {}
    for item in values:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) <= 0:
            raise click.BadParameter(f"{item!r} is not NAME=N,C,H,W with positive integers")
        out[name] = shape
    return out


define_option = click.option("--define", "-D", "defines", multiple=True, callback=_parse_defines,
                             metavar="NAME=VALUE", help=DEFINE_HELP)
input_option = click.option("--input", "inputs", multiple=True, callback=_parse_inputs, metavar="NAME=N,C,H,W",
                            help="Shape of an input blob (repeatable); default: what the data layer says.")
existing = click.Path(exists=True, dir_okay=False, path_type=Path)


def _fork_choices() -> list[str]:
    from protoseg.forks import FORKS

    return list(FORKS)


fork_option = click.option("--fork", type=click.Choice(_fork_choices()), default=None,
                           help="The Caffe fork that wrote the files (default: detected from them).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="protoseg")
def cli() -> None:
    """Run the published Caffe segmentation models (FCN, DeepLab) in PyTorch, verified against Caffe."""


@cli.command()
@click.argument("prototxt", type=existing)
@click.argument("weights", type=existing, required=False)
@define_option
@input_option
@click.option("--phase", type=click.Choice(["TEST", "TRAIN"], case_sensitive=False), default="TEST",
              show_default=True, help="Which include/exclude rules to apply.")
@fork_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def info(prototxt: Path, weights: Path | None, defines, inputs, phase: str, fork: str | None, as_json: bool) -> None:
    """Layers, shapes and parameter counts of PROTOTXT and the Caffe fork that wrote it; with WEIGHTS, whether
    every blob matches."""
    from protoseg.info import describe, format_table

    summary = describe(prototxt, weights, defines=defines, input_shapes=inputs, phase=phase.upper(), fork=fork)
    click.echo(json.dumps(summary, indent=1) if as_json else format_table(summary))
    if weights is not None and not summary["weights"]["ok"]:
        sys.exit(1)


@cli.command()
@click.argument("prototxt", type=existing)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
@define_option
def upgrade(prototxt: Path, output: Path | None, defines) -> None:
    """Write PROTOTXT (V0, V1 or V2; any Caffe fork) as a V2 prototxt with dilation instead of hole."""
    from protoseg.io.atomic import write_file
    from protoseg.io.prototxt import format_net
    from protoseg.io.upgrade import load_net

    text = format_net(load_net(prototxt, defines or None, phase="TEST"))
    if output is None:
        click.echo(text, nl=False)
    else:
        write_file(output, lambda tmp: Path(tmp).write_text(text))
        click.echo(f"wrote {output}", err=True)


@cli.command()
@click.argument("prototxt", type=existing)
@click.argument("weights", type=existing, required=False)
@click.option("--reference", "-r", type=existing, required=True, help="An .npz of Caffe's blobs and the inputs.")
@define_option
@fork_option
@click.option("--rtol", type=float, default=1e-4, show_default=True,
              help="A blob passes when max|ours - ref| <= rtol * max|ref|.")
@click.option("--precision", type=click.Choice(["fp32", "fp64"]), default="fp32", show_default=True,
              help="Arithmetic to run the net in: fp32 as Caffe, or fp64 to set float32 rounding aside.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def verify(prototxt: Path, weights: Path | None, reference: Path, defines, fork: str | None, rtol: float,
           precision: str, as_json: bool) -> None:
    """Compare every blob of REFERENCE with the converted net's; exit 1 if any differs.

    The net is reshaped to REFERENCE's input arrays first; WEIGHTS may be left out for a net without
    parameters."""
    from protoseg.verify import format_report, verify_files

    report = verify_files(prototxt, weights, reference, defines=defines, rtol=rtol, fork=fork, precision=precision)
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else format_report(report))
    sys.exit(0 if report.ok else 1)


@cli.command()
@click.argument("prototxt", type=existing)
@click.argument("weights", type=existing)
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file (default: PROTOTXT's name with the format's suffix, in the current folder).")
@click.option("--format", "fmt", type=click.Choice(["pt2", "py", "onnx"]), default="pt2", show_default=True,
              help="pt2: torch.export program (plain PyTorch loads it); py: readable source + .safetensors; onnx.")
@define_option
@input_option
@click.option("--output-blob", "outputs", multiple=True, metavar="BLOB",
              help="Make BLOB an output (repeatable); default: the blobs nothing consumes.")
@fork_option
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="pt2/onnx: weights stored and the forward run in this precision (inputs and outputs stay float32).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def convert(prototxt: Path, weights: Path, output: Path | None, fmt: str, defines, inputs, outputs, fork, precision,
            force) -> None:
    """Convert PROTOTXT + WEIGHTS into a model that loads in plain PyTorch."""
    from protoseg.export import default_output, export

    output = output or default_output(prototxt, fmt)
    written = export(prototxt, weights, output, fmt=fmt, defines=defines, input_shapes=inputs,
                     outputs=list(outputs) or None, overwrite=force, fork=fork, precision=precision)
    for path in written:
        click.echo(f"wrote {path}")


def _segmenter(spec: Sequence[str], weights: Path | None, *, defines, mean: str | None, crf: str | None,
               device: str, samples: int = 1, seed: int = 0, fork: str | None = None,
               precision: str = "fp32", blob: str | None = None, threshold: float = 0.5,
               scale: float | None = None) -> tuple[object, list[str]]:
    """Open ``MODEL | NET.prototxt WEIGHTS`` from the head of ``spec``; returns it and the rest of ``spec``."""
    from protoseg import zoo
    from protoseg.run.predict import Segmenter
    from protoseg.run.preprocess import parse_mean

    if not spec:
        raise ProtosegError("give a model: a converted .pt2 file, NET.prototxt WEIGHTS, or a zoo name with --weights")
    first, rest = spec[0], list(spec[1:])
    means = parse_mean(mean) if mean is not None else None
    common = dict(crf=crf, device=device, samples=samples, seed=seed, precision=precision, threshold=threshold,
                  scale=scale)
    if blob is not None:
        common["output"] = blob
    if first.lower().endswith(".pt2"):
        if weights is not None:
            raise ProtosegError(f"{first}: a .pt2 file holds its own weights; drop --weights")
        return Segmenter.from_pt2(first, mean=means, **common), rest
    if first.lower().endswith((".prototxt", ".pbtxt")) or Path(first).is_file():
        if weights is None:
            if not rest:
                raise ProtosegError(f"{first}: give the caffemodel after the prototxt (NET.prototxt WEIGHTS)")
            weights, rest = Path(rest[0]), rest[1:]
        return Segmenter.from_caffe(first, weights, defines=defines, mean=means, fork=fork, **common), rest
    entry = zoo.get(first)  # raises, listing the known names, for anything else
    if weights is None:
        raise ProtosegError(
            f"zoo model {entry.name!r} needs --weights FILE.caffemodel; download it from {entry.url}"
            + (f" (the archive holds {entry.archive_member})" if entry.archive_member else "")
        )
    return Segmenter.from_zoo(entry.name, weights, mean=means, **common), rest


model_options = [
    click.option("--weights", "-w", type=click.Path(path_type=Path), help="The caffemodel of a zoo MODEL."),
    define_option,
    click.option("--mean", metavar="B,G,R", help="Mean subtracted from 0-255 BGR pixels; overrides the prototxt. "
                 "Needed for .pt2 files and Input-layer nets outside the zoo."),
    click.option("--scale", type=float, help="Multiplies the input after the mean is subtracted (Caffe's "
                 "transform_param scale, e.g. 0.017 or 0.00390625); overrides the prototxt."),
    click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Images per forward pass (only images of one input size are batched together)."),
    click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Processes that decode images ahead of the net (torch DataLoader workers)."),
    click.option("--crf", metavar="PRESET", help="Refine labels with DeepLab's DenseCRF using a preset of "
                 "protoseg.crf.PRESETS (e.g. deeplab_v2_resnet101)."),
    click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda or cuda:1."),
    click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Forward passes per image; labels from their mean, and an uncertainty map (Bayesian SegNet)."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seeds the sampling of --samples."),
    click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
                 help="Arithmetic of the forward pass: fp32 as Caffe; bf16 uses AVX512-BF16/AMX where the CPU has "
                 "them (on AVX2-only CPUs it is slower than fp32); fp16/bf16 on CUDA."),
    click.option("--blob", metavar="NAME", help="The output blob to read (default: the zoo entry's, else the "
                 "net's last N x C x H x W output)."),
    click.option("--threshold", type=float, default=0.5, show_default=True,
                 help="For a one-channel output (HED edges, a Sigmoid probability): label 1 above this value."),
    fork_option,
]


def _with_model_options(fn):
    for option in reversed(model_options):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("args", nargs=-1, required=True, metavar="(MODEL | NET.prototxt WEIGHTS) IMAGE_OR_DIR...")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the results (created if needed).")
@_with_model_options
@click.option("--palette", default="voc", show_default=True,
              help="Label colours: 'voc', a palette PNG, or a text file of 'R G B' lines.")
@click.option("--save-scores", is_flag=True, help="Also write each image's C x H x W scores as NAME_scores.npy.")
@click.option("--force", is_flag=True, help="Overwrite existing result files.")
def run(args, out_dir: Path, weights, defines, mean, scale, batch_size: int, workers: int, crf, device: str,
        samples: int, seed: int, precision: str, blob: str | None, threshold: float, fork: str | None, palette: str,
        save_scores: bool, force: bool) -> None:
    """Segment images: NAME.png (palette labels; for a one-channel output the map itself, in grey),
    NAME_overlay.jpg, and optionally scores, CRF labels and (with --samples) an uncertainty map.

    MODEL is a .pt2 written by 'protoseg convert', or a zoo name with --weights. Under torchrun
    (torchrun --nproc-per-node N -m protoseg run ...) each process takes every N-th image.
    """
    from protoseg.run.distributed import world as join
    from protoseg.run.memory import keep_freed_memory
    from protoseg.run.palette import load_palette
    from protoseg.run.predict import check_free, collect_images, planned_outputs, write_prediction

    keep_freed_memory()  # every image reuses the last one's pages
    world = join(device)
    seg, rest = _segmenter(args, weights, defines=defines, mean=mean, crf=crf, device=device, samples=samples,
                           seed=seed, fork=fork, precision=precision, blob=blob, threshold=threshold,
                           scale=scale)
    if not rest:
        raise ProtosegError("give at least one image file or folder after the model")
    images = world.shard(collect_images(rest))
    pal = load_palette(palette)
    check_free((p for img in images for p in planned_outputs(out_dir, img.stem, save_scores=save_scores,
                                                               crf=crf is not None, samples=samples > 1).values()),
               force=force)
    count = 0
    for pred in seg.predict(images, batch_size=batch_size, progress=world.is_main, workers=workers):
        written = write_prediction(pred, out_dir, palette=pal, save_scores=save_scores)
        count += len(written)
        click.echo(f"{pred.name}: {', '.join(p.name for p in written)}")
    total = int(world.sum(np.array([count]))[0])
    if world.is_main:
        click.echo(f"wrote {total} files to {out_dir}" + (f" ({world.size} processes)" if world.size > 1 else ""))


@cli.command(name="eval")
@click.argument("args", nargs=-1, required=True, metavar="(MODEL | NET.prototxt WEIGHTS)")
@click.option("--dataset", type=click.Path(path_type=Path), required=True,
              help="VOC year folder holding JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/.")
@click.option("--split", default="val", show_default=True, help="ImageSets/Segmentation/<split>.txt")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N images of the split.")
@_with_model_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the confusion matrix).")
def eval_(args, dataset: Path, split: str, limit: int | None, weights, defines, mean, scale, batch_size: int,
          workers: int, crf, device: str, samples: int, seed: int, precision: str, blob: str | None,
          threshold: float, fork: str | None, as_json: bool) -> None:
    """Mean IoU, per-class IoU and pixel accuracy on a VOC-layout dataset (the devkit's definitions).

    Under torchrun each process scores every N-th image and the confusion matrices are summed: the same
    numbers as one process."""
    from protoseg import zoo
    from protoseg.run.distributed import world as join
    from protoseg.run.memory import keep_freed_memory
    from protoseg.run.metrics import voc_pairs
    from protoseg.run.predict import evaluate

    keep_freed_memory()
    world = join(device)
    seg, rest = _segmenter(args, weights, defines=defines, mean=mean, crf=crf, device=device, samples=samples,
                           seed=seed, fork=fork, precision=precision, blob=blob, threshold=threshold,
                           scale=scale)
    if rest:
        raise ProtosegError(f"unexpected argument(s) {' '.join(rest)}; eval takes a model and --dataset")
    pairs = voc_pairs(dataset, split)[:limit]
    cm = evaluate(seg, world.shard(pairs), batch_size=batch_size, progress=world.is_main, workers=workers,
                  world=world)
    if not world.is_main:
        return
    names = seg.categories or (list(zoo.VOC_CLASSES) if cm.num_classes == len(zoo.VOC_CLASSES) else
                               [str(i) for i in range(cm.num_classes)])
    iou = cm.iou()
    if as_json:
        summary = cm.summary()
        summary.update(images=len(pairs), split=split, classes=names, confusion_matrix=cm.matrix.tolist(),
                       crf=crf)
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(f"{len(pairs)} images of {dataset} ({split}){' with CRF ' + crf if crf else ''}")
    click.echo(f"mean IoU        {100 * cm.mean_iou():6.2f}%")
    click.echo(f"pixel accuracy  {100 * cm.pixel_accuracy():6.2f}%")
    click.echo(f"mean class acc. {100 * cm.mean_class_accuracy():6.2f}%")
    width = max(len(n) for n in names)
    for name, value in zip(names, iou):
        click.echo(f"  {name.ljust(width)}  {'   n/a' if value != value else f'{100 * value:6.2f}'}")


@cli.command()
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("protoseg-demo"), show_default=True, help="Folder for the masks and overlays.")
@click.option("--force", is_flag=True, help="Overwrite the results of an earlier run.")
def demo(out_dir: Path, force: bool) -> None:
    """Run the bundled tiny FCN (no download) on the bundled images and score it against their labels."""
    from protoseg.run.demo import run_demo

    run_demo(out_dir, force=force, echo=click.echo)


def _dialects() -> list[str]:
    from protoseg.to_caffe import DIALECTS

    return list(DIALECTS)


def _caffe_graph(spec: Sequence[str], defines, fork: str | None):
    """The protoseg graph of ``MODEL.pt2`` or ``NET.prototxt WEIGHTS``, recording the net it came from."""
    from protoseg.to_caffe.source import deploy_netparam, record

    if len(spec) == 1 and spec[0].lower().endswith(".pt2"):
        from protoseg import pt2

        model = pt2.read(spec[0])
        record(model.graph, deploy_netparam(model.net), model.net.fork)
        return model.graph
    if len(spec) != 2:
        raise ProtosegError("give a model: a .pt2 written by 'protoseg convert', or NET.prototxt WEIGHTS")
    from protoseg.loader import open_net

    for path in spec:
        if not Path(path).is_file():
            raise ProtosegError(f"{path}: no such file")
    return open_net(spec[0], spec[1], defines=defines or None, fork=fork).graph()


@cli.command(name="export-caffe")
@click.argument("args", nargs=-1, required=True, metavar="(MODEL.pt2 | NET.prototxt WEIGHTS)")
@click.option("-o", "--output", "prefix", type=click.Path(path_type=Path), required=True,
              help="Writes PREFIX.prototxt and PREFIX.caffemodel.")
@click.option("--params", type=existing, help="A .safetensors of the graph's parameters after fine-tuning "
              "(safetensors.torch.save_model(gm, FILE)); its values are written instead of the model's.")
@click.option("--dialect", type=click.Choice(_dialects()), default=None,
              help="The Caffe to write for (default: the fork the net was read in); it must read every layer alike.")
@click.option("--name", help="The net's name in the prototxt (default: the net's own).")
@define_option
@fork_option
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def export_caffe(args, prefix: Path, params: Path | None, dialect: str | None, name: str | None, defines, fork,
                 force: bool) -> None:
    """Write a converted net back to Caffe: a V2 prototxt and a binary caffemodel that Caffe loads.

    MODEL.pt2 is a file written by 'protoseg convert' (it records its net; written as its deploy net), or
    NET.prototxt WEIGHTS any net protoseg reads (any fork, V0/V1 prototxt, binary or HDF5 caffemodel), written
    back as V2. Re-reading the files gives the same blobs. To write a PyTorch module of your own, call
    protoseg.to_caffe.write_caffe(module, example_input, prototxt, caffemodel, dialect=...) from Python.
    """
    from protoseg.to_caffe import write_caffe
    from protoseg.to_caffe.source import load_parameters

    if prefix.suffix in (".prototxt", ".caffemodel"):
        prefix = prefix.with_suffix("")
    gm = _caffe_graph(args, defines, fork)
    if params is not None:
        load_parameters(gm, params)
    written = write_caffe(gm, None, prefix.with_name(prefix.name + ".prototxt"),
                          prefix.with_name(prefix.name + ".caffemodel"), dialect=dialect, name=name, overwrite=force)
    for path in written:
        click.echo(f"wrote {path}")


def _format_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"protoseg: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 verification failed, 2 bad input)."""
    warnings.formatwarning = _format_warning
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="protoseg", standalone_mode=False)
    except ProtosegError as e:
        click.echo(f"protoseg: error: {e}", err=True)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return 2
    except click.Abort:
        click.echo("protoseg: aborted", err=True)
        return 130
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
