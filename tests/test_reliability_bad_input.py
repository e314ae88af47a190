"""Bad input (issue 7), against the session's server (``triton_server``, shared with the other
test modules: nothing here may break it). Each malformed request is refused with an error naming
the problem, each odd but valid image is served, no response ever holds NaN or inf, and after
every case the server is live and a canary inference through all four Python models succeeds.
The client refuses unreadable files with an InvalidImageError naming them.

Most malformed requests never reach this project's code: tritonserver's own request parsing
refuses them. A representative few of those run here; the rest are marked ``slow`` (left out of
``make test``, run by ``make reliability`` for the report's catalogue).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from ssd300_client import Detector, InvalidImageError, InvalidInputError
from ssd300_common.contract import (
    BOXES_OUTPUT,
    COUNT_OUTPUT,
    ENCODED_IMAGE_DATATYPE,
    ENCODED_IMAGE_INPUT,
    IMAGE_MODEL,
    IMAGE_SIZE_OUTPUT,
    IMAGES_DATATYPE,
    IMAGES_INPUT,
    POSTPROCESS_MODEL,
)
from ssd300_common.contract import DETECTOR_MODEL as DETECTOR
from ssd300_serving.embedded_server import EmbeddedServer

from .helpers.images import (
    animated_gif,
    encode,
    float_tiff,
    huge_jpeg,
    jpeg_photo,
    noise,
    palette_with_transparency,
    png_claiming,
    png_photo,
    sixteen_bit_png,
)
from .helpers.triton_calls import (
    encoded_tensor,
    grpc_answer,
    http_answer,
    non_finite_values,
    outputs_of,
    served_summary,
    still_serving,
    tensor,
)

pytestmark = pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")

IMAGE_SHAPE = [1, 300, 300, 3]
IMAGE_BYTES = 300 * 300 * 3
CANDIDATES, CLASSES = 200, 80  # ssd300's outputs: each class's best candidates


# --- server side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    kind: str  # what is wrong, as the report lists it
    via: str  # protocol and model
    send: Callable[[EmbeddedServer], tuple[str, str]]  # → (answer, message)
    answer: str  # INVALID_ARGUMENT, NOT_FOUND, HTTP 400, …
    message: str  # regex the server's message must match


def grpc_pixels(
    shape, dtype=np.uint8, datatype=IMAGES_DATATYPE, model=DETECTOR, name=IMAGES_INPUT, **options
):
    def send(server):
        return grpc_answer(
            server.grpc_url, model, [tensor(name, np.zeros(shape, dtype), datatype)], **options
        )[:2]

    return send


def grpc_inputs(*inputs: tuple[str, list], model=DETECTOR):
    def send(server):
        tensors = [tensor(name, np.zeros(shape, np.uint8), IMAGES_DATATYPE) for name, shape in inputs]
        return grpc_answer(server.grpc_url, model, tensors)[:2]

    return send


def grpc_encoded(make: Callable[[], bytes]):
    return lambda server: grpc_answer(server.grpc_url, IMAGE_MODEL, [encoded_tensor(make())])[:2]


def grpc_unregistered_region(server):
    item = grpcclient.InferInput(IMAGES_INPUT, IMAGE_SHAPE, IMAGES_DATATYPE)
    item.set_shared_memory("nowhere", IMAGE_BYTES)
    return grpc_answer(server.grpc_url, DETECTOR, [item])[:2]


def http_post(model: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    return lambda server: http_answer(server.http_url, method, f"/v2/models/{model}/infer", body, headers)


def http_json(model: str, request: dict):
    return http_post(model, json.dumps(request).encode(), {"Content-Type": "application/json"})


def binary_request(
    header: dict, payload: bytes, *, header_length: int | str | None = None
) -> tuple[bytes, dict]:
    """A binary-tensor request: JSON header, then the raw tensor bytes; the length header may lie."""
    text = json.dumps(header).encode()
    length = len(text) if header_length is None else header_length
    return text + payload, {
        "Inference-Header-Content-Length": str(length),
        "Content-Type": "application/octet-stream",
    }


def http_binary(model: str, header: dict, payload: bytes, **lying):
    def send(server):
        body, headers = binary_request(header, payload, **lying)
        return http_answer(server.http_url, "POST", f"/v2/models/{model}/infer", body, headers)

    return send


def binary_input(name: str, shape: list[int], datatype: str, size: int) -> dict:
    return {
        "inputs": [
            {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}
        ]
    }


def images_header(size: int = IMAGE_BYTES) -> dict:
    return binary_input(IMAGES_INPUT, IMAGE_SHAPE, IMAGES_DATATYPE, size)


def bytes_header(size: int) -> dict:
    return binary_input(ENCODED_IMAGE_INPUT, [1, 1], ENCODED_IMAGE_DATATYPE, size)


def bytes_element(claimed_length: int, data: bytes) -> bytes:
    return struct.pack("<I", claimed_length) + data


def json_pixels(**overrides) -> dict:
    return {
        "inputs": [
            {
                "name": IMAGES_INPUT,
                "shape": IMAGE_SHAPE,
                "datatype": IMAGES_DATATYPE,
                "data": [0],
                **overrides,
            }
        ]
    }


GRPC = f"gRPC {DETECTOR}"
GRPC_IMAGE = f"gRPC {IMAGE_MODEL}"
HTTP = f"HTTP {DETECTOR}"
HTTP_IMAGE = f"HTTP {IMAGE_MODEL}"
# tritonserver 2.51 answers a request body its JSON parser rejects with 500, not 400; the message
# still names the problem. Asserted as it is, so that an upgrade that fixes it is noticed.
PARSER_500 = "HTTP 500"

REFUSALS = [
    # What this project's models check. Request parameters: the postprocess validates its
    # overrides (NaN compares false: refused too).
    Refusal(
        "nms_iou_threshold NaN",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, parameters={"nms_iou_threshold": math.nan}),
        "INVALID_ARGUMENT",
        r"nms_iou_threshold must be within \[0.0, 1.0\], got nan",
    ),
    Refusal(
        "score_threshold +inf",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, parameters={"score_threshold": math.inf}),
        "INVALID_ARGUMENT",
        r"score_threshold must be within \[0.0, 1.0\], got inf",
    ),
    Refusal(
        "negative nms_iou_threshold",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, parameters={"nms_iou_threshold": -0.1}),
        "INVALID_ARGUMENT",
        r"nms_iou_threshold must be within \[0.0, 1.0\], got -0.1",
    ),
    Refusal(
        "max_detections 0",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, parameters={"max_detections": 0}),
        "INVALID_ARGUMENT",
        r"max_detections must be within \[1, 200\], got 0",
    ),
    Refusal(
        "candidates_per_class 0",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, parameters={"candidates_per_class": 0}),
        "INVALID_ARGUMENT",
        r"candidates_per_class must be within \[1, 200\], got 0",
    ),
    Refusal(
        "boolean score_threshold",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, parameters={"score_threshold": True}),
        "INVALID_ARGUMENT",
        r"score_threshold must be a number, got True",
    ),
    Refusal(
        "empty encoded image",
        GRPC_IMAGE,
        grpc_encoded(lambda: b""),
        "INVALID_ARGUMENT",
        rf"{ENCODED_IMAGE_INPUT}\[0\] is empty",
    ),
    Refusal(
        "text instead of an image",
        GRPC_IMAGE,
        grpc_encoded(lambda: b"hello, this is not a photo"),
        "INVALID_ARGUMENT",
        rf"{ENCODED_IMAGE_INPUT}\[0\]: not an image file Pillow recognises \(26 bytes\)",
    ),
    Refusal(
        "truncated JPEG",
        GRPC_IMAGE,
        grpc_encoded(lambda: jpeg_photo()[: len(jpeg_photo()) // 2]),
        "INVALID_ARGUMENT",
        rf"{ENCODED_IMAGE_INPUT}\[0\]: not a decodable image \(OSError: image file is truncated",
    ),
    Refusal(
        "truncated PNG",
        GRPC_IMAGE,
        grpc_encoded(lambda: png_photo()[: len(png_photo()) // 2]),
        "INVALID_ARGUMENT",
        rf"{ENCODED_IMAGE_INPUT}\[0\]: not a decodable image \(OSError: image file is truncated",
    ),
    Refusal(
        "JPEG header only (20 bytes)",
        GRPC_IMAGE,
        grpc_encoded(lambda: jpeg_photo()[:20]),
        "INVALID_ARGUMENT",
        rf"{ENCODED_IMAGE_INPUT}\[0\]: not an image file Pillow recognises \(20 bytes\)",
    ),
    Refusal(
        "decompression bomb: PNG claiming 50000×50000",
        GRPC_IMAGE,
        grpc_encoded(lambda: png_claiming(50000, 50000, 10)),
        "INVALID_ARGUMENT",
        rf"{ENCODED_IMAGE_INPUT}\[0\]: refused as a decompression bomb "
        r"\(Image size \(2500000000 pixels\) exceeds limit",
    ),
    Refusal(
        "base64 of something that is no image (JSON)",
        HTTP_IMAGE,
        http_json(
            IMAGE_MODEL,
            {
                "inputs": [
                    {
                        "name": ENCODED_IMAGE_INPUT,
                        "shape": [1, 1],
                        "datatype": ENCODED_IMAGE_DATATYPE,
                        "data": ["QUJD"],
                    }
                ]
            },
        ),
        "HTTP 400",
        rf"{ENCODED_IMAGE_INPUT}\[0\]: (neither an image file nor base64 of one|not an image file)",
    ),
    # A representative few of what tritonserver's own parsing refuses.
    Refusal(
        "wrong dtype (FP32 pixels)",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, np.float32, "FP32"),
        "INVALID_ARGUMENT",
        rf"data-type is 'FP32', but model '{DETECTOR}' expects '{IMAGES_DATATYPE}'",
    ),
    Refusal(
        "batch over the maximum (65)",
        GRPC,
        grpc_pixels([65, 300, 300, 3]),
        "INVALID_ARGUMENT",
        rf"batch-size must be <= 64 for '{DETECTOR}'",
    ),
    Refusal(
        "unknown model",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, model="no_such_model"),
        "NOT_FOUND",
        r"unknown model: 'no_such_model' is not found",
    ),
    Refusal(
        "malformed JSON",
        HTTP,
        http_post(DETECTOR, b"{not json", {"Content-Type": "application/json"}),
        PARSER_500,
        r"failed to parse the request JSON buffer",
    ),
    Refusal(
        "Inference-Header-Content-Length beyond the body",
        HTTP,
        http_binary(DETECTOR, images_header(), bytes(IMAGE_BYTES), header_length=10**6),
        "HTTP 400",
        r"inference header size should be in range \(0, \d+\), got: 1000000",
    ),
]

# The rest of tritonserver's own request parsing: the same code path as the few above.
PARSER_REFUSALS = [
    Refusal(
        "wrong shape (224×224)",
        GRPC,
        grpc_pixels([1, 224, 224, 3]),
        "INVALID_ARGUMENT",
        rf"unexpected shape for input '{IMAGES_INPUT}'.*got \[1,224,224,3\]",
    ),
    Refusal(
        "missing channel axis",
        GRPC,
        grpc_pixels([1, 300, 300]),
        "INVALID_ARGUMENT",
        rf"unexpected shape for input '{IMAGES_INPUT}'",
    ),
    Refusal(
        "empty batch (0 images)",
        GRPC,
        grpc_pixels([0, 300, 300, 3]),
        "INVALID_ARGUMENT",
        rf"input byte size mismatch for input '{IMAGES_INPUT}'.*Expected 270000, got 0",
    ),
    Refusal(
        "zero-size image (1×0×300×3)",
        GRPC,
        grpc_pixels([1, 0, 300, 3]),
        "INVALID_ARGUMENT",
        rf"unexpected shape for input '{IMAGES_INPUT}'.*got \[1,0,300,3\]",
    ),
    Refusal(
        "no inputs",
        GRPC,
        grpc_inputs(),
        "INVALID_ARGUMENT",
        rf"expected 1 inputs but got 0 inputs.*missing required input\(s\) \['{IMAGES_INPUT}'\]",
    ),
    Refusal(
        "an extra input",
        GRPC,
        grpc_inputs((IMAGES_INPUT, IMAGE_SHAPE), ("masks", IMAGE_SHAPE)),
        "INVALID_ARGUMENT",
        r"expected 1 inputs but got 2 inputs",
    ),
    Refusal(
        "misnamed input",
        GRPC,
        grpc_inputs(("pixels", IMAGE_SHAPE)),
        "INVALID_ARGUMENT",
        r"unexpected inference input 'pixels'",
    ),
    Refusal(
        "unknown model version",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, model_version="7"),
        "NOT_FOUND",
        rf"'{DETECTOR}' version 7 is not found",
    ),
    Refusal(
        "unknown output requested",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, outputs=[grpcclient.InferRequestedOutput("masks")]),
        "INVALID_ARGUMENT",
        r"unexpected inference output 'masks'",
    ),
    Refusal(
        "unregistered shared-memory region",
        GRPC,
        grpc_unregistered_region,
        "NOT_FOUND",
        r"Unable to find shared memory region: 'nowhere'",
    ),
    Refusal(
        "integers instead of encoded bytes",
        GRPC_IMAGE,
        grpc_pixels([1, 1], np.int64, "INT64", IMAGE_MODEL, name=ENCODED_IMAGE_INPUT),
        "INVALID_ARGUMENT",
        rf"data-type is 'INT64', but model '{IMAGE_MODEL}' expects '{ENCODED_IMAGE_DATATYPE}'",
    ),
    Refusal(
        "JSON without inputs",
        HTTP,
        http_json(DETECTOR, {"outputs": []}),
        PARSER_500,
        r"Unable to parse 'inputs'",
    ),
    Refusal(
        "JSON data shorter than its shape",
        HTTP,
        http_json(DETECTOR, json_pixels(data=[1, 2, 3])),
        PARSER_500,
        r"Unable to parse 'data': Shape does not match true shape of 'data' field",
    ),
    Refusal(
        "negative dimension",
        HTTP,
        http_json(DETECTOR, json_pixels(shape=[-1, 300, 300, 3])),
        PARSER_500,
        r"Unable to parse 'shape'",
    ),
    Refusal(
        "unknown datatype",
        HTTP,
        http_json(DETECTOR, json_pixels(datatype="UINT3")),
        "HTTP 400",
        rf"invalid datatype for input {IMAGES_INPUT}",
    ),
    Refusal(
        "negative Inference-Header-Content-Length",
        HTTP,
        http_binary(DETECTOR, images_header(), bytes(IMAGE_BYTES), header_length=-5),
        "HTTP 400",
        r"inference header size should be in range \(0, \d+\), got: -5",
    ),
    Refusal(
        "Inference-Header-Content-Length cutting the JSON",
        HTTP,
        http_binary(DETECTOR, images_header(), bytes(IMAGE_BYTES), header_length=10),
        PARSER_500,
        r"failed to parse the request JSON buffer",
    ),
    Refusal(
        "binary tensor shorter than binary_data_size",
        HTTP,
        http_binary(DETECTOR, images_header(), bytes(1000)),
        "HTTP 400",
        rf"unexpected size for input '{IMAGES_INPUT}', expecting 269000 additional bytes",
    ),
    Refusal(
        "BYTES length prefix beyond the data",
        HTTP_IMAGE,
        http_binary(IMAGE_MODEL, bytes_header(4 + 100), bytes_element(1100, bytes(100))),
        "HTTP 400",
        rf"incomplete string data for inference input '{ENCODED_IMAGE_INPUT}', "
        r"expecting string of length 1100 but only 100 bytes",
    ),
    Refusal(
        "BYTES data holding two elements for shape [1, 1]",
        HTTP_IMAGE,
        http_binary(
            IMAGE_MODEL,
            bytes_header(8 + 10 + 86),
            bytes_element(10, b"a" * 10) + bytes_element(86, b"b" * 86),
        ),
        "HTTP 400",
        rf"unexpected number of string elements 2 for inference input '{ENCODED_IMAGE_INPUT}'",
    ),
    Refusal(
        "BYTES length prefix cut short (3 of 4 bytes)",
        HTTP_IMAGE,
        http_binary(IMAGE_MODEL, bytes_header(3), b"\x10\x00\x00"),
        "HTTP 400",
        rf"incomplete string length indicator for inference input '{ENCODED_IMAGE_INPUT}'",
    ),
    Refusal(
        "GET on the infer endpoint",
        HTTP,
        http_post(DETECTOR, b"", method="GET"),
        "HTTP 405",
        r"Method Not Allowed",
    ),
]


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.kind) for case in REFUSALS]
    + [pytest.param(case, id=case.kind, marks=pytest.mark.slow) for case in PARSER_REFUSALS],
)
def test_bad_requests_are_refused_naming_the_problem_and_the_server_carries_on(
    triton_server, reliability_figures, case
):
    reliability_figures.server_version(triton_server.http_url)
    answer, message = case.send(triton_server)
    healthy = still_serving(triton_server)
    reliability_figures.case(
        kind=case.kind, side="server", via=case.via, answer=answer, message=message, healthy_after=healthy
    )
    if answer == PARSER_500:
        reliability_figures.note(
            "tritonserver 2.51 answers an HTTP body its JSON parser rejects with 500, not 400 "
            "(the message names the problem)."
        )
    assert answer == case.answer, message
    assert re.search(case.message, message), message
    assert healthy


@dataclass(frozen=True)
class OddImage:
    kind: str
    encode: Callable[[], bytes]
    size: tuple[int, int]  # (height, width) the server must report


ODD_IMAGES = [
    OddImage("1×1 pixel PNG", lambda: encode(Image.new("RGB", (1, 1), (200, 40, 40)), "PNG"), (1, 1)),
    OddImage("8000×6000 JPEG (48 megapixels)", huge_jpeg, (6000, 8000)),
    # Under Pillow's refusal limit (2 × 89.5 MP): decoded, zero-filled, ~0.3 GB for a moment.
    OddImage(
        "PNG claiming 10000×10000 with 10 rows of data",
        lambda: png_claiming(10000, 10000, 10),
        (10000, 10000),
    ),
    OddImage("1-bit PNG", lambda: encode(noise().convert("1"), "PNG"), (48, 64)),
    OddImage("CMYK JPEG", lambda: encode(noise().convert("CMYK"), "JPEG"), (48, 64)),
    OddImage("16-bit greyscale PNG", sixteen_bit_png, (48, 64)),
    OddImage("palette PNG with transparency", palette_with_transparency, (48, 64)),
    OddImage("greyscale + alpha PNG", lambda: encode(noise().convert("LA"), "PNG"), (48, 64)),
    OddImage("32-bit float TIFF", float_tiff, (48, 64)),
    OddImage("animated GIF (first frame)", animated_gif, (48, 64)),
]


@pytest.mark.parametrize("case", ODD_IMAGES, ids=[case.kind for case in ODD_IMAGES])
def test_odd_but_valid_images_are_served_with_finite_detections_inside_the_image(
    triton_server, reliability_figures, case
):
    answer, message, result = grpc_answer(
        triton_server.grpc_url, IMAGE_MODEL, [encoded_tensor(case.encode())]
    )
    outputs = outputs_of(result) if result is not None else {}
    non_finite = non_finite_values(outputs)
    healthy = still_serving(triton_server)
    reliability_figures.case(
        kind=case.kind,
        side="server",
        via=GRPC_IMAGE,
        answer="served" if answer == "OK" else answer,
        message=message or served_summary(outputs),
        healthy_after=healthy,
        non_finite=non_finite,
    )
    assert answer == "OK", message
    height, width = case.size
    assert outputs[IMAGE_SIZE_OUTPUT].tolist() == [[height, width]]
    assert non_finite == 0
    count = int(outputs[COUNT_OUTPUT][0, 0])
    assert 0 <= count <= 200
    boxes = outputs[BOXES_OUTPUT][0, :count]
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all()
    assert healthy


@pytest.mark.parametrize(
    "kind, pixels",
    [
        ("all-black image", lambda: np.zeros(IMAGE_SHAPE, np.uint8)),
        ("all-white image", lambda: np.full(IMAGE_SHAPE, 255, np.uint8)),
        (
            "one-pixel checkerboard",
            lambda: np.repeat(np.indices((1, 300, 300, 1)).sum(0) % 2 * 255, 3, -1).astype(np.uint8),
        ),
    ],
)
def test_extreme_pixels_give_finite_detections(triton_server, reliability_figures, kind, pixels):
    answer, message, result = grpc_answer(
        triton_server.grpc_url, DETECTOR, [tensor(IMAGES_INPUT, pixels(), IMAGES_DATATYPE)]
    )
    outputs = outputs_of(result) if result is not None else {}
    non_finite = non_finite_values(outputs)
    healthy = still_serving(triton_server)
    reliability_figures.case(
        kind=kind,
        side="server",
        via=GRPC,
        answer="served" if answer == "OK" else answer,
        message=message or served_summary(outputs),
        healthy_after=healthy,
        non_finite=non_finite,
    )
    assert answer == "OK", message
    assert non_finite == 0 and healthy


@pytest.mark.parametrize("poison", ["NaN scores", "+inf scores", "+inf boxes", "NaN boxes"])
def test_non_finite_network_outputs_never_reach_a_response(triton_server, reliability_figures, poison):
    """The postprocess is a public model too: network outputs with NaN/inf at some candidates
    still give detections from the others, and none from the poisoned ones."""
    rng = np.random.default_rng(7)
    corners = rng.random((1, CLASSES, CANDIDATES, 2), dtype=np.float32) * 0.8
    boxes = np.concatenate([corners, corners + 0.1], axis=-1).astype(np.float32)
    scores = -np.sort(-rng.random((1, CLASSES, CANDIDATES), dtype=np.float32) * 0.3, axis=-1)
    poisoned = slice(0, 100)
    value = math.nan if poison.startswith("NaN") else math.inf
    if poison.endswith("scores"):
        scores[:, :, poisoned] = value
    else:
        boxes[:, :, poisoned] = value
    answer, message, result = grpc_answer(
        triton_server.grpc_url,
        POSTPROCESS_MODEL,
        [tensor("boxes", boxes, "FP32"), tensor("scores", scores, "FP32")],
    )
    outputs = outputs_of(result) if result is not None else {}
    non_finite = non_finite_values(outputs)
    healthy = still_serving(triton_server)
    reliability_figures.case(
        kind=f"{poison} into the postprocess",
        side="server",
        via=f"gRPC {POSTPROCESS_MODEL}",
        answer="served" if answer == "OK" else answer,
        message=message or served_summary(outputs),
        healthy_after=healthy,
        non_finite=non_finite,
    )
    assert answer == "OK", message
    assert non_finite == 0
    assert int(outputs[COUNT_OUTPUT][0, 0]) > 0  # the clean anchors still count
    assert healthy


# --- client side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadImage:
    kind: str
    make: Callable[[Path], object]  # builds the input under a folder, returns what detect() gets
    message: str  # regex; the path, when there is one, must be in the message too


def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def _directory(folder: Path) -> Path:
    path = folder / "holiday.jpg"
    path.mkdir()
    return path


BAD_IMAGES = [
    BadImage(
        "file that does not exist",
        lambda folder: folder / "missing.jpg",
        r"cannot read the file \(No such file or directory\)",
    ),
    BadImage("directory named like a photo", _directory, r"cannot read the file \(Is a directory\)"),
    BadImage(
        "empty file", _file("empty.jpg", b""), r"(empty file|not an image file Pillow recognises \(0 bytes\))"
    ),
    BadImage(
        "text file named .jpg",
        _file("notes.jpg", b"shopping list: milk, eggs"),
        r"not an image file Pillow recognises",
    ),
    BadImage(
        "truncated JPEG file",
        lambda folder: _file("cut.jpg", jpeg_photo()[: len(jpeg_photo()) // 2])(folder),
        r"image file is truncated",
    ),
    BadImage(
        "decompression bomb file",
        lambda folder: _file("bomb.png", png_claiming(50000, 50000, 10))(folder),
        r"decompression bomb",
    ),
    BadImage(
        "float32 array",
        lambda folder: np.zeros((48, 64, 3), np.float32),
        r"expected a uint8 array, got float32",
    ),
    BadImage(
        "two-channel array",
        lambda folder: np.zeros((48, 64, 2), np.uint8),
        r"expected an array \[H, W\].*got \[48, 64, 2\]",
    ),
]


@pytest.fixture(scope="module")
def detectors(triton_server):
    """Client-side decode and server-side decode, each kept across cases: a bad image must not
    leave its detector unusable."""
    pair = {
        False: Detector(triton_server.grpc_url),
        True: Detector(triton_server.grpc_url, server_side_decode=True),
    }
    yield pair
    for detector in pair.values():
        detector.close()


@pytest.mark.parametrize("server_side_decode", [False, True], ids=["client-decode", "server-decode"])
@pytest.mark.parametrize("case", BAD_IMAGES, ids=[case.kind for case in BAD_IMAGES])
def test_unreadable_images_raise_an_invalid_image_error_naming_them(
    detectors, sample_paths, tmp_path, reliability_figures, case, server_side_decode
):
    detector = detectors[server_side_decode]
    image = case.make(tmp_path)
    with pytest.raises(InvalidImageError) as caught:
        detector.detect(image)
    error = caught.value
    expected_name = str(image) if isinstance(image, Path) else "image"
    served_after = len(detector.detect(sample_paths[0])) > 0  # the same detector carries on
    reliability_figures.case(
        kind=case.kind,
        side="client",
        via=f"Detector ({'server' if server_side_decode else 'client'}-side decode)",
        answer=type(error).__name__,
        message=str(error).replace(str(tmp_path), "…"),
        healthy_after=served_after,
    )
    assert error.name == expected_name and expected_name in str(error)
    assert re.search(case.message, str(error)), str(error)
    assert served_after


def test_out_of_range_request_parameters_are_an_invalid_input_error(
    triton_server, sample_paths, reliability_figures
):
    with Detector(triton_server.grpc_url, parameters={"nms_iou_threshold": 2.0}) as detector:
        with pytest.raises(
            InvalidInputError, match=r"nms_iou_threshold must be within \[0.0, 1.0\], got 2.0"
        ) as caught:
            detector.detect(sample_paths[0])
    healthy = still_serving(triton_server)
    reliability_figures.case(
        kind="nms_iou_threshold 2.0 in Detector(parameters=…)",
        side="client",
        via="Detector",
        answer=type(caught.value).__name__,
        message=str(caught.value),
        healthy_after=healthy,
    )
    assert healthy


def test_an_unsupported_image_type_is_a_type_error_naming_it(detectors, sample_paths, reliability_figures):
    with pytest.raises(
        TypeError, match="expected a path, bytes, a PIL image or a numpy array, got list"
    ) as caught:
        detectors[False].detect([1, 2, 3])
    served_after = len(detectors[False].detect(sample_paths[0])) > 0
    reliability_figures.case(
        kind="a list instead of an image",
        side="client",
        via="Detector",
        answer="TypeError",
        message=str(caught.value),
        healthy_after=served_after,
    )
    assert served_after
