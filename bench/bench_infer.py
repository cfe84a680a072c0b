#!/usr/bin/env python3
"""Inference speed: protoseg's modes beside the engines users would pick instead, interleaved in one run.

    python bench/bench_infer.py [--nets fcn8s,largefov,vgg16,resnet101] [--repeat 9] [--threads 2]
                                [--weights-dir DIR] [--json OUT.json]

For each net (the published prototxt; weights drawn by the fixture protocol of ../shared/fixtures, materialized
once into ``--weights-dir``) it times, round-robin so that drift on a shared machine hits every engine alike:

* ``protoseg faithful``: the graph ``protoseg.load`` returns (one node per Caffe layer), float32;
* ``protoseg fp32``: the fast form (:mod:`protoseg.optimize`), what ``run``/``eval`` use by default;
* ``protoseg bf16``: the fast form in bfloat16 (where the CPU has AVX512-BF16 or AMX);
* ``onnxruntime``: protoseg's own ONNX export, CPU execution provider;
* ``openvino fp32`` / ``openvino bf16``: the same ONNX file compiled by OpenVINO;
* ``opencv``: ``cv2.dnn.readNetFromCaffe`` on the prototxt and caffemodel, where it reads them.

It prints the median time of each, its ratio to the faster of ONNX Runtime and OpenVINO fp32 (bf16 modes: to
OpenVINO bf16), the convolution GFLOP/s and the percentage of this machine's GEMM peak measured here, and each
mode's label agreement with the faithful float32 graph; the CPU, thread count and date head the table. The
optional engines are skipped, with a note, when not installed (``pip install onnxruntime openvino
opencv-python-headless==4.*``; OpenCV 5 dropped its Caffe importer). Like ``protoseg run`` and ``eval``, the
script first asks glibc to keep freed memory for the next pass (:mod:`protoseg.run.memory`), which every engine
in the process shares; ``--default-malloc`` measures without it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFINES = {"EXP": "voc12", "DATA_ROOT": "/d", "TEST_SET": "val", "FEATURE_DIR": "/f", "NUM_LABELS": "21"}

#: name -> (fixture case, input size, label)
NETS = {
    "fcn8s": ("fcn8s_deploy", 500, "FCN-8s 500²"),
    "largefov": ("deeplab_v1_largefov_test", 513, "DeepLab v1 LargeFOV 513²"),
    "vgg16": ("deeplab_v2_vgg16_test", 513, "DeepLab v2 VGG16 513²"),
    "resnet101": ("deeplab_v2_resnet101_test", 513, "DeepLab v2 ResNet-101 MSC"),
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def time_once(fn, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gemm_peak(dtype: torch.dtype) -> float:
    """GFLOP/s of the best large matrix product torch runs here (matmul and a oneDNN 1x1 convolution)."""
    best = 0.0
    with torch.no_grad():
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        best = max(best, 2 * 2048**3 / min(time_once(lambda: a @ b) for _ in range(3)) / 1e9)
        x = torch.randn(1, 2048, 64, 64, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(2048, 2048, 1, 1, dtype=dtype)
        if torch.backends.mkldnn.is_available():
            packed = torch.ops.mkldnn._reorder_convolution_weight(w, [0, 0], [1, 1], [1, 1], 1, list(x.shape))
            conv = lambda: torch.ops.mkldnn._convolution_pointwise(x, packed, None, [0, 0], [1, 1], [1, 1], 1,  # noqa
                                                                   "none", [], "")
            best = max(best, 2 * 2048 * 2048 * 64 * 64 / min(time_once(conv) for _ in range(3)) / 1e9)
    return best


def conv_gflop(net) -> float:
    """Multiply-adds of the net's Convolution and Deconvolution layers, times 2, in GFLOP."""
    total = 0
    for layer in net.layers:
        if layer.type not in ("Convolution", "Deconvolution") or not layer.blob_shapes:
            continue
        weight = layer.blob_shapes[0]
        per_output = weight[1] * weight[2] * weight[3]  # in channels per group x kernel
        if layer.type == "Convolution":
            total += 2 * per_output * int(np.prod(layer.shapes[0]))
        else:  # each input value meets out channels per group x kernel weights
            total += 2 * int(np.prod(layer.bottom_shapes[0])) * weight[1] * weight[2] * weight[3]
    return total / 1e9


def materialize(case: str, weights_dir: Path) -> Path:
    path = weights_dir / f"{case}.caffemodel"
    if not path.exists():
        spec = importlib.util.spec_from_file_location("materialize", SHARED / "fixtures" / "materialize.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        folder = SHARED / "fixtures" / "nets" / case
        layers, types = module.weights(json.loads((folder / "manifest.json").read_text()))
        module.write_binary(path, layers, types, "v2")
    return path


def valid_size(prototxt: Path, defines: dict, size: int) -> int:
    """``size`` or the nearest size the net accepts (multi-scale nets need their branches to line up)."""
    from protoseg.errors import ShapeError
    from protoseg.loader import open_net

    for delta in sorted(range(-32, 33), key=abs):
        try:
            open_net(prototxt, defines=defines, input_shapes={"data": (1, 3, size + delta, size + delta)})
            return size + delta
        except ShapeError:
            continue
    raise SystemExit(f"{prototxt}: no input size near {size} fits the net")


def engines(prototxt: Path, weights: Path, defines: dict, size: int, onnx_dir: Path, threads: int, bf16: bool):
    """name -> callable taking the NCHW float32 input and returning the scores (N x C x H x W numpy)."""
    from protoseg.export import write_onnx
    from protoseg.loader import open_net
    from protoseg.optimize import optimize

    opened = open_net(prototxt, weights, defines=defines, input_shapes={"data": (1, 3, size, size)})
    faithful = opened.graph()
    out = {}

    def torch_engine(module):
        def run(x):
            with torch.no_grad():
                y = module(torch.from_numpy(x))
            return (y if isinstance(y, torch.Tensor) else list(y.values())[-1]).float().numpy()
        return run

    out["protoseg faithful"] = torch_engine(faithful)
    out["protoseg fp32"] = torch_engine(optimize(faithful, precision="fp32"))
    if bf16:
        out["protoseg bf16"] = torch_engine(optimize(faithful, precision="bf16"))
    notes = []
    onnx_path = onnx_dir / f"{prototxt.parent.name}-{prototxt.stem}-{size}.onnx"
    try:
        import onnxruntime as ort

        if not onnx_path.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                write_onnx(faithful, opened.net, onnx_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy threads between runs
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out["onnxruntime"] = lambda x: session.run(None, {name: x})[-1]
    except ImportError:
        notes.append("onnxruntime not installed")
    try:
        import openvino as ov

        core = ov.Core()
        for hint in ["f32", "bf16"] if bf16 else ["f32"]:
            compiled = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                  "INFERENCE_PRECISION_HINT": hint})
            request = compiled.create_infer_request()
            out[f"openvino {'fp32' if hint == 'f32' else hint}"] = (
                lambda x, r=request: list(r.infer({0: x}).values())[-1])
    except ImportError:
        notes.append("openvino not installed")
    try:
        import cv2

        from protoseg.io.prototxt import format_net, read_prototxt

        cv2.setNumThreads(threads)
        filled = onnx_dir / f"{prototxt.parent.name}-{prototxt.stem}.opencv.prototxt"  # ${NAME} filled in
        filled.write_text(format_net(read_prototxt(prototxt, defines)))
        net = cv2.dnn.readNetFromCaffe(str(filled), str(weights))

        def opencv(x, net=net):
            net.setInput(x)
            return net.forward()

        opencv(np.zeros((1, 3, size, size), np.float32))
        out["opencv"] = opencv
    except ImportError:
        notes.append("opencv not installed")
    except Exception as e:  # OpenCV refuses the forks' layers with cv2.error, or fails at forward
        reason = next((line.strip() for line in str(e).splitlines() if "error:" in line), str(e).strip()[:90])
        notes.append(f"OpenCV cannot run it ({reason.split('error:', 1)[-1].strip()[:80]})")
    return opened.net, out, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(NETS), help=f"comma-separated, of: {', '.join(NETS)}")
    parser.add_argument("--repeat", type=int, default=9, help="timed rounds (each engine once per round)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights-dir", type=Path, default=Path(tempfile.gettempdir()) / "protoseg-bench")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (by default freed memory is kept for the next pass, "
                             "as 'protoseg run' and 'eval' do: protoseg.run.memory)")
    args = parser.parse_args(argv)
    if not (SHARED / "fixtures").exists():
        raise SystemExit(f"{SHARED / 'fixtures'} is absent: the nets' weights are drawn from its manifests")
    torch.set_num_threads(args.threads)
    from protoseg.run.memory import keep_freed_memory

    kept = not args.default_malloc and keep_freed_memory()  # for every engine in this process alike
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    bf16 = cpu_has_bf16()
    peak = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16) if bf16 else float("nan")}
    header = (f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}, "
              f"{datetime.date.today().isoformat()}; GEMM peak measured here: fp32 {peak['fp32']:.0f} GFLOP/s"
              + (f", bf16 {peak['bf16']:.0f} GFLOP/s" if bf16 else " (no bf16 on this CPU)")
              + ("; freed memory kept (protoseg.run.memory)" if kept else "; malloc as is"))
    print(header)
    results = {"machine": header, "nets": {}}
    rng = np.random.default_rng(0)
    for key in args.nets.split(","):
        case, size, label = NETS[key]
        folder = SHARED / "fixtures" / "nets" / case
        spec = json.loads((folder / "case.json").read_text())
        prototxt, defines = SHARED / spec["prototxt"], {**DEFINES, **spec.get("defines", {})}
        size = valid_size(prototxt, defines, size)
        weights = materialize(case, args.weights_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net, runs, notes = engines(prototxt, weights, defines, size, args.weights_dir, args.threads, bf16)
        x = (rng.standard_normal((1, 3, size, size)) * 50).astype(np.float32)
        reference = runs["protoseg faithful"](x)
        times: dict[str, list[float]] = {name: [] for name in runs}
        agreement = {name: float((np.asarray(fn(x)).argmax(1) == reference.argmax(1)).mean())
                     for name, fn in runs.items()}  # also the warm-up run
        for _ in range(args.repeat):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
        gflop = conv_gflop(net)
        median = {name: statistics.median(t) for name, t in times.items()}
        fp32_best = min((median[n] for n in ("onnxruntime", "openvino fp32") if n in median), default=float("nan"))
        bf16_best = median.get("openvino bf16", float("nan"))
        print(f"\n{label} ({size}², {gflop:.0f} GFLOP conv+deconv){'; ' + '; '.join(notes) if notes else ''}")
        print("| engine | median | vs best of ORT/OpenVINO (same precision) | GFLOP/s | % of GEMM peak "
              "| labels = fp32 |")
        print("|---|---|---|---|---|---|")
        rows = {}
        for name, t in median.items():
            low = "bf16" in name
            base = bf16_best if low else fp32_best
            rate = gflop / t
            rows[name] = dict(seconds=t, ratio=t / base, gflops=rate, peak=rate / peak["bf16" if low else "fp32"],
                              agreement=agreement[name])
            print(f"| {name} | {t:.3f} s | {t / base:.2f}× | {rate:.0f} | {100 * rows[name]['peak']:.0f} % | "
                  f"{100 * agreement[name]:.2f} % |")
        results["nets"][key] = dict(label=label, size=size, gflop=gflop, notes=notes, engines=rows)
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
