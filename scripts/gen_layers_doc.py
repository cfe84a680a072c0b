"""Write ``docs/layers.md``, the supported-layers table, from protoseg's converter registry.

    python scripts/gen_layers_doc.py            # rewrite docs/layers.md
    python scripts/gen_layers_doc.py --check    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from protoseg.layers.base import layers_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "layers.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    text = layers_markdown()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python scripts/gen_layers_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
