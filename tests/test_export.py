"""The exported TorchScript model: same numbers as eager, dynamic batch, decode as the reference."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch.testing import assert_close

from ssd300_build.default_boxes import dboxes300_coco
from ssd300_build.detector import SSD300Detector
from ssd300_build.reference import decode_batch
from ssd300_common.contract import METADATA_FILE
from ssd300_serving.provenance import read_provenance

from .helpers.images import photo_batch


@pytest.fixture(scope="module")
def scripted(built_repository):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(built_repository / "ssd300" / "1" / "model.pt"))


@pytest.mark.parametrize("batch", [1, 5])
def test_torchscript_matches_eager_for_any_batch_size(scripted, random_network, sample_paths, batch):
    images = photo_batch(sample_paths, batch)
    eager = SSD300Detector(random_network[0]).eval()
    with torch.no_grad():
        eager_boxes, eager_scores = eager(images)
        boxes, scores = scripted(images)
    assert boxes.shape == (batch, 80, 200, 4) and scores.shape == (batch, 80, 200)
    assert_close(boxes, eager_boxes, rtol=0, atol=1e-4)
    assert_close(scores, eager_scores, rtol=0, atol=1e-4)


def test_graph_decode_matches_the_reference_decode_of_raw_outputs(scripted, random_network, sample_paths):
    """The reference decodes ploc/plabel itself (docs/reference-semantics.md); the graph must agree."""
    network = random_network[0]
    images = photo_batch(sample_paths, 2)
    detector = SSD300Detector(network).eval()
    with torch.no_grad():
        ploc, plabel = network(detector.normalize(images))
        boxes, scores = scripted(images)
    reference = decode_batch(ploc, plabel, dboxes300_coco(), max_output=5)
    for image, expected in enumerate(reference):
        for box, score, label in zip(expected.boxes, expected.scores, expected.labels):
            ranks = (scores[image, label - 1] == score).nonzero().flatten()
            assert any(torch.allclose(boxes[image, label - 1, r], box, atol=1e-5) for r in ranks)


def test_model_carries_its_weights_metadata(built_repository):
    metadata = read_provenance(built_repository)
    assert metadata["weights"] == "random" and metadata["torch_version"] == torch.__version__
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(built_repository / "ssd300" / "1" / "model.pt"), _extra_files=extra)
    assert json.loads(extra[METADATA_FILE]) == metadata


def test_calibrated_random_weights_behave_like_a_trained_model(scripted, sample_paths):
    """docs/testing.md: scores spread out instead of saturating, boxes of sane size."""
    with torch.no_grad():
        boxes, scores = scripted(photo_batch(sample_paths, 4))
    assert torch.isfinite(boxes).all() and boxes.abs().max() < 5
    candidates = [image_scores[image_scores > 0.05] for image_scores in scores]
    # most photos give enough candidates for 200 detections (one may be quiet, like a real model)
    assert sum(len(above) > 200 for above in candidates) >= len(candidates) - 1
    for above in candidates:
        assert (above < 0.95).float().mean() > 0.9  # mostly not saturated


def test_exported_convolutions_carry_the_cudnn_flags_chosen_for_the_gpu(scripted):
    """The trace freezes cuDNN flags into model.pt; export.py sets them on purpose."""
    from ssd300_build.export import CUDNN_FLAGS

    convolutions = [n for n in scripted.inlined_graph.nodes() if n.kind() == "aten::_convolution"]
    assert len(convolutions) > 50  # ResNet-50 backbone, extra blocks, heads
    names = ("benchmark", "deterministic", "enabled", "allow_tf32")
    for node in convolutions:
        # ... groups, benchmark, deterministic, cudnn_enabled, allow_tf32
        frozen = dict(zip(names, (value.toIValue() for value in list(node.inputs())[-4:])))
        assert frozen == {name: CUDNN_FLAGS[name] for name in names}


def test_trace_ignores_the_building_processs_cudnn_state(random_network):
    from ssd300_build.export import CUDNN_FLAGS, trace_detector

    with torch.backends.cudnn.flags(enabled=False, benchmark=True, deterministic=True, allow_tf32=False):
        traced = trace_detector(random_network[0])
    node = next(n for n in traced.inlined_graph.nodes() if n.kind() == "aten::_convolution")
    frozen = [value.toIValue() for value in list(node.inputs())[-4:]]
    expected = [CUDNN_FLAGS[name] for name in ("benchmark", "deterministic", "enabled", "allow_tf32")]
    assert frozen == expected


def test_heads_accept_non_contiguous_feature_maps(random_network):
    """Head outputs are reshaped, not viewed: channels-last inputs give non-contiguous maps."""
    network = random_network[0]
    images = torch.rand(1, 3, 300, 300)
    with torch.no_grad():
        expected = network(images)
        try:
            network.to(memory_format=torch.channels_last)
            channels_last = network(images.to(memory_format=torch.channels_last))
        finally:  # the network is shared by the session
            network.to(memory_format=torch.contiguous_format)
    for got, want in zip(channels_last, expected):
        assert_close(got, want, rtol=1e-4, atol=1e-4)
