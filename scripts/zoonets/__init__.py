"""Builders of protoseg's own deploy prototxts, one module per model family (see ``scripts/gen_zoo_prototxt.py``)."""
