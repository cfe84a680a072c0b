"""``protoseg info``: what a prototxt builds (layers, shapes, parameter counts) and whether weights fit it."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from protoseg.forks import FORKS
from protoseg.loader import open_net


def describe(prototxt: str | Path, weights: str | Path | None = None, *, defines: Mapping[str, str] | None = None,
             input_shapes: Mapping[str, Sequence[int]] | None = None, phase: str = "TEST",
             fork: str | None = None) -> dict:
    """The summary ``info`` prints, as plain data (the ``--json`` output)."""
    opened = open_net(prototxt, weights, defines=defines or None, input_shapes=input_shapes, phase=phase, fork=fork)
    net, detection = opened.net, opened.detection
    layers = []
    for name, shape in net.inputs.items():
        layers.append({"name": net.caffe_name[name], "type": "Input", "bottoms": [], "tops": [net.caffe_name[name]],
                       "shapes": [list(shape)], "params": 0, "blobs": []})
    for layer in net.layers:
        layers.append({
            "name": layer.name,
            "type": layer.type,
            "bottoms": [net.caffe_name[b] for b in layer.bottoms],
            "tops": layer.caffe_tops,
            "shapes": [list(s) for s in layer.shapes],
            "params": layer.num_params,
            "blobs": [list(s) for s in layer.blob_shapes],
            "shared": [f"{o[0]}[{o[1]}]" for i, o in enumerate(layer.owners) if o != (layer.name, i)],
        })
    summary = {
        "name": net.name,
        "prototxt": str(prototxt),
        "fork": {"name": detection.fork, "title": FORKS[detection.fork].title, "evidence": detection.evidence,
                 "overridden": detection.overridden, "unexplained": detection.unexplained},
        "inputs": {net.caffe_name[k]: list(v) for k, v in net.inputs.items()},
        "outputs": [net.caffe_name[o] for o in net.outputs],
        "total_params": net.num_params,
        "layers": layers,
        "pruned": net.pruned,
        "weights": None,
    }
    if opened.weights is not None:
        wf, report = opened.weights, opened.report
        summary["weights"] = {
            "path": str(weights),
            "format": wf.format,
            "file_params": wf.num_parameters,
            "ok": report.ok,
            "problems": report.problems,
            "unexpected": report.unexpected,
            "reshaped": report.reshaped,
        }
    return summary


def _human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def format_table(summary: dict) -> str:
    rows = [("layer", "type", "bottoms", "tops", "shape", "params")]
    for layer in summary["layers"]:
        shapes = " ".join("x".join(map(str, s)) for s in layer["shapes"])
        params = f"{layer['params']:,}" if layer["params"] else ("shared" if layer.get("shared") else "")
        rows.append((layer["name"], layer["type"], ",".join(layer["bottoms"]), ",".join(layer["tops"]), shapes, params))
    widths = [min(max(len(r[i]) for r in rows), 40) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total = summary["total_params"]
    lines.append("")
    lines.append(f"net {summary['name']!r}: {len(summary['layers'])} layers, {total:,} parameters ({_human(total)})")
    fork = summary["fork"]
    why = ("--fork" if fork["overridden"] else "; ".join(fork["evidence"][:4]) or "nothing fork-specific in the file")
    lines.append(f"fork: {fork['title']} ({why})")
    lines.append(f"inputs: {', '.join(f'{k} {tuple(v)}' for k, v in summary['inputs'].items())}")
    lines.append(f"outputs: {', '.join(summary['outputs'])}")
    if summary["pruned"]:
        lines.append(f"not part of inference: {', '.join(summary['pruned'])}")
    w = summary["weights"]
    if w is not None:
        status = "all blobs match" if w["ok"] else f"{len(w['problems'])} problem(s)"
        lines.append(f"weights {w['path']} ({w['format']}, {w['file_params']:,} values stored): {status}")
        lines.extend(f"  problem: {p}" for p in w["problems"])
        if w["unexpected"]:
            lines.append(f"  ignored (not in the net, as Caffe ignores them): {', '.join(w['unexpected'])}")
        lines.extend(f"  reshaped: {r}" for r in w["reshaped"])
    return "\n".join(lines)
