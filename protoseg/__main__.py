"""``python -m protoseg``: the command line (also under ``torchrun -m protoseg``)."""

import sys

from protoseg.cli import main

sys.exit(main())
