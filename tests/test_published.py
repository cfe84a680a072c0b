"""Every published prototxt parses, upgrades, infers shapes and builds; the paper's parameter counts hold."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from protoseg.info import describe
from tests.conftest import PUBLISHED

DEFINES = {"NET_ID": "net", "EXP": "voc12", "DATA_ROOT": "/d", "TEST_SET": "val", "TRAIN_SET": "train",
           "FEATURE_DIR": "/f", "NUM_LABELS": "21", "MODEL": "m", "LIST_DIR": "/l"}


def _published() -> list[Path]:
    return sorted(PUBLISHED.rglob("*.prototxt")) if PUBLISHED.exists() else []


@pytest.mark.parametrize("path", _published(), ids=lambda p: str(p.relative_to(PUBLISHED)))
def test_published_prototxt_builds(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = describe(path, defines=DEFINES, phase="TRAIN" if "train" in path.name else "TEST")
    assert summary["layers"] and summary["outputs"]
    assert all(all(d > 0 for s in layer["shapes"] for d in s) for layer in summary["layers"])


@pytest.mark.parametrize(
    "relative, params",
    [
        ("deeplab_v1/largefov/test.prototxt", 20_505_429),
        ("deeplab_v1/deeplab_base/test.prototxt", 65_140_565),
        ("deeplab_v2/resnet101/test.prototxt", 44_153_980),
    ],
)
def test_paper_parameter_counts(relative: str, params: int, published_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert describe(published_dir / relative, defines=DEFINES)["total_params"] == params
