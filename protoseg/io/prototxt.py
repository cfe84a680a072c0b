"""Reading Caffe's text format (``.prototxt``) into a raw ``caffe.NetParameter``.

The text is parsed exactly as written (V0, V1 or V2); :mod:`protoseg.io.upgrade` brings it to V2. What this
module adds over protobuf's own parser is what a user needs when a file does not read: DeepLab's ``${NAME}``
templates filled in, and every error as ``file:line:col: message`` pointing into the file as written.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from protoseg.errors import ParseError
from protoseg.proto import caffe_pb2

__all__ = ["format_net", "parse_prototxt", "read_prototxt"]

#: Largest prototxt read: the biggest published one (DeepLab v2 ResNet-101 MSC) is under 1 MiB.
MAX_PROTOTXT = 64 * 2**20

#: DeepLab's run scripts fill ``${NAME}`` with sed before Caffe sees the file.
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NO_FIELD = re.compile(r'^Message type "([\w.]+)" has no field named "(\w+)"\.?$')
_NO_ENUM = re.compile(r'^Enum type "([\w.]+)" has no value named (\w+)\.?$')
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: What protobuf's text parser says, and what the user should do about it.
_HINTS = [
    (re.compile(r'^Expected identifier or number, got [{}]'), "a block brace with no field name before it, or one "
     "brace too many: check the braces of this block and the ones before it"),
    (re.compile(r'^Expected identifier or number, got'), "a field name is missing or misspelled here"),
    (re.compile(r'^Expected "\}"'), "a block is not closed: a '}' is missing (here or earlier)"),
    (re.compile(r'^Expected "\{"'), "a block field needs braces: name { ... }"),
    (re.compile(r'^Expected ":"'), "a value field needs a colon: name: value"),
    (re.compile(r'^Expected string but found'), "text values are quoted: name: \"value\""),
    (re.compile(r"^Couldn't parse integer|^Value out of range"), "this field takes a whole number in its range"),
    (re.compile(r"^Couldn't parse"), "the value does not have this field's type"),
    (re.compile(r'should not have multiple'), "this field takes one value: remove the repeated line"),
    (re.compile(r'^Expected "true" or "false"'), "this field is a flag: true or false"),
]


def parse_prototxt(
    text: str | bytes, *, filename: str = "<string>", defines: Mapping[str, object] | None = None
) -> caffe_pb2.NetParameter:
    """Parse prototxt ``text`` as written (any format version), filling ``${NAME}`` from ``defines``.

    Raises :class:`ParseError` with ``filename:line:col`` positions in the text as given, before substitution.
    """
    if isinstance(text, bytes):
        text = _decode(text, filename)
    lines = text.split("\n")
    code_ends = [_comment_start(line) for line in lines]
    if not any(line[:end].strip() for line, end in zip(lines, code_ends)):
        raise ParseError(f"{filename}: the prototxt is empty (no fields outside comments); is this the right file?")
    substituted, columns = _substitute(lines, code_ends, defines or {}, filename)
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse("\n".join(substituted), net)
    except text_format.ParseError as exc:
        raise _position_error(exc, filename, substituted, columns) from None
    if len(net.layer) and len(net.layers):
        raise ParseError(_mix_message(lines, code_ends, filename))
    _record_lines(net, lines, code_ends)
    return net


def _record_lines(net: caffe_pb2.NetParameter, lines: list[str], code_ends: list[int]) -> None:
    """Note in each layer the line its block starts on, so that later errors can point at it."""
    starts = _top_level(lines, code_ends, ("layer", "layers"))
    for field_name in ("layer", "layers"):
        layers, found = getattr(net, field_name), starts.get(field_name, [])
        if len(found) == len(layers):
            for layer, (line, _) in zip(layers, found):
                layer.protoseg_line = line


def read_prototxt(path: str | Path, defines: Mapping[str, object] | None = None) -> caffe_pb2.NetParameter:
    """Read and parse the prototxt at ``path`` (see :func:`parse_prototxt`)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROTOTXT + 1)
        if len(data) > MAX_PROTOTXT:
            raise ParseError(f"{path}: larger than {MAX_PROTOTXT // 2**20} MiB; a net definition is text of at most a "
                             "few MB (is this a caffemodel or a dataset?)")
    except FileNotFoundError:
        raise ParseError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ParseError(f"{path}: is a directory, not a prototxt file") from None
    except OSError as exc:
        raise ParseError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_prototxt(data, filename=str(path), defines=defines)


def format_net(net: caffe_pb2.NetParameter) -> str:
    """Caffe text format of ``net``, the output of ``protoseg upgrade`` (without protoseg's line notes)."""
    clean = caffe_pb2.NetParameter()
    clean.CopyFrom(net)
    for layer in list(clean.layer) + list(clean.layers):
        layer.ClearField("protoseg_line")
    return text_format.MessageToString(clean, as_utf8=True)


def _decode(data: bytes, filename: str) -> str:
    """UTF-8 (BOM allowed) or a ParseError naming the first bad byte; Caffe's prototxts are ASCII."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        hint = " (it looks binary: is this a .caffemodel?)" if b"\0" in data[:4096] else ""
        raise ParseError(
            f"{filename}:{line}:{column}: byte 0x{data[exc.start]:02x} is not UTF-8 text{hint}; "
            "a prototxt must be UTF-8 or ASCII text"
        ) from None


def _comment_start(line: str) -> int:
    """Index of the ``#`` that starts a comment on ``line`` (``len(line)`` if none); ``#`` in strings is text."""
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return i
        i += 1
    return len(line)


@dataclass
class _Columns:
    """Maps columns of substituted lines back to the original ones (lines never move: values are one-line)."""

    # line number (1-based) -> [(new_start, new_end, orig_start, orig_end)] for each substitution, 0-based
    spans: dict[int, list[tuple[int, int, int, int]]] = field(default_factory=dict)

    def original(self, line: int, column: int) -> int:
        """The 1-based original column of 1-based ``column`` on ``line``; inside a value: where ``${`` was."""
        c = column - 1
        shift = 0
        for new_start, new_end, orig_start, orig_end in self.spans.get(line, ()):
            if c < new_start:
                break
            if c < new_end:
                return orig_start + 1
            shift = orig_end - new_end
        return c + shift + 1


def _substitute(
    lines: list[str], code_ends: list[int], defines: Mapping[str, object], filename: str
) -> tuple[list[str], _Columns]:
    """Fill ``${NAME}`` outside comments; one ParseError lists every undefined name at its first use."""
    values: dict[str, str] = {}
    for name, value in defines.items():
        value = str(value)
        if "\n" in value or "\r" in value:
            raise ParseError(f"{filename}: the value given for {name} contains a line break; defines are one line")
        values[name] = value
    columns = _Columns()
    missing: dict[str, tuple[int, int]] = {}
    out: list[str] = []
    for lineno, (line, end) in enumerate(zip(lines, code_ends), start=1):
        pieces: list[str] = []
        spans: list[tuple[int, int, int, int]] = []
        pos = new_len = 0
        for match in _TEMPLATE.finditer(line, 0, end):
            name = match.group(1)
            if name not in values:
                missing.setdefault(name, (lineno, match.start() + 1))
                continue
            pieces.append(line[pos : match.start()])
            new_len += match.start() - pos
            value = values[name]
            spans.append((new_len, new_len + len(value), match.start(), match.end()))
            pieces.append(value)
            new_len += len(value)
            pos = match.end()
        if spans:
            pieces.append(line[pos:])
            columns.spans[lineno] = spans
            out.append("".join(pieces))
        else:
            out.append(line)
    if missing:
        listed = ", ".join(f"${{{name}}} (line {ln}:{col})" for name, (ln, col) in missing.items())
        example = next(iter(missing))
        first_line, first_col = next(iter(missing.values()))
        raise ParseError(
            f"{filename}:{first_line}:{first_col}: undefined template variable"
            f"{'s' if len(missing) > 1 else ''} {listed}; "
            f"pass a value for each with --define NAME=VALUE (e.g. --define {example}=...)"
        )
    return out, columns


def _position_error(
    exc: text_format.ParseError, filename: str, substituted: list[str], columns: _Columns
) -> ParseError:
    """Turn protobuf's error into ``file:line:col: message`` in original coordinates, with a suggestion."""
    line, column = exc.GetLine(), exc.GetColumn()
    message = str(exc)
    if line is not None:
        message = message.split(" : ", 1)[-1]
        # Some messages start with the tokenizer's current line quoted, as substituted: drop it.
        for text in substituted[max(line - 1, 0) :]:
            if message.startswith(f"'{text}': "):
                message = message[len(text) + 4 :]
                break
    message = message.rstrip(".")
    hint = next((text for pattern, text in _HINTS if pattern.search(message)), None)
    if hint is not None:
        message = f"{message}: {hint}"
    if (m := _NO_FIELD.match(message + ".")) is not None:
        type_name, field_name = m.groups()
        message = (f"unknown field {field_name!r} in {type_name}: no Caffe protoseg reads ({_FORKS}) has it"
                   + _suggest(field_name, _field_names(type_name)))
    elif (m := _NO_ENUM.match(message + ".")) is not None:
        type_name, value = m.groups()
        message = (f"unknown value {value!r} for enum {type_name}: no Caffe protoseg reads ({_FORKS}) has it"
                   + _suggest(value, _enum_names(type_name)))
    if line is None:
        return ParseError(f"{filename}: {message}")
    if column is None:
        return ParseError(f"{filename}:{line}: {message}")
    return ParseError(f"{filename}:{line}:{columns.original(line, column)}: {message}")


_FORKS = "BVLC, DeepLab v1/v2, PSPNet, SegNet/ENet, DeconvNet, CRF-as-RNN, NVCaffe, HED"


def _suggest(word: str, candidates: list[str]) -> str:
    """A "did you mean" only for what is surely a typo of a real name (a close match)."""
    close = [c for c in candidates if c.lower() == word.lower()] or \
        difflib.get_close_matches(word, candidates, n=1, cutoff=0.8)
    return f"; did you mean {close[0]!r}?" if close else ""


def _field_names(full_name: str) -> list[str]:
    try:
        return list(caffe_pb2.DESCRIPTOR.pool.FindMessageTypeByName(full_name).fields_by_name)
    except KeyError:
        return []


def _enum_names(full_name: str) -> list[str]:
    try:
        return list(caffe_pb2.DESCRIPTOR.pool.FindEnumTypeByName(full_name).values_by_name)
    except KeyError:
        return []


def _mix_message(lines: list[str], code_ends: list[int], filename: str) -> str:
    """Caffe refuses a net that has both V1 ``layers`` and V2 ``layer`` blocks; say where each starts."""
    first = _first_top_level(lines, code_ends, ("layer", "layers"))
    v2, v1 = first.get("layer"), first.get("layers")
    where = max(p for p in (v1, v2) if p is not None) if (v1 or v2) else None
    prefix = f"{filename}:{where[0]}:{where[1]}" if where else filename
    detail = f" (first 'layer' at line {v2[0]}, first 'layers' at line {v1[0]})" if v1 and v2 else ""
    return (
        f"{prefix}: the net mixes V2 'layer {{ type: \"...\" }}' and V1 'layers {{ type: ENUM }}' blocks{detail}; "
        "Caffe refuses such a file too: write every block in one format"
    )


def _first_top_level(lines: list[str], code_ends: list[int], names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """1-based positions of the first top-level occurrence of each field name in ``names``."""
    return {name: found[0] for name, found in _top_level(lines, code_ends, names).items()}


def _top_level(lines: list[str], code_ends: list[int], names: tuple[str, ...]) -> dict[str, list[tuple[int, int]]]:
    """1-based (line, column) of every top-level occurrence of each field name in ``names``, in order."""
    found: dict[str, list[tuple[int, int]]] = {}
    depth = 0
    for lineno, (line, end) in enumerate(zip(lines, code_ends), start=1):
        i = 0
        while i < end:
            ch = line[i]
            if ch in "\"'":
                close = i + 1
                while close < end and line[close] != ch:
                    close += 2 if line[close] == "\\" else 1
                i = close + 1
                continue
            if ch in "{<":
                depth += 1
            elif ch in "}>":
                depth -= 1
            elif depth == 0 and (m := _IDENT.match(line, i)) is not None:
                if m.group() in names:
                    found.setdefault(m.group(), []).append((lineno, i + 1))
                i = m.end()
                continue
            i += 1
    return found
