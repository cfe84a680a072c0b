"""Byte-level mutators shared by every format, the hostile values the structure-aware ones draw from, and the
chain that stacks a few mutations per input.

A mutator is ``fn(data, rng, others) -> bytes``: ``others`` are the other seeds of the format, for splicing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

Mutator = Callable[[bytes, random.Random, Sequence[bytes]], bytes]

#: Command-injection names try to create files with this prefix; the worker reports any that appears.
CANARY = "/tmp/fuzz-pwned-"

#: Names that break code which turns names into Python (fx nodes, submodules, generated source), by kind:
#: command injections (the first two are valid Python as a parameter, ``def forward(self, x=...)``), nn.Module
#: and fx attributes with keywords and builtins, identifiers that NFKC-normalise onto others ("ﬁ" -> "fi",
#: fullwidth, Kelvin sign), and long names or characters that need escaping.
HOSTILE_NAMES = [
    [
        f"x=__import__('os').system('touch {CANARY}system')",
        f"x=open('{CANARY}open', 'w')",
        f"__import__('os').system('touch {CANARY}expr')",
        f"x'); __import__('os').system('touch {CANARY}quote'); ('",
        f'x"); __import__("os").system("touch {CANARY}dquote"); ("',
        f"x\nimport os; os.system('touch {CANARY}newline')\n",
        f"x) or open('{CANARY}paren', 'w') #",
    ],
    ["self", "forward", "__init__", "training", "eval", "_modules", "__class__", "__dict__", "graph", "code",
     "torch", "fx", "None", "True", "lambda", "class", "sum", "abs", "input", "getattr", "_tensor_constant0"],
    ["ﬁ", "fi", "ｄａｔａ", "data", "\u212a", "K", "𝐝𝐚𝐭𝐚", "e\u0301", "\u00e9"],
    ["a" * 1000, "", " ", "0", "1x", "a.b", "a/b", "../../x", "-", "\t", "\x00", '"', "'", "\\", "a\nb",
     "${NET_ID}", "${UNDEFINED}"],
]
INTERESTING_INTS = [0, 1, -1, 2, 3, 255, 2**31 - 1, 2**31, -(2**31), 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def _span(data: bytes, rng: random.Random, longest: int = 4096) -> tuple[int, int]:
    """A random range of ``data``; lengths are log-uniform so that short ranges dominate."""
    length = min(len(data), rng.randrange(1, 1 << rng.randrange(1, longest.bit_length())))
    start = rng.randrange(len(data) - length + 1)
    return start, start + length


def flip(data: bytes, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Flip a few bits, or set a byte to a boundary value."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        if out:
            i = rng.randrange(len(out))
            out[i] = rng.choice([out[i] ^ (1 << rng.randrange(8)), 0x00, 0xFF, 0x7F, 0x80])
    return bytes(out)


def insert(data: bytes, rng: random.Random, others: Sequence[bytes]) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.randbytes(rng.randrange(1, 65)) + data[i:]


def delete(data: bytes, rng: random.Random, others: Sequence[bytes]) -> bytes:
    if not data:
        return data
    start, stop = _span(data, rng)
    return data[:start] + data[stop:]


def duplicate(data: bytes, rng: random.Random, others: Sequence[bytes]) -> bytes:
    if not data:
        return data
    start, stop = _span(data, rng)
    i = rng.randrange(len(data) + 1)
    return data[:i] + data[start:stop] + data[i:]


def splice(data: bytes, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """The head of this input on the tail of another seed of the same format."""
    other = rng.choice(others)
    return data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]


BYTE_MUTATORS: list[Mutator] = [flip, insert, delete, duplicate, splice]


def hostile_name(rng: random.Random) -> str:
    """A name from :data:`HOSTILE_NAMES`, each kind equally likely."""
    return rng.choice(rng.choice(HOSTILE_NAMES))


def chain(data: bytes, rng: random.Random, others: Sequence[bytes], structured: Sequence[Mutator],
          p_structured: float, steps: int | None = None) -> tuple[bytes, list[str]]:
    """Apply 1-3 mutations (``steps`` if given), each structure-aware with probability ``p_structured``;
    returns the input and the names of the mutators, for the reproducer's record."""
    names = []
    for _ in range(steps if steps is not None else rng.choice((1, 1, 2, 3))):
        fn = rng.choice(structured if structured and rng.random() < p_structured else BYTE_MUTATORS)
        data = fn(data, rng, others)
        names.append(fn.__name__)
    return data, names
