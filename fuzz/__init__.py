"""Mutation fuzzing of protoseg's readers: prototxt text, binary caffemodels and HDF5 caffemodels.

``python -m fuzz --help``; see ``fuzz/README.md``. Only :mod:`fuzz.targets` calls protoseg.
"""
