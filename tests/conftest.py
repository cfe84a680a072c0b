"""Shared test fixtures: where the ground truth made by real Caffe lives (``../shared``), skipped when absent."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture
def fixtures_dir() -> Path:
    return need(FIXTURES)


@pytest.fixture
def published_dir() -> Path:
    return need(PUBLISHED)
