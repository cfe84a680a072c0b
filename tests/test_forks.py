"""Which fork wrote a file: evidence from fields, enum values, type strings and stored blob counts."""

from __future__ import annotations

import numpy as np
import pytest

from protoseg.io.prototxt import parse_prototxt
from protoseg.io.weights import open_weights, write_weights
from protoseg.loader import detect_fork

V2 = 'layer { name: "bn" type: "BN" bottom: "x" top: "x" }\n'
V1 = 'layers { name: "bn" type: BN bottom: "x" top: "x" }\n'


@pytest.mark.parametrize("text", [V2, V1], ids=["V2", "V1"])
@pytest.mark.parametrize("blobs, fork", [(4, "pspnet"), (2, "segnet")])
def test_bn_blob_count_names_the_fork(text: str, blobs: int, fork: str, tmp_path) -> None:
    """``BN`` is PSPNet's 4-blob layer and caffe-segnet's (and DeconvNet's) 2-blob one: the caffemodel decides,
    in a V1 ``layers {}`` file (enum type) as in a V2 one."""
    weights = tmp_path / "w.caffemodel"
    write_weights(weights, {"bn": [np.ones((1, 3, 1, 1), np.float32)] * blobs})
    detection = detect_fork(parse_prototxt(text), open_weights(weights))
    if text is V1 and fork == "pspnet":
        # V1's BN enum value exists only in the V1-era forks (DeconvNet's, caffe-segnet's): the 4 blobs
        # contradict it, and the detection says so
        assert detection.unexplained
    else:
        assert detection.fork == fork or (text is V1 and detection.fork == "deconvnet")
    assert any(f"with {blobs} stored blobs" in line for line in detection.evidence)


def test_plain_files_read_as_bvlc() -> None:
    text = 'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 1 } }\n'
    assert detect_fork(parse_prototxt(text)).fork == "bvlc"
