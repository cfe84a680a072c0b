"""Running converted models on images: preprocessing, prediction, label palettes and VOC evaluation.

The submodules are imported explicitly (``from protoseg.run.palette import label_image``) so that using one
piece, say the metrics in a notebook, does not pull in torch through the others.
"""

from __future__ import annotations
