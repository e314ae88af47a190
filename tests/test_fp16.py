"""PRECISION=fp16: a half-precision network inside the same uint8-in, FP32-out model.pt.

Half-precision convolutions run on this CPU, but at ~25 s per image: one photo, one build (its
trace runs one image), one server (its start-up canary runs another) and one served request,
whose outputs every numerical check here reads.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import tritonclient.grpc as grpcclient

from ssd300_build.detector import SSD300Detector, fp32_network_of
from ssd300_build.export import write_model
from ssd300_build.onnx_export import OUTPUT_NAMES
from ssd300_common import contract
from ssd300_common.contract import METADATA_FILE
from ssd300_serving.embedded_server import EmbeddedServer
from ssd300_serving.provenance import read_provenance

from .helpers.engines import copy_repository, run_torchscript, select
from .helpers.images import photo_batch
from .helpers.triton_calls import tensor


def differences(expected, actual, min_score=None):
    """How far two engines' ranked outputs (each class's best candidates, highest first) are
    apart: the largest difference of scores at the same rank (sorted lists: no larger than the
    largest difference of any anchor's score), and the largest distance from a candidate of
    ``expected`` scoring above ``min_score`` (and clear of its class's cut) to the nearest box
    of its class in ``actual`` (boxes clamped to the image)."""
    (boxes_a, scores_a), (boxes_b, scores_b) = expected, actual
    score_difference = float((scores_a - scores_b).abs().max())
    if min_score is None:
        return score_difference
    boxes_a, boxes_b = boxes_a.clamp(0, 1)[0], boxes_b.clamp(0, 1)[0]
    # A candidate within the score difference of its class's last place may be outside the other
    # engine's top list: only those clear of that cut are compared.
    cut = scores_a[0, :, -1:] + 2 * score_difference
    confident = (scores_a[0] > min_score) & (scores_a[0] > cut)
    distances = [
        (boxes_a[label][confident[label], None] - boxes_b[label][None]).abs().amax(-1).amin(-1)
        for label in range(len(boxes_a))
        if confident[label].any()
    ]
    return score_difference, float(torch.cat(distances).max())


# Issue 13's bar for FP16 against FP32 on the same input (see the floor test below).
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
def fp16_server(fp16_repository, tmp_path_factory):
    server = EmbeddedServer.on_free_ports(
        fp16_repository, log_path=tmp_path_factory.mktemp("fp16_server") / "tritonserver.log"
    )
    # The start-up canary runs one FP16 forward pass through ssd300_image (~25 s here).
    with server.start(timeout_s=900):
        yield server


@pytest.fixture(scope="module")
def fp16_outputs(fp16_server, one_photo):
    """model.pt's (boxes, scores) for the photo, as the ssd300 model serves them."""
    with grpcclient.InferenceServerClient(fp16_server.grpc_url) as client:
        images = tensor(contract.IMAGES_INPUT, one_photo.numpy(), contract.IMAGES_DATATYPE)
        result = client.infer(contract.NETWORK_MODEL, [images], client_timeout=900)
    return tuple(torch.from_numpy(result.as_numpy(name).copy()) for name in OUTPUT_NAMES)


@pytest.mark.server  # reads fp16_outputs, served by this module's own server
def test_fp16_model_runs_a_half_network_behind_the_fp32_contract(
    fp16_repository, random_network, fp16_outputs
):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        extra = {METADATA_FILE: ""}
        model = torch.jit.load(
            str(fp16_repository / contract.NETWORK_MODEL / "1" / "model.pt"), _extra_files=extra
        )
    conv_weights = [p for name, p in model.named_parameters() if p.dim() == 4]
    assert conv_weights and all(p.dtype == torch.float16 for p in conv_weights)
    boxes, scores = fp16_outputs
    assert boxes.dtype == scores.dtype == torch.float32
    assert boxes.shape == (1, 80, 200, 4) and scores.shape == (1, 80, 200)
    metadata = json.loads(extra[METADATA_FILE])
    assert metadata == read_provenance(fp16_repository)
    assert metadata["precision"] == "fp16" and metadata["weights"] == "random"
    # the session's FP32 network was copied, not converted
    assert all(p.dtype == torch.float32 for p in random_network[0].parameters())


@pytest.mark.server  # reads fp16_outputs, served by this module's own server
def test_fp16_outputs_stay_near_fp32_on_a_photo(built_repository, one_photo, fp16_outputs):
    """A guard against casts gone wrong (overflow, NaN, an FP16 output): those give errors of
    order 1. Measured on this photo with batch norms folded: scores 0.029, boxes inside the image
    0.0056, 99th percentile above score 0.3: 0.016; the bounds leave room above that. FP16 rounding
    compounds over ResNet-50, so these are well above the 2e-3 issue 13 hoped for (next test says
    why)."""
    outputs32 = run_torchscript(built_repository, one_photo)
    boxes16, scores16 = fp16_outputs
    assert torch.isfinite(boxes16).all() and torch.isfinite(scores16).all()
    score_difference, box_distance = differences(outputs32, fp16_outputs, FP16_MIN_SCORE)
    assert score_difference < 0.06 and box_distance < 0.01
    confident = outputs32[1] > FP16_MIN_SCORE
    assert confident.sum() > 100
    assert float((scores16 - outputs32[1])[confident].abs().quantile(0.99)) < 0.03


@pytest.mark.server  # reads fp16_outputs, served by this module's own server
def test_fp16_adds_little_beyond_rounding_the_input_to_half_precision(
    random_network, one_photo, fp16_outputs
):
    """Issue 13 asked for FP16 within 2e-3 of FP32 on this fixture; the fixture cannot resolve
    that. Its random network is far more sensitive to its input than a trained detector: rounding
    only the normalised input to FP16 (the first thing an FP16 network does; at most a tenth of a
    uint8 step) and computing the rest in FP32 already moves scores by 0.011 and boxes by 0.0023
    on this photo (measured). So FP16 is held to what this fixture can measure: at most 4x that
    floor (measured 2.6x for scores and 2.4x for boxes with batch norms folded; 4.0x for scores
    with them in FP16, as before). A cast gone wrong gives errors of order one."""
    detector = SSD300Detector(random_network[0]).eval()
    with torch.inference_mode():
        outputs32 = detector(one_photo)
        handle = detector.network.register_forward_pre_hook(lambda _, inputs: (inputs[0].half().float(),))
        try:
            outputs_rounded = detector(one_photo)
        finally:
            handle.remove()
    floor_scores, floor_boxes = differences(outputs32, outputs_rounded, FP16_MIN_SCORE)
    # If this fails, the fixture became well-conditioned: hold FP16 to issue 13's 2e-3 instead.
    assert floor_scores > FP16_TOLERANCE
    score_difference, box_distance = differences(outputs32, fp16_outputs, FP16_MIN_SCORE)
    assert score_difference <= 4 * floor_scores
    assert box_distance <= 4 * max(floor_boxes, 1e-3)


def test_the_fp32_network_comes_back_out_of_an_fp16_model(fp16_repository, random_network, one_photo):
    """make gpu-check and the benchmark's ONNX build read the network out of model.pt; an FP16 one
    has its batch norms folded, and comes back in that form, in FP32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(fp16_repository / contract.NETWORK_MODEL / "1" / "model.pt"))
    network = fp32_network_of(model)
    assert all(p.dtype == torch.float32 for p in network.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    with torch.inference_mode():
        outputs = SSD300Detector(network)(one_photo)
        outputs32 = SSD300Detector(random_network[0])(one_photo)
    assert differences(outputs32, outputs) < 0.06  # the weights' FP16 rounding only


@pytest.mark.server  # reads fp16_outputs, served by this module's own server
def test_the_server_loads_the_fp16_model_and_its_candidates_give_detections(fp16_server, fp16_outputs):
    with grpcclient.InferenceServerClient(fp16_server.grpc_url) as client:
        parameters = client.get_model_config(contract.NETWORK_MODEL, as_json=True)["config"]["parameters"]
    assert parameters["precision"]["string_value"] == "fp16"
    assert parameters["engine"]["string_value"] == "torchscript"
    # Its start-up canary already ran the ensemble; the photo's served candidates give detections.
    _boxes, _scores, _labels, counts = select(*fp16_outputs)
    assert int(counts[0, 0]) > 50
