"""PRECISION=fp16: a half-precision network inside the same uint8-in, FP32-out model.pt.

Half-precision convolutions run on this CPU, but at ~25 s per image: one photo only, one
build, one served request.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import tritonclient.grpc as grpcclient

from ssd300_build.export import METADATA_FILE, read_metadata, write_model
from ssd300_serving.embedded_server import EmbeddedServer

from .helpers.engines import (
    assert_rows_match,
    assert_same_detections,
    copy_repository,
    rows_of,
    run_torchscript,
    select,
)
from .helpers.images import photo_batch

# Issue 13's bar for FP16 against FP32 on the same input.
FP16_TOLERANCE = 2e-3
FP16_MIN_SCORE = 0.3


@pytest.fixture(scope="module")
def fp16_repository(tmp_path_factory, random_network):
    repository = copy_repository(tmp_path_factory, "fp16")
    network, metadata = random_network
    write_model(network, repository, metadata, precision="fp16")
    return repository


@pytest.fixture(scope="module")
def one_photo(sample_paths):
    return photo_batch(sample_paths, 1)


@pytest.fixture(scope="module")
def fp16_outputs(fp16_repository, one_photo):
    return run_torchscript(fp16_repository, one_photo)


def test_fp16_model_runs_a_half_network_behind_the_fp32_contract(
    fp16_repository, random_network, fp16_outputs
):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        extra = {METADATA_FILE: ""}
        model = torch.jit.load(str(fp16_repository / "ssd300" / "1" / "model.pt"), _extra_files=extra)
    conv_weights = [p for name, p in model.named_parameters() if p.dim() == 4]
    assert conv_weights and all(p.dtype == torch.float16 for p in conv_weights)
    boxes, scores = fp16_outputs
    assert boxes.dtype == scores.dtype == torch.float32
    assert boxes.shape == (1, 8732, 4) and scores.shape == (1, 80, 8732)
    metadata = json.loads(extra[METADATA_FILE])
    assert metadata == read_metadata(fp16_repository)
    assert metadata["precision"] == "fp16" and metadata["weights"] == "random"
    # the session's FP32 network was copied, not converted
    assert all(p.dtype == torch.float32 for p in random_network[0].parameters())


def test_fp16_outputs_stay_near_fp32_on_a_photo(built_repository, one_photo, fp16_outputs):
    """A guard against casts gone wrong (overflow, NaN, an FP16 output): those give errors of
    order 1. The bounds are ~1.4x what this fixture measures (scores 0.044, boxes inside the
    image 0.006): FP16 rounding compounds over ResNet-50 and the calibrated random logits are
    large, so the differences are well above the 2e-3 issue 13 hoped for (next test)."""
    boxes32, scores32 = run_torchscript(built_repository, one_photo)
    boxes16, scores16 = fp16_outputs
    assert torch.isfinite(boxes16).all() and torch.isfinite(scores16).all()
    assert float((scores16 - scores32).abs().max()) < 0.06
    assert float((boxes16.clamp(0, 1) - boxes32.clamp(0, 1)).abs().max()) < 0.01
    confident = scores32 > FP16_MIN_SCORE
    assert confident.sum() > 100
    assert float((scores16 - scores32)[confident].abs().quantile(0.99)) < 0.03


@pytest.mark.xfail(
    strict=True,
    reason="measured on the calibrated random weights: FP16 scores differ from FP32 by up to 0.044 "
    "(99th percentile 0.021 above score 0.3) and boxes by up to 8e-3, so near-equal candidates "
    "swap order in the greedy NMS; to be judged again with NVIDIA's checkpoint",
)
def test_fp16_detections_match_fp32_within_2e_3_on_a_photo(built_repository, one_photo, fp16_outputs):
    """Issue 13's bar: same labels above score 0.3, boxes and scores within 2e-3."""
    assert_same_detections(
        run_torchscript(built_repository, one_photo),
        fp16_outputs,
        box_tol=FP16_TOLERANCE,
        score_tol=FP16_TOLERANCE,
        min_score=FP16_MIN_SCORE,
    )


@pytest.mark.server  # starts its own tritonserver
def test_fp16_model_serves_in_the_embedded_server(fp16_repository, one_photo, fp16_outputs, tmp_path):
    server = EmbeddedServer.on_free_ports(
        fp16_repository,
        log_path=tmp_path / "tritonserver.log",
    )
    # The start-up canary runs one FP16 forward pass too (~25 s here, more on a busy machine).
    with server.start(timeout_s=900):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            parameters = client.get_model_config("ssd300", as_json=True)["config"]["parameters"]
            tensor = grpcclient.InferInput("images", list(one_photo.shape), "UINT8")
            tensor.set_data_from_numpy(one_photo.numpy())
            result = client.infer("ssd300_detector", [tensor], client_timeout=900)
        finally:
            client.close()
    assert parameters["precision"]["string_value"] == "fp16"
    assert parameters["engine"]["string_value"] == "torchscript"
    expected_boxes, expected_scores, expected_labels, expected_counts = select(*fp16_outputs)
    served = rows_of(
        *(
            torch.tensor(result.as_numpy(name)[0])
            for name in ("detection_boxes", "detection_scores", "detection_classes")
        ),
        int(result.as_numpy("num_detections")[0, 0]),
    )
    expected = rows_of(expected_boxes[0], expected_scores[0], expected_labels[0], int(expected_counts[0, 0]))
    # The same model.pt in and out of the server: equal but for thread-count rounding.
    assert assert_rows_match(expected, served, box_tol=1e-4, score_tol=1e-4) > 50
