"""Shared test fixtures: where the ground truth made by real Caffe lives (``../shared``), skipped when absent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
PUBLISHED = SHARED / "published"
IMAGES = SHARED / "images"


def need(path: Path) -> Path:
    """Return ``path`` or skip the test when the shared ground truth is not beside the checkout."""
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared fixtures live beside the checkout)")
    return path


def load_script(path: Path, name: str | None = None) -> ModuleType:
    """The Python file ``path`` (a script, an example, ``materialize.py``) as a module, run once; it is in
    ``sys.modules`` only while it runs (dataclasses look themselves up there)."""
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, need(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def materializer() -> ModuleType:
    """``../shared/fixtures/materialize.py``: writes the fixture weights of the big nets."""
    return load_script(FIXTURES / "materialize.py")


@pytest.fixture
def fixtures_dir() -> Path:
    return need(FIXTURES)


@pytest.fixture
def published_dir() -> Path:
    return need(PUBLISHED)


@pytest.fixture(autouse=True)
def _malloc_untouched(monkeypatch) -> list[bool]:
    """``run`` and ``eval`` change glibc's malloc for their whole process (protoseg.run.memory); in-process CLI
    tests record the call instead, so that the test session keeps the usual allocator. tests/test_memory.py
    checks the real thing in a child process."""
    from protoseg.run import memory

    calls: list[bool] = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(True) or True)
    return calls
