"""Regenerate ``protoseg/proto/caffe_pb2.py`` from ``proto/caffe.proto``.

    python scripts/regen_proto.py            # rewrite the committed bindings
    python scripts/regen_proto.py --check    # exit 1 when the committed bindings differ from a fresh build

The bindings are made by the ``protoc`` bundled with ``grpcio-tools`` (``python -m grpc_tools.protoc``), so no
system protoc is needed.  The generated module calls protobuf's runtime version check, so the protobuf runtime
must be at least the version stamped in the file's header (see ``gencode_version``).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "caffe.proto"
BINDINGS = ROOT / "protoseg" / "proto" / "caffe_pb2.py"

_VERSION_LINE = re.compile(r"^# Protobuf Python Version: (\S+)$", re.MULTILINE)
_SERIALIZED = re.compile(r"AddSerializedFile\((b'.*?')\)\n", re.DOTALL)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (for messages)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def generate(out_dir: Path, proto: Path = PROTO) -> Path:
    """Compile ``proto`` into ``out_dir`` and return the path of the generated ``*_pb2.py``."""
    from grpc_tools import protoc  # imported here: only this script and its test need grpcio-tools

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/descriptor.proto, for our options
    args = ["grpc_tools.protoc", f"-I{proto.parent}", f"-I{well_known}", f"--python_out={out_dir}", str(proto)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto} (its message is above)")
    return out_dir / f"{proto.stem}_pb2.py"


def gencode_version(source: str) -> str | None:
    """The protobuf version a generated module was made for, from its header comment."""
    match = _VERSION_LINE.search(source)
    return match.group(1) if match else None


def serialized_descriptor(source: str) -> bytes:
    """The serialized FileDescriptorProto embedded in a generated module (independent of protoc's code style)."""
    match = _SERIALIZED.search(source)
    if match is None:
        raise ValueError("no AddSerializedFile(...) call found; is this a protoc-generated *_pb2.py?")
    return ast.literal_eval(match.group(1))


def compare(committed: str, fresh: str) -> str | None:
    """``None`` when the two generated modules are identical, else a one-line explanation."""
    if committed == fresh:
        return None
    if serialized_descriptor(committed) != serialized_descriptor(fresh):
        return f"{_shown(BINDINGS)} is stale: it does not match {_shown(PROTO)}"
    return (
        f"{_shown(BINDINGS)} encodes the current schema but was generated for protobuf "
        f"{gencode_version(committed)}, and this grpcio-tools generates for {gencode_version(fresh)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp)).read_text(encoding="utf-8")
    if args.check:
        committed = BINDINGS.read_text(encoding="utf-8") if BINDINGS.exists() else ""
        problem = compare(committed, fresh) if committed else f"{_shown(BINDINGS)} is missing"
        if problem:
            print(f"regen_proto: {problem}; run `python scripts/regen_proto.py`", file=sys.stderr)
            return 1
        print(f"regen_proto: {_shown(BINDINGS)} is up to date")
        return 0
    BINDINGS.write_text(fresh, encoding="utf-8")
    print(f"regen_proto: wrote {_shown(BINDINGS)} (protobuf gencode {gencode_version(fresh)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
