"""The model repository served by a real tritonserver (the embedded one, CPU variants)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from torch.testing import assert_close
from tritonclient.utils import InferenceServerException

from ssd300_build.default_boxes import dboxes300_coco
from ssd300_build.detector import SSD300Detector
from ssd300_build.reference import decode_batch
from ssd300_common import contract

from .helpers.comparisons import as_set
from .helpers.images import photo_batch

MODELS = (
    contract.NETWORK_MODEL,
    contract.POSTPROCESS_MODEL,
    contract.DETECTOR_MODEL,
    contract.IMAGE_MODEL,
    "ssd300_image_preprocess",  # the image ensemble's steps: internal, not in the contract
    "ssd300_image_postprocess",
)
OUTPUTS = contract.DETECTION_OUTPUTS


@pytest.fixture(scope="module")
def grpc(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    yield client
    client.close()


def infer_images(client, images: np.ndarray, model=contract.DETECTOR_MODEL):
    tensor = grpcclient.InferInput(contract.IMAGES_INPUT, list(images.shape), contract.IMAGES_DATATYPE)
    tensor.set_data_from_numpy(images)
    result = client.infer(model, [tensor])
    return {name: result.as_numpy(name) for name in OUTPUTS}


def http_json(server, path, body=None):
    request = urllib.request.Request(
        f"http://{server.http_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.parametrize("model", MODELS)
def test_every_model_is_ready(triton_server, model):
    assert triton_server.is_model_ready(model)


def test_server_reports_the_weights_the_model_was_built_with(grpc):
    parameters = grpc.get_model_config(contract.NETWORK_MODEL, as_json=True)["config"]["parameters"]
    assert parameters[contract.WEIGHTS_PARAMETER]["string_value"] == contract.RANDOM_WEIGHTS


def test_plain_json_over_http_works_without_a_client_library(triton_server, sample_paths):
    """What `curl -d @request.json …/v2/models/ssd300_detector/infer` sends."""
    image = photo_batch(sample_paths, 1).numpy()
    body = {
        "inputs": [
            {
                "name": contract.IMAGES_INPUT,
                "shape": list(image.shape),
                "datatype": contract.IMAGES_DATATYPE,
                "data": image.flatten().tolist(),
            }
        ]
    }
    status, reply = http_json(triton_server, f"/v2/models/{contract.DETECTOR_MODEL}/infer", body)
    assert status == 200
    outputs = {o["name"]: o for o in reply["outputs"]}
    assert outputs[contract.BOXES_OUTPUT]["shape"] == [1, 200, 4]
    assert outputs[contract.COUNT_OUTPUT]["data"][0] > 0


def test_image_ensemble_accepts_base64_in_json(triton_server, sample_paths):
    encoded = base64.b64encode(sample_paths[0].read_bytes()).decode()
    body = {
        "inputs": [
            {
                "name": contract.ENCODED_IMAGE_INPUT,
                "shape": [1, 1],
                "datatype": contract.ENCODED_IMAGE_DATATYPE,
                "data": [encoded],
            }
        ]
    }
    status, reply = http_json(triton_server, f"/v2/models/{contract.IMAGE_MODEL}/infer", body)
    assert status == 200
    sizes = {o["name"]: o["data"] for o in reply["outputs"]}[contract.IMAGE_SIZE_OUTPUT]
    assert sizes == [512, 512]


def test_detector_equals_the_in_process_reference(grpc, random_network, sample_paths):
    """Eager model + per-class greedy NMS (docs/reference-semantics.md; 0.45, 200 detections) in-process
    versus the ensemble; compared as sets so ties in score order cannot flake."""
    images = photo_batch(sample_paths, 6)
    served = infer_images(grpc, images.numpy())
    network = random_network[0]
    detector = SSD300Detector(network).eval()
    with torch.no_grad():
        ploc, plabel = network(detector.normalize(images))
    for image, reference in enumerate(decode_batch(ploc, plabel, dboxes300_coco())):
        n = int(served[contract.COUNT_OUTPUT][image, 0])
        assert n == len(reference.scores)
        boxes = torch.tensor(served[contract.BOXES_OUTPUT][image, :n])
        scores = torch.tensor(served[contract.SCORES_OUTPUT][image, :n])
        labels = torch.tensor(served[contract.CLASSES_OUTPUT][image, :n])
        assert_close(scores, reference.scores, rtol=0, atol=1e-5)
        assert as_set(boxes, scores, labels) == as_set(reference.boxes, reference.scores, reference.labels)
        assert (served[contract.CLASSES_OUTPUT][image, n:] == 0).all()


def test_image_ensemble_gives_the_tensor_paths_detections_in_pixels(grpc, sample_paths):
    from ssd300_common.imaging import decode_image, resize_for_model

    path = sample_paths[2]  # coffee.jpg, 600 x 400
    decoded = decode_image(path.read_bytes())
    tensor_path = infer_images(grpc, resize_for_model(decoded)[None])
    encoded = grpcclient.InferInput(contract.ENCODED_IMAGE_INPUT, [1, 1], contract.ENCODED_IMAGE_DATATYPE)
    encoded.set_data_from_numpy(np.array([[path.read_bytes()]], dtype=object))
    result = grpc.infer(contract.IMAGE_MODEL, [encoded])
    assert result.as_numpy(contract.IMAGE_SIZE_OUTPUT).tolist() == [[400, 600]]
    n = int(tensor_path[contract.COUNT_OUTPUT][0, 0])
    assert int(result.as_numpy(contract.COUNT_OUTPUT)[0, 0]) == n
    np.testing.assert_array_equal(
        result.as_numpy(contract.CLASSES_OUTPUT), tensor_path[contract.CLASSES_OUTPUT]
    )
    np.testing.assert_allclose(
        result.as_numpy(contract.SCORES_OUTPUT), tensor_path[contract.SCORES_OUTPUT], atol=1e-6
    )
    expected = tensor_path[contract.BOXES_OUTPUT][0, :n] * np.array([600, 400, 600, 400], dtype=np.float32)
    expected = np.clip(expected, 0, [600, 400, 600, 400])
    np.testing.assert_allclose(result.as_numpy(contract.BOXES_OUTPUT)[0, :n], expected, atol=1e-3)


def test_dynamic_batching_groups_concurrent_requests(grpc, triton_server, sample_paths):
    def statistics():
        stats = grpc.get_inference_statistics(contract.NETWORK_MODEL, as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    inferences_before, executions_before = statistics()
    image = photo_batch(sample_paths, 1).numpy()

    def one_request(_):
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        try:
            return infer_images(client, image)[contract.COUNT_OUTPUT][0, 0]
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one_request, range(16)))
    inferences, executions = statistics()
    assert inferences - inferences_before == 16
    assert executions - executions_before < 16


@pytest.mark.parametrize(
    "shape, datatype, message",
    [
        (
            [1, 300, 300, 3],
            "FP32",
            rf"data-type is 'FP32', but model '{contract.DETECTOR_MODEL}' "
            rf"expects '{contract.IMAGES_DATATYPE}'",
        ),
        ([1, 224, 224, 3], "UINT8", r"unexpected shape .*\[1,224,224,3\]"),
        ([1, 300, 300], "UINT8", "unexpected shape"),
        ([65, 300, 300, 3], "UINT8", f"batch-size must be <= 64 for .{contract.DETECTOR_MODEL}."),
    ],
)
def test_malformed_input_is_refused_with_invalid_arg_and_the_server_carries_on(
    grpc, sample_paths, shape, datatype, message
):
    dtype = np.float32 if datatype == "FP32" else np.uint8
    tensor = grpcclient.InferInput(contract.IMAGES_INPUT, shape, datatype)
    tensor.set_data_from_numpy(np.zeros(shape, dtype=dtype))
    with pytest.raises(InferenceServerException, match=message) as error:
        grpc.infer(contract.DETECTOR_MODEL, [tensor])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert infer_images(grpc, photo_batch(sample_paths, 1).numpy())[contract.COUNT_OUTPUT][0, 0] > 0


def test_undecodable_image_bytes_are_refused_with_a_message(grpc, sample_paths):
    encoded = grpcclient.InferInput(contract.ENCODED_IMAGE_INPUT, [1, 1], contract.ENCODED_IMAGE_DATATYPE)
    encoded.set_data_from_numpy(np.array([[b"GIF89a but not really"]], dtype=object))
    with pytest.raises(
        InferenceServerException, match=rf"{contract.ENCODED_IMAGE_INPUT}\[0\]: not an image file"
    ) as error:
        grpc.infer(contract.IMAGE_MODEL, [encoded])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_request_parameters_select_the_coco_evaluation_settings(grpc, random_network, sample_paths):
    """The COCO evaluation used NMS IoU 0.50; the notebook keeps 20. Both per request."""
    images = photo_batch(sample_paths, 2)
    tensor = grpcclient.InferInput(contract.IMAGES_INPUT, list(images.shape), contract.IMAGES_DATATYPE)
    tensor.set_data_from_numpy(images.numpy())
    result = grpc.infer(
        contract.DETECTOR_MODEL,
        [tensor],
        parameters={contract.NMS_IOU_PARAMETER: 0.5, contract.MAX_DETECTIONS_PARAMETER: 20},
    )
    network = random_network[0]
    with torch.no_grad():
        ploc, plabel = network(SSD300Detector(network).normalize(images))
    for image, reference in enumerate(
        decode_batch(ploc, plabel, dboxes300_coco(), criteria=0.5, max_output=20)
    ):
        n = int(result.as_numpy(contract.COUNT_OUTPUT)[image, 0])
        assert n == len(reference.scores) == 20
        assert_close(
            torch.tensor(result.as_numpy(contract.SCORES_OUTPUT)[image, :n]),
            reference.scores,
            rtol=0,
            atol=1e-5,
        )
        assert (result.as_numpy(contract.CLASSES_OUTPUT)[image, n:] == 0).all()


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"nms_iou_threshold": 1.5}, r"nms_iou_threshold must be within \[0.0, 1.0\], got 1.5"),
        ({"max_detections": 500}, r"max_detections must be within \[1, 200\], got 500"),
        ({"score_threshold": "high"}, "score_threshold must be a number, got .high."),
        ({"max_detections": 2.5}, "max_detections must be an integer, got 2.5"),
    ],
)
def test_out_of_range_request_parameters_are_refused(grpc, sample_paths, parameters, message):
    tensor = grpcclient.InferInput(contract.IMAGES_INPUT, [1, 300, 300, 3], contract.IMAGES_DATATYPE)
    tensor.set_data_from_numpy(photo_batch(sample_paths, 1).numpy())
    with pytest.raises(InferenceServerException, match=message) as error:
        grpc.infer(contract.DETECTOR_MODEL, [tensor], parameters=parameters)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"


@pytest.mark.parametrize("model", contract.PUBLIC_MODELS)
@pytest.mark.parametrize(
    "wanted",
    [[contract.COUNT_OUTPUT], [contract.SCORES_OUTPUT, contract.CLASSES_OUTPUT], [contract.BOXES_OUTPUT]],
)
def test_any_subset_of_outputs_can_be_requested(grpc, sample_paths, model, wanted):
    if model == contract.IMAGE_MODEL:
        tensor = grpcclient.InferInput(contract.ENCODED_IMAGE_INPUT, [1, 1], contract.ENCODED_IMAGE_DATATYPE)
        tensor.set_data_from_numpy(np.array([[sample_paths[0].read_bytes()]], dtype=object))
    else:
        tensor = grpcclient.InferInput(contract.IMAGES_INPUT, [1, 300, 300, 3], contract.IMAGES_DATATYPE)
        tensor.set_data_from_numpy(photo_batch(sample_paths, 1).numpy())
    result = grpc.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(name) for name in wanted])
    assert {output.name for output in result.get_response().outputs} == set(wanted)


def test_canary_health_check_passes_on_a_working_server(triton_server):
    assert triton_server.health() == (True, "ok")
