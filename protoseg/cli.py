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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def info(prototxt: Path, weights: Path | None, defines, inputs, phase: str, as_json: bool) -> None:
    """Layers, shapes and parameter counts of PROTOTXT; with WEIGHTS, whether every blob matches."""
    from protoseg.info import describe, format_table

    summary = describe(prototxt, weights, defines=defines, input_shapes=inputs, phase=phase.upper())
    click.echo(json.dumps(summary, indent=1) if as_json else format_table(summary))
    if weights is not None and not summary["weights"]["ok"]:
        sys.exit(1)


@cli.command()
@click.argument("prototxt", type=existing)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
@define_option
def upgrade(prototxt: Path, output: Path | None, defines) -> None:
    """Write PROTOTXT (V0, V1 or V2; any Caffe fork) as a V2 prototxt with dilation instead of hole."""
    from protoseg.io.prototxt import format_net
    from protoseg.io.upgrade import load_net

    text = format_net(load_net(prototxt, defines or None, phase="TEST"))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


@cli.command()
@click.argument("prototxt", type=existing)
@click.argument("weights", type=existing)
@click.option("--reference", "-r", type=existing, required=True, help="An .npz of Caffe's blobs and the inputs.")
@define_option
@click.option("--rtol", type=float, default=1e-4, show_default=True,
              help="A blob passes when max|ours - ref| <= rtol * max|ref|.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def verify(prototxt: Path, weights: Path, reference: Path, defines, rtol: float, as_json: bool) -> None:
    """Compare every blob of REFERENCE with the converted net's; exit 1 if any differs."""
    from protoseg.verify import verify_files, format_report

    report = verify_files(prototxt, weights, reference, defines=defines, rtol=rtol)
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
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def convert(prototxt: Path, weights: Path, output: Path | None, fmt: str, defines, inputs, outputs, force) -> None:
    """Convert PROTOTXT + WEIGHTS into a model that loads in plain PyTorch."""
    from protoseg.export import export, default_output

    output = output or default_output(prototxt, fmt)
    written = export(prototxt, weights, output, fmt=fmt, defines=defines, input_shapes=inputs,
                     outputs=list(outputs) or None, overwrite=force)
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
