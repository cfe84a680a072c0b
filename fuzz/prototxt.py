"""Token-level mutators of prototxt text: they keep the file parseable often enough to reach shape inference,
graph building and the forward pass, which byte flips almost never do."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from fuzz.mutate import INTERESTING_INTS, Mutator, chain, hostile_name

_TOKEN = re.compile(
    r"""(?P<comment>\#[^\n]*)
      |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      |(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)
      |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<space>\s+)
      |(?P<punct>.)""",
    re.VERBOSE | re.DOTALL,
)
NUMBERS = [str(n) for n in INTERESTING_INTS] + ["1e308", "-1e308", "1e-320", "nan", "inf", "-inf", "0.5", "-0.0"]

#: Caffe layer type names: BVLC Caffe's and the segmentation forks' (V2 strings, then V1 enum names).
TYPES = [
    "AbsVal", "Accuracy", "ArgMax", "BatchNorm", "BatchReindex", "Bias", "BN", "BNLL", "Clip", "Concat",
    "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "DenseCRF", "Dropout", "DummyData",
    "Eltwise", "ELU", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten", "HDF5Data", "HDF5Output", "HingeLoss",
    "Im2col", "ImageData", "ImageSegData", "InfogainLoss", "InnerProduct", "Input", "Interp", "Log", "LRN",
    "LSTM", "MatRead", "MatWrite", "MemoryData", "MultiStageMeanfield", "MVN", "Padding", "Parameter", "Pooling",
    "Power", "PReLU", "Python", "Recurrent", "Reduction", "ReLU", "Reshape", "RNN", "Scale", "SegAccuracy",
    "Sigmoid", "SigmoidCrossEntropyLoss", "Silence", "Slice", "Softmax", "SoftmaxWithLoss", "Split", "SPP",
    "Swish", "TanH", "Threshold", "Tile", "Upsample", "WindowData"
]
V1_TYPES = [
    "ABSVAL", "ACCURACY", "ARGMAX", "BNLL", "CONCAT", "CONVOLUTION", "DATA", "DECONVOLUTION", "DENSE_CRF",
    "DROPOUT", "DUMMY_DATA", "ELTWISE", "EXP", "FLATTEN", "HDF5_DATA", "IMAGE_DATA", "IMAGE_SEG_DATA",
    "INNER_PRODUCT", "INTERP", "LRN", "MAT_WRITE", "MEMORY_DATA", "MVN", "NONE", "PADDING", "POOLING", "POWER",
    "RELU", "SIGMOID", "SILENCE", "SLICE", "SOFTMAX", "SOFTMAX_LOSS", "SPLIT", "TANH", "THRESHOLD", "BN",
    "UNPOOLING"
]
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\000"}

Tokens = list[list[str]]  # [kind, text] pairs; "".join of the texts is the file


def tokenize(text: str) -> Tokens:
    return [[m.lastgroup, m.group()] for m in _TOKEN.finditer(text)]


def quote(name: str) -> str:
    return '"' + "".join(_ESCAPES.get(c, c) for c in name) + '"'


def _on_tokens(fn: Callable[[Tokens, random.Random], None]) -> Mutator:
    """Lift a token-list mutator to bytes; undecodable bytes survive through ``surrogateescape``."""

    def mutator(data: bytes, rng: random.Random, others: Sequence[bytes]) -> bytes:
        tokens = tokenize(data.decode("utf-8", "surrogateescape"))
        fn(tokens, rng)
        return "".join(t for _, t in tokens).encode("utf-8", "surrogateescape")

    mutator.__name__ = fn.__name__
    return mutator


def _code(tokens: Tokens) -> list[int]:
    """Indices of the tokens that are not space or comments."""
    return [i for i, (kind, _) in enumerate(tokens) if kind not in ("space", "comment")]


def _values_of(tokens: Tokens, keys: Sequence[str]) -> list[int]:
    """Indices of the value tokens in ``key: value`` pairs whose key is one of ``keys``."""
    code = _code(tokens)
    return [code[j + 2] for j in range(len(code) - 2)
            if tokens[code[j]][1] in keys and tokens[code[j + 1]][1] == ":"]


def _blocks(tokens: Tokens) -> list[tuple[int, int]]:
    """Token ranges [start, stop) of the ``layer { }`` / ``layers { }`` blocks."""
    code, spans = _code(tokens), []
    for j in range(len(code) - 1):
        if tokens[code[j]][1] in ("layer", "layers") and tokens[code[j + 1]][1] == "{":
            depth = 0
            for k in code[j + 1:]:
                depth += {"{": 1, "}": -1}.get(tokens[k][1], 0)
                if depth == 0:
                    spans.append((code[j], k + 1))
                    break
    return spans


def number(tokens: Tokens, rng: random.Random) -> None:
    """A number becomes 0, -1, 2**31, 2**62, 1e308, nan, inf ..."""
    found = [i for i, (kind, _) in enumerate(tokens) if kind == "number"]
    if found:
        tokens[rng.choice(found)][1] = rng.choice(NUMBERS)


def rename(tokens: Tokens, rng: random.Random) -> None:
    """A name becomes hostile, or ``NAME__N`` (the IR's SSA renames); mostly everywhere it occurs, so that the
    net still builds and the name reaches the graph."""
    strings = [i for i, (kind, _) in enumerate(tokens) if kind == "string"]
    if not strings:
        return
    names = sorted({tokens[i][1] for i in strings})  # each name equally likely, however often it occurs
    old = rng.choice(names)
    if rng.random() < 0.3:
        other = rng.choice(names)
        new = f"{other[:-1]}__{rng.randrange(1, 4)}{other[-1]}"
    else:
        new = quote(hostile_name(rng))
    targets = [i for i in strings if tokens[i][1] == old]
    for i in targets if rng.random() < 0.7 else [rng.choice(targets)]:
        tokens[i][1] = new


def block(tokens: Tokens, rng: random.Random) -> None:
    """Delete, duplicate or move a layer block."""
    spans = _blocks(tokens)
    if not spans:
        return
    start, stop = rng.choice(spans)
    piece = tokens[start:stop]
    action = rng.choice(("delete", "duplicate", "move"))
    if action != "duplicate":
        del tokens[start:stop]
    at = stop if action == "duplicate" else rng.choice([0, len(tokens)] + [s for s, _ in _blocks(tokens)])
    tokens[at:at] = [list(t) for t in piece] + [["space", "\n"]]


def swap_blobs(tokens: Tokens, rng: random.Random) -> None:
    """Swap two bottom/top names, within a layer or across layers."""
    found = [i for i in _values_of(tokens, ("bottom", "top")) if tokens[i][0] == "string"]
    if len(found) >= 2:
        a, b = rng.sample(found, 2)
        tokens[a][1], tokens[b][1] = tokens[b][1], tokens[a][1]


def retype(tokens: Tokens, rng: random.Random) -> None:
    """``type:`` becomes another Caffe type (a V1 enum name where the file uses enums)."""
    found = _values_of(tokens, ("type",))
    if found:
        token = tokens[rng.choice(found)]
        token[1] = quote(rng.choice(TYPES)) if token[0] == "string" else rng.choice(V1_TYPES)


def field(tokens: Tokens, rng: random.Random) -> None:
    """Delete or repeat one ``key: value`` field."""
    code = _code(tokens)
    pairs = [(code[j], code[j + 2] + 1) for j in range(len(code) - 2)
             if tokens[code[j]][0] == "ident" and tokens[code[j + 1]][1] == ":"]
    if pairs:
        start, stop = rng.choice(pairs)
        copy = [list(t) for t in tokens[start:stop]]
        tokens[start:stop] = [] if rng.random() < 0.5 else tokens[start:stop] + [["space", " "]] + copy


STRUCTURED = [_on_tokens(fn) for fn in (number, rename, block, swap_blobs, retype, field)]


def mutate(data: bytes, rng: random.Random, others: Sequence[bytes]) -> tuple[bytes, list[str]]:
    return chain(data, rng, others, STRUCTURED, p_structured=0.85)
