"""The in-process part of ``make bench`` on the session's calibrated random network: the served
postprocess gives the reference's detections, and one build's model.pt and model.onnx (the
temporary copy a run builds) answer alike (load_tests/benchmark/inprocess.py, serving.py)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import torch

from load_tests.benchmark import inprocess, serving
from load_tests.payloads import SampleImages

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"


def test_the_served_postprocess_matches_the_reference(random_network):
    network, _ = random_network
    images = torch.from_numpy(SampleImages().pixels[:2])
    figures = inprocess.compare_postprocess(network, images, repeats=1)
    assert figures["mismatches"] == [] and len(figures["detections_per_image"]) == 2
    assert max(figures["detections_per_image"]) > 0  # the comparison compared something
    # Its timings are the report's figures, not a property to test on a shared machine.


def test_a_run_builds_both_engines_of_the_same_weights_into_a_temporary_copy(random_network):
    images = torch.from_numpy(SampleImages().pixels[:1])
    with ExitStack() as stack:
        built = serving.built_copy(REPOSITORY, *random_network, stack)
        version = built / "ssd300" / "1"
        assert json.loads((version / "weights.json").read_text())["engine"] == "onnx"
        (row,) = inprocess.compare_engines(built, images, (1,), repeats=1)
        assert serving.repository_to_serve(built, stack) == built  # built: served as it is
    assert not built.exists()  # the copy lives as long as the run
    assert row["batch_size"] == 1 and row["torchscript"] > 0 and row["onnx"] > 0
    assert row["max_score_diff"] < 1e-3  # same FP32 weights, different kernels
