"""Reliability and security of the served pipeline (issue 7), written as specifications.

1. Bad input, against the session's server (``triton_server``, shared with the other test
   files: nothing here may break it). Each malformed request is refused with an error naming the
   problem, each odd but valid image is served, no response ever holds NaN or inf, and after
   every case the server is live and a canary inference through all four Python models succeeds.
   The client refuses unreadable files with an InvalidImageError naming them.
2. Overload, 3. faults and 4. security run on private servers started side by side for this
   module (``dedicated``), because they overload, kill or lock them.

Checkpoint safety (``torch.load(weights_only=True)``, sha256 pinning) is specified in
tests/test_weights.py; the chart's non-root pod in tests/test_deploy.py.

Every test records its figures; at the end of the module they are written to
reports/reliability/figures.json (``$SSD300_RELIABILITY_FIGURES`` moves it), which
``python -m tools.reliability_report`` renders as RELIABILITY.md.
"""

from __future__ import annotations

import ast
import datetime
import http.client
import io
import json
import math
import os
import re
import secrets
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shared_memory
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from ssd300_client import (
    AccessDeniedError,
    Detector,
    InvalidImageError,
    InvalidInputError,
    ServerBusyError,
    ServerUnavailableError,
)
from ssd300_client.transport import translate_error
from ssd300_serving import health
from ssd300_serving.embedded_server import EXIT_TIMEOUT_S, EmbeddedServer, free_port
from tools.reliability_report import DEFAULT_FIGURES, FIGURES_ENV, figures_path

from .test_client_detector import assert_same_detections

pytestmark = [pytest.mark.server, pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")]

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
DETECTOR, IMAGE_MODEL, POSTPROCESS = "ssd300_detector", "ssd300_image", "ssd300_postprocess"
ALL_MODELS = (
    "ssd300",
    POSTPROCESS,
    DETECTOR,
    IMAGE_MODEL,
    "ssd300_image_preprocess",
    "ssd300_image_postprocess",
)
IMAGE_SHAPE = [1, 300, 300, 3]
IMAGE_BYTES = 300 * 300 * 3
ANCHORS, CLASSES = 8732, 80
START_TIMEOUT_S = 240  # three servers starting at once on two shared cores

# Overload: offered load, and how long. At least OVERLOAD_MIN_REQUESTS go out so that the queue
# (32 on the CPU config) plus the batch being computed overflow even on a slow run.
OVERLOAD_FACTOR = 4
OVERLOAD_MIN_S, OVERLOAD_MAX_S = 10.0, 30.0
OVERLOAD_MIN_REQUESTS = 120
# Capacity = 1 / the fastest of a few sequential requests: on a shared machine noise only ever
# slows a request down, so the fastest is the best estimate of what the server can do.
CAPACITY_SAMPLES = 5
# Every request must have its answer this long after the last one was sent: it may wait the
# queue timeout, then run in a batch as large as the queue, at up to twice the sequential time
# per image (large batches run slower per image on two cores), plus some slack.
DRAIN_SLACK_S = 10.0
# RSS may grow by this much: activations of one batch of at most 64 images (the batcher fills
# batches from the queue; batch 32 measured +1.4 GiB on this machine), never with time or load.
RSS_HEADROOM_BYTES = 4 * 2**30
RECOVERY_DEADLINE_S = 30.0
# Failover: requests through Detector([a, b]); server a is killed after KILL_AFTER answers.
FAILOVER_REQUESTS, FAILOVER_THREADS, KILL_AFTER = 24, 4, 6
SIGTERM_IN_FLIGHT = 8


# --- figures --------------------------------------------------------------------------------


class Figures:
    """What the tests measured, written as JSON for ``python -m tools.reliability_report``."""

    def __init__(self) -> None:
        self.data: dict = {"meta": {}, "bad_input": {"cases": []}, "notes": []}
        self._lock = threading.Lock()

    def case(
        self,
        *,
        kind: str,
        side: str,
        via: str,
        answer: str,
        message: str = "",
        healthy_after: bool,
        non_finite: int = 0,
    ) -> None:
        with self._lock:
            self.data["bad_input"]["cases"].append(
                {
                    "kind": kind,
                    "side": side,
                    "via": via,
                    "answer": answer,
                    "message": message,
                    "healthy_after": healthy_after,
                    "non_finite": non_finite,
                }
            )

    def section(self, name: str, **values) -> None:
        with self._lock:
            self.data.setdefault(name, {}).update(values)

    def restriction(self, api: str, answers: list[str]) -> None:
        with self._lock:
            self.data.setdefault("security", {}).setdefault("restricted", {})[api] = answers

    def note(self, text: str) -> None:
        with self._lock:
            if text not in self.data["notes"]:
                self.data["notes"].append(text)

    def server_version(self, http_url: str) -> None:
        if "tritonserver" not in self.data["meta"]:
            status, body = http_answer_raw(http_url, "GET", "/v2")
            if status == "200":
                self.data["meta"]["tritonserver"] = json.loads(body).get("version", "?")

    def write(self, path: Path) -> None:
        self.data["meta"].update(
            recorded_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            commit=_commit(),
            cpus=os.cpu_count(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=2) + "\n")


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (
        head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
        if head.returncode == 0
        else "unknown"
    )


@pytest.fixture(scope="module")
def figures():
    record = Figures()
    yield record
    record.write(figures_path(os.environ.get(FIGURES_ENV) or REPO / DEFAULT_FIGURES))


# --- talking to a server --------------------------------------------------------------------


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def encoded_tensor(data: bytes) -> grpcclient.InferInput:
    return tensor("encoded_image", np.array([[data]], dtype=np.object_), "BYTES")


def grpc_answer(url: str, model: str, inputs: list, **options) -> tuple[str, str, object]:
    """("OK", "", result), or the gRPC status (``INVALID_ARGUMENT``, …) and the server's message."""
    with grpcclient.InferenceServerClient(url) as client:
        try:
            return "OK", "", client.infer(model, inputs, client_timeout=120, **options)
        except InferenceServerException as error:
            return (error.status() or "").replace("StatusCode.", ""), error.message() or "", None


def http_answer_raw(
    http_url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None
) -> tuple[str, bytes]:
    connection = http.client.HTTPConnection(http_url, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return str(response.status), response.read()
    finally:
        connection.close()


def http_answer(
    http_url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None
) -> tuple[str, str]:
    """("HTTP 400", the server's error message), as tritonserver's JSON error body says it."""
    status, payload = http_answer_raw(http_url, method, path, body, headers)
    try:
        message = json.loads(payload).get("error", "")
    except (ValueError, AttributeError):
        message = payload.decode(errors="replace")
    return f"HTTP {status}", message


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


def outputs_of(result) -> dict[str, np.ndarray]:
    return {output.name: result.as_numpy(output.name) for output in result.get_response().outputs}


def non_finite_values(outputs: dict[str, np.ndarray]) -> int:
    return sum(int((~np.isfinite(a)).sum()) for a in outputs.values() if np.issubdtype(a.dtype, np.floating))


def brief(message: str, length: int = 120) -> str:
    """A server message for the report, without tritonserver's request-id prefix."""
    return re.sub(r"\[request id: [^\]]*\]\s*", "", message)[:length]


def served_summary(outputs: dict[str, np.ndarray]) -> str:
    """What a successful answer held, for the report."""
    summary = f"{int(outputs['num_detections'][0, 0])} detections"
    if "image_size" in outputs:
        height, width = outputs["image_size"][0]
        summary += f", image {height}×{width}"
    return summary + f", {non_finite_values(outputs)} non-finite values"


def still_serving(server) -> bool:
    """Live, and a canary inference through all four Python models succeeds (model readiness
    alone misses a dead stub)."""
    return http_answer_raw(server.http_url, "GET", "/v2/health/live")[0] == "200" and health.check(
        server.http_url, timeout_s=60
    ) == (True, "ok")


# --- images -----------------------------------------------------------------------------------


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def noise(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def png_claiming(width: int, height: int, rows: int) -> bytes:
    """An 8-bit greyscale PNG whose header claims width × height but whose data holds ``rows`` rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width + 1) * rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@cache
def jpeg_photo() -> bytes:
    return encode(noise(), "JPEG", quality=90)


@cache
def png_photo() -> bytes:
    return encode(noise(), "PNG")


@cache
def huge_jpeg() -> bytes:
    """8000 × 6000 (48 megapixels), smooth so the file stays ~1 MB."""
    ramp = Image.linear_gradient("L").resize((8000, 6000))
    return encode(
        Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp)), "JPEG", quality=80
    )


def animated_gif() -> bytes:
    frames = [noise(seed=seed).convert("P") for seed in range(2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def palette_with_transparency() -> bytes:
    return encode(noise().convert("P"), "PNG", transparency=0)


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21), "PNG")


def float_tiff() -> bytes:
    pixels = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    return encode(Image.fromarray(pixels, "F"), "TIFF")


# --- 1. bad input, server side --------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    kind: str  # what is wrong, as the report lists it
    via: str  # protocol and model
    send: Callable[[EmbeddedServer], tuple[str, str]]  # → (answer, message)
    answer: str  # INVALID_ARGUMENT, NOT_FOUND, HTTP 400, …
    message: str  # regex the server's message must match


def grpc_pixels(shape, dtype=np.uint8, datatype="UINT8", model=DETECTOR, name="images", **options):
    def send(server):
        return grpc_answer(
            server.grpc_url, model, [tensor(name, np.zeros(shape, dtype), datatype)], **options
        )[:2]

    return send


def grpc_inputs(*inputs: tuple[str, list], model=DETECTOR):
    def send(server):
        tensors = [tensor(name, np.zeros(shape, np.uint8), "UINT8") for name, shape in inputs]
        return grpc_answer(server.grpc_url, model, tensors)[:2]

    return send


def grpc_encoded(make: Callable[[], bytes]):
    return lambda server: grpc_answer(server.grpc_url, IMAGE_MODEL, [encoded_tensor(make())])[:2]


def grpc_unregistered_region(server):
    item = grpcclient.InferInput("images", IMAGE_SHAPE, "UINT8")
    item.set_shared_memory("nowhere", IMAGE_BYTES)
    return grpc_answer(server.grpc_url, DETECTOR, [item])[:2]


def http_post(model: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    return lambda server: http_answer(server.http_url, method, f"/v2/models/{model}/infer", body, headers)


def http_json(model: str, request: dict):
    return http_post(model, json.dumps(request).encode(), {"Content-Type": "application/json"})


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
    return binary_input("images", IMAGE_SHAPE, "UINT8", size)


def bytes_header(size: int) -> dict:
    return binary_input("encoded_image", [1, 1], "BYTES", size)


def bytes_element(claimed_length: int, data: bytes) -> bytes:
    return struct.pack("<I", claimed_length) + data


def json_pixels(**overrides) -> dict:
    return {
        "inputs": [{"name": "images", "shape": IMAGE_SHAPE, "datatype": "UINT8", "data": [0], **overrides}]
    }


GRPC = f"gRPC {DETECTOR}"
GRPC_IMAGE = f"gRPC {IMAGE_MODEL}"
HTTP = f"HTTP {DETECTOR}"
HTTP_IMAGE = f"HTTP {IMAGE_MODEL}"
# tritonserver 2.51 answers a request body its JSON parser rejects with 500, not 400; the message
# still names the problem. Asserted as it is, so that an upgrade that fixes it is noticed.
PARSER_500 = "HTTP 500"

REFUSALS = [
    # Tensors that do not fit the model.
    Refusal(
        "wrong dtype (FP32 pixels)",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, np.float32, "FP32"),
        "INVALID_ARGUMENT",
        r"data-type is 'FP32', but model 'ssd300_detector' expects 'UINT8'",
    ),
    Refusal(
        "wrong shape (224×224)",
        GRPC,
        grpc_pixels([1, 224, 224, 3]),
        "INVALID_ARGUMENT",
        r"unexpected shape for input 'images'.*got \[1,224,224,3\]",
    ),
    Refusal(
        "missing channel axis",
        GRPC,
        grpc_pixels([1, 300, 300]),
        "INVALID_ARGUMENT",
        r"unexpected shape for input 'images'",
    ),
    Refusal(
        "batch over the maximum (65)",
        GRPC,
        grpc_pixels([65, 300, 300, 3]),
        "INVALID_ARGUMENT",
        r"batch-size must be <= 64 for 'ssd300_detector'",
    ),
    Refusal(
        "empty batch (0 images)",
        GRPC,
        grpc_pixels([0, 300, 300, 3]),
        "INVALID_ARGUMENT",
        r"input byte size mismatch for input 'images'.*Expected 270000, got 0",
    ),
    Refusal(
        "zero-size image (1×0×300×3)",
        GRPC,
        grpc_pixels([1, 0, 300, 3]),
        "INVALID_ARGUMENT",
        r"unexpected shape for input 'images'.*got \[1,0,300,3\]",
    ),
    Refusal(
        "no inputs",
        GRPC,
        grpc_inputs(),
        "INVALID_ARGUMENT",
        r"expected 1 inputs but got 0 inputs.*missing required input\(s\) \['images'\]",
    ),
    Refusal(
        "an extra input",
        GRPC,
        grpc_inputs(("images", IMAGE_SHAPE), ("masks", IMAGE_SHAPE)),
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
        "unknown model",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, model="no_such_model"),
        "NOT_FOUND",
        r"unknown model: 'no_such_model' is not found",
    ),
    Refusal(
        "unknown model version",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, model_version="7"),
        "NOT_FOUND",
        r"'ssd300_detector' version 7 is not found",
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
        grpc_pixels([1, 1], np.int64, "INT64", IMAGE_MODEL, name="encoded_image"),
        "INVALID_ARGUMENT",
        r"data-type is 'INT64', but model 'ssd300_image' expects 'BYTES'",
    ),
    # Request parameters: the postprocess validates its overrides (NaN compares false: refused too).
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
        r"candidates_per_class must be within \[1, 8732\], got 0",
    ),
    Refusal(
        "boolean score_threshold",
        GRPC,
        grpc_pixels(IMAGE_SHAPE, parameters={"score_threshold": True}),
        "INVALID_ARGUMENT",
        r"score_threshold must be a number, got True",
    ),
    # Encoded images that are not images.
    Refusal(
        "empty encoded image",
        GRPC_IMAGE,
        grpc_encoded(lambda: b""),
        "INVALID_ARGUMENT",
        r"encoded_image\[0\] is empty",
    ),
    Refusal(
        "text instead of an image",
        GRPC_IMAGE,
        grpc_encoded(lambda: b"hello, this is not a photo"),
        "INVALID_ARGUMENT",
        r"encoded_image\[0\]: not an image file Pillow recognises \(26 bytes\)",
    ),
    Refusal(
        "truncated JPEG",
        GRPC_IMAGE,
        grpc_encoded(lambda: jpeg_photo()[: len(jpeg_photo()) // 2]),
        "INVALID_ARGUMENT",
        r"encoded_image\[0\]: not a decodable image \(OSError: image file is truncated",
    ),
    Refusal(
        "truncated PNG",
        GRPC_IMAGE,
        grpc_encoded(lambda: png_photo()[: len(png_photo()) // 2]),
        "INVALID_ARGUMENT",
        r"encoded_image\[0\]: not a decodable image \(OSError: image file is truncated",
    ),
    Refusal(
        "JPEG header only (20 bytes)",
        GRPC_IMAGE,
        grpc_encoded(lambda: jpeg_photo()[:20]),
        "INVALID_ARGUMENT",
        r"encoded_image\[0\]: not an image file Pillow recognises \(20 bytes\)",
    ),
    Refusal(
        "decompression bomb: PNG claiming 50000×50000",
        GRPC_IMAGE,
        grpc_encoded(lambda: png_claiming(50000, 50000, 10)),
        "INVALID_ARGUMENT",
        r"encoded_image\[0\]: refused as a decompression bomb "
        r"\(Image size \(2500000000 pixels\) exceeds limit",
    ),
    Refusal(
        "base64 of something that is no image (JSON)",
        HTTP_IMAGE,
        http_json(
            IMAGE_MODEL,
            {"inputs": [{"name": "encoded_image", "shape": [1, 1], "datatype": "BYTES", "data": ["QUJD"]}]},
        ),
        "HTTP 400",
        r"encoded_image\[0\]: (neither an image file nor base64 of one|not an image file)",
    ),
    # HTTP bodies and headers that lie.
    Refusal(
        "malformed JSON",
        HTTP,
        http_post(DETECTOR, b"{not json", {"Content-Type": "application/json"}),
        PARSER_500,
        r"failed to parse the request JSON buffer",
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
        r"invalid datatype for input images",
    ),
    Refusal(
        "Inference-Header-Content-Length beyond the body",
        HTTP,
        http_binary(DETECTOR, images_header(), bytes(IMAGE_BYTES), header_length=10**6),
        "HTTP 400",
        r"inference header size should be in range \(0, \d+\), got: 1000000",
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
        r"unexpected size for input 'images', expecting 269000 additional bytes",
    ),
    Refusal(
        "BYTES length prefix beyond the data",
        HTTP_IMAGE,
        http_binary(IMAGE_MODEL, bytes_header(4 + 100), bytes_element(1100, bytes(100))),
        "HTTP 400",
        r"incomplete string data for inference input 'encoded_image', "
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
        r"unexpected number of string elements 2 for inference input 'encoded_image'",
    ),
    Refusal(
        "BYTES length prefix cut short (3 of 4 bytes)",
        HTTP_IMAGE,
        http_binary(IMAGE_MODEL, bytes_header(3), b"\x10\x00\x00"),
        "HTTP 400",
        r"incomplete string length indicator for inference input 'encoded_image'",
    ),
    Refusal(
        "GET on the infer endpoint",
        HTTP,
        http_post(DETECTOR, b"", method="GET"),
        "HTTP 405",
        r"Method Not Allowed",
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[case.kind for case in REFUSALS])
def test_bad_requests_are_refused_naming_the_problem_and_the_server_carries_on(triton_server, figures, case):
    figures.server_version(triton_server.http_url)
    answer, message = case.send(triton_server)
    healthy = still_serving(triton_server)
    figures.case(
        kind=case.kind, side="server", via=case.via, answer=answer, message=message, healthy_after=healthy
    )
    if answer == PARSER_500:
        figures.note(
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
    triton_server, figures, case
):
    answer, message, result = grpc_answer(
        triton_server.grpc_url, IMAGE_MODEL, [encoded_tensor(case.encode())]
    )
    outputs = outputs_of(result) if result is not None else {}
    non_finite = non_finite_values(outputs)
    healthy = still_serving(triton_server)
    figures.case(
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
    assert outputs["image_size"].tolist() == [[height, width]]
    assert non_finite == 0
    count = int(outputs["num_detections"][0, 0])
    assert 0 <= count <= 200
    boxes = outputs["detection_boxes"][0, :count]
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
def test_extreme_pixels_give_finite_detections(triton_server, figures, kind, pixels):
    answer, message, result = grpc_answer(
        triton_server.grpc_url, DETECTOR, [tensor("images", pixels(), "UINT8")]
    )
    outputs = outputs_of(result) if result is not None else {}
    non_finite = non_finite_values(outputs)
    healthy = still_serving(triton_server)
    figures.case(
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
def test_non_finite_network_outputs_never_reach_a_response(triton_server, figures, poison):
    """The postprocess is a public model too: raw network outputs with NaN/inf at some anchors
    still give detections from the others, and none from the poisoned ones. (Fewer poisoned
    anchors than the 200 candidates kept per class: torch.topk ranks NaN first.)"""
    rng = np.random.default_rng(7)
    corners = rng.random((1, ANCHORS, 2), dtype=np.float32) * 0.8
    boxes = np.concatenate([corners, corners + 0.1], axis=-1).astype(np.float32)
    scores = (rng.random((1, CLASSES, ANCHORS), dtype=np.float32) * 0.3).astype(np.float32)
    poisoned = slice(0, 100)
    value = math.nan if poison.startswith("NaN") else math.inf
    if poison.endswith("scores"):
        scores[:, :, poisoned] = value
    else:
        boxes[:, poisoned] = value
    answer, message, result = grpc_answer(
        triton_server.grpc_url,
        POSTPROCESS,
        [tensor("boxes", boxes, "FP32"), tensor("scores", scores, "FP32")],
    )
    outputs = outputs_of(result) if result is not None else {}
    non_finite = non_finite_values(outputs)
    healthy = still_serving(triton_server)
    figures.case(
        kind=f"{poison} into the postprocess",
        side="server",
        via=f"gRPC {POSTPROCESS}",
        answer="served" if answer == "OK" else answer,
        message=message or served_summary(outputs),
        healthy_after=healthy,
        non_finite=non_finite,
    )
    assert answer == "OK", message
    assert non_finite == 0
    assert int(outputs["num_detections"][0, 0]) > 0  # the clean anchors still count
    assert healthy


# --- 1. bad input, client side ----------------------------------------------------------------


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
    detectors, sample_paths, tmp_path, figures, case, server_side_decode
):
    detector = detectors[server_side_decode]
    image = case.make(tmp_path)
    with pytest.raises(InvalidImageError) as caught:
        detector.detect(image)
    error = caught.value
    expected_name = str(image) if isinstance(image, Path) else "image"
    served_after = len(detector.detect(sample_paths[0])) > 0  # the same detector carries on
    figures.case(
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


def test_out_of_range_request_parameters_are_an_invalid_input_error(triton_server, sample_paths, figures):
    with Detector(triton_server.grpc_url, parameters={"nms_iou_threshold": 2.0}) as detector:
        with pytest.raises(
            InvalidInputError, match=r"nms_iou_threshold must be within \[0.0, 1.0\], got 2.0"
        ) as caught:
            detector.detect(sample_paths[0])
    healthy = still_serving(triton_server)
    figures.case(
        kind="nms_iou_threshold 2.0 in Detector(parameters=…)",
        side="client",
        via="Detector",
        answer=type(caught.value).__name__,
        message=str(caught.value),
        healthy_after=healthy,
    )
    assert healthy


def test_an_unsupported_image_type_is_a_type_error_naming_it(detectors, sample_paths, figures):
    with pytest.raises(
        TypeError, match="expected a path, bytes, a PIL image or a numpy array, got list"
    ) as caught:
        detectors[False].detect([1, 2, 3])
    served_after = len(detectors[False].detect(sample_paths[0])) > 0
    figures.case(
        kind="a list instead of an image",
        side="client",
        via="Detector",
        answer="TypeError",
        message=str(caught.value),
        healthy_after=served_after,
    )
    assert served_after


# --- 5. the report ----------------------------------------------------------------------------


def test_the_report_renders_recorded_figures_and_marks_missing_ones(tmp_path, capsys):
    from tools import reliability_report

    overload = {
        "factor": 4,
        "capacity_per_s": 5.0,
        "baseline_latency_s": 0.2,
        "rate_per_s": 20.0,
        "duration_s": 10.0,
        "sent": 200,
        "succeeded": 80,
        "refused": 119,
        "other_errors": 0,
        "slowest_success_s": 15.0,
        "slowest_refusal_s": 0.01,
        "drain_s": 14.0,
        "deadline_s": 60.0,
        "rss_idle_bytes": 2**30,
        "rss_peak_bytes": 2 * 2**30,
        "rss_bound_bytes": 5 * 2**30,
        "canary_during": "healthy: ok",
        "canary_latency_s": 3.0,
        "recovery_s": 15.0,
        "latency_after_s": 0.2,
    }
    case = {
        "kind": "truncated PNG",
        "side": "server",
        "via": "gRPC ssd300_image",
        "answer": "INVALID_ARGUMENT",
        "message": "[request id: <id_unknown>] encoded_image[0]: not a decodable image",
        "healthy_after": True,
    }
    source = tmp_path / "figures.json"
    source.write_text(
        json.dumps({"meta": {"commit": "abc1234"}, "overload": overload, "bad_input": {"cases": [case]}})
    )
    assert reliability_report.main(["--figures", str(source)]) == 0
    report = (tmp_path / reliability_report.REPORT_NAME).read_text()
    assert report == capsys.readouterr().out  # printed as written
    assert "| Overload | lost (no answer by the deadline) | 1 |" in report  # 200 − 80 − 119 − 0
    assert "| Failover (kill -9) | requests | not measured |" in report
    assert (
        "| truncated PNG | gRPC ssd300_image | INVALID_ARGUMENT | encoded_image[0]: not a decodable image |"
        in report
    )


# --- private servers for the destructive tests ------------------------------------------------


def restriction_flags(key: str, folder: Path) -> list[str]:
    """The flags deploy/entrypoint.sh appends for ``key``, read by running it with a stand-in
    tritonserver that prints its arguments: the production flags, not a copy of them."""
    record, stand_in = folder / "arguments.txt", folder / "bin" / "tritonserver"
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    stand_in.chmod(0o755)
    environment = {"PATH": f"{stand_in.parent}:{os.environ['PATH']}", "TRITON_ADMIN_KEY": key}
    subprocess.run(["sh", str(ENTRYPOINT)], env=environment, check=True, capture_output=True, timeout=30)
    flags = record.read_text().split()
    assert [flag.split("=", 1)[0] for flag in flags] == [
        "--http-restricted-api",
        "--grpc-restricted-protocol",
    ]
    return flags


class Launcher:
    """``python -m ssd300_serving.embedded_server`` (what ``make serve`` runs) as a child process."""

    def __init__(self, repository: Path, log_path: Path) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log_path = log_path
        with log_path.open("wb") as log:  # a file, not a pipe: nobody has to keep reading it
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ssd300_serving.embedded_server",
                    "--repository",
                    str(repository),
                    "--http-port",
                    str(self.http_port),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def shm_prefix(self) -> str:
        # The launcher's EmbeddedServer names its Python-backend regions after its own pid.
        return f"ssd300_{self.process.pid}_{self.http_port}_"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while "ssd300 ready" not in self.log():
            assert self.process.poll() is None, (
                f"the launcher exited with {self.process.returncode}:\n{self.log()[-3000:]}"
            )
            assert time.monotonic() < deadline, (
                f"the launcher was not ready after {timeout_s} s:\n{self.log()[-3000:]}"
            )
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=2 * EXIT_TIMEOUT_S + 20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def shm_prefix(server: EmbeddedServer) -> str:
    """Prefix of the Python backend's /dev/shm regions (EmbeddedServer.command names them)."""
    return f"ssd300_{os.getpid()}_{server.http_port}_"


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (a server's private workdir or shm prefix)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def stub_pid(server: EmbeddedServer, model: str) -> int:
    """The Python-backend stub serving ``model`` for this server only: its command line names the
    server's private workdir (other people's servers run on this machine too)."""
    script = f"{server._workdir}/model_repository/{model}/1/model.py".encode()
    for pid in processes_mentioning(str(server._workdir)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"triton_python_backend_stub") and script in argv[1:2]:
            return pid
    raise AssertionError(f"no stub for {model} under {server._workdir}")


def kill_hard(server: EmbeddedServer) -> None:
    """SIGKILL tritonserver and its stubs (they share its process group) as a crashed container
    would die, then remove what only a clean exit removes: shared-memory files and the workdir."""
    if server.process is None or server._workdir is None:  # never started, or already cleaned up
        return
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    workdir = str(server._workdir)
    deadline = time.monotonic() + 10
    while processes_mentioning(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    for leftover in Path("/dev/shm").glob(f"{shm_prefix(server)}*"):
        leftover.unlink(missing_ok=True)
    server.stop()  # the process is gone: this only removes the workdir


def process_tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (tritonserver and its stubs), bytes."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total


@dataclass
class Dedicated:
    victim: EmbeddedServer  # overloaded, then killed -9 under a failing-over client
    locked: EmbeddedServer  # production admin-key flags; failover survivor; then a stub is killed
    launcher: Launcher  # the `make serve` launcher, stopped with SIGTERM under load
    admin_key: str


@pytest.fixture(scope="module")
def dedicated(built_repository, tmp_path_factory, figures):
    """Three private servers on free ports, started side by side (each takes 15–40 s here)."""
    folder = tmp_path_factory.mktemp("dedicated")
    key = secrets.token_urlsafe(24)

    def server(name: str, *extra: str) -> EmbeddedServer:
        return EmbeddedServer(
            built_repository,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            log_path=folder / f"{name}.log",
            extra_args=extra,
        )

    victim, locked = server("victim"), server("locked", *restriction_flags(key, folder / "entrypoint"))
    launcher = Launcher(built_repository, folder / "launcher.log")
    failures: list[BaseException] = []

    def start(embedded: EmbeddedServer) -> None:
        try:
            embedded.start(timeout_s=START_TIMEOUT_S)
        except BaseException as error:  # reported below, from the test's thread
            failures.append(error)

    threads = [threading.Thread(target=start, args=(embedded,)) for embedded in (victim, locked)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not failures, failures
        launcher.wait_until_ready(START_TIMEOUT_S)
        figures.server_version(victim.http_url)
        yield Dedicated(victim, locked, launcher, key)
    finally:
        launcher.stop()
        for embedded in (victim, locked):
            kill_hard(embedded)  # disposable; SIGTERM is specified on the launcher


def network_queue_policy(repository: Path) -> tuple[int, float]:
    """(max queue size, queue timeout in s) of ssd300's CPU config: the numbers overload meets."""
    path = repository / "ssd300" / "configs" / "cpu.pbtxt"
    policy = text_format.Parse(
        path.read_text(), model_config_pb2.ModelConfig()
    ).dynamic_batching.default_queue_policy
    return policy.max_queue_size, policy.default_timeout_microseconds / 1e6


def pixels_request() -> list:
    image = np.random.default_rng(3).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
    return [tensor("images", image, "UINT8")]


def timed_inference(client: grpcclient.InferenceServerClient, timeout_s: float = 120) -> float:
    started = time.monotonic()
    client.infer(DETECTOR, pixels_request(), client_timeout=timeout_s)
    return time.monotonic() - started


def batch_sizes(client: grpcclient.InferenceServerClient, model: str) -> dict[int, int]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def successes(url: str, model: str) -> int:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats["inference_stats"].get("success", {}).get("count", 0))


# --- 2. overload ------------------------------------------------------------------------------


def test_the_client_reads_a_queue_refusal_as_busy_and_a_stopping_server_as_unavailable():
    # The messages tritonserver 2.51 sends (observed below and in the SIGTERM test).
    unavailable = "StatusCode.UNAVAILABLE"
    full = InferenceServerException(
        "in ensemble 'ssd300_detector', Exceeds maximum queue size", status=unavailable
    )
    late = InferenceServerException(
        "in ensemble 'ssd300_detector', Request timeout expired", status=unavailable
    )
    stopping = InferenceServerException(
        "Server is stopping, scheduler for model has stopped", status=unavailable
    )
    for error in (full, late):
        assert isinstance(translate_error(error, where="h:1 (grpc)", model=DETECTOR), ServerBusyError)
    translated = translate_error(stopping, where="h:1 (grpc)", model=DETECTOR)
    assert type(translated) is ServerUnavailableError  # an outage: fail over, not "busy"


def test_the_canary_counts_a_refusing_busy_server_as_healthy(monkeypatch):
    # A liveness probe must never restart a server for being busy (HTTP 503 from the queue policy).
    def busy(request, timeout):
        body = io.BytesIO(b'{"error":"Exceeds maximum queue size"}')
        raise health.urllib.error.HTTPError(request.full_url, 503, "Service Unavailable", {}, body)

    monkeypatch.setattr(health.urllib.request, "urlopen", busy)
    healthy, reason = health.check("127.0.0.1:1")
    assert healthy and reason.startswith("busy")


def test_overload_ends_every_request_in_an_answer_and_the_server_recovers(dedicated, figures):
    """~4× capacity, open loop (requests leave at a fixed rate whatever the answers), through the
    ensemble: each request succeeds or is refused with UNAVAILABLE, none is lost, memory stays
    bounded, and afterwards the server answers at its usual speed."""
    server = dedicated.victim
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        timed_inference(client)  # warm-up
        baseline = min(timed_inference(client) for _ in range(CAPACITY_SAMPLES))
        capacity = 1 / baseline
        rate = OVERLOAD_FACTOR * capacity
        duration = min(max(OVERLOAD_MIN_S, OVERLOAD_MIN_REQUESTS / rate), OVERLOAD_MAX_S)
        count = math.ceil(rate * duration)
        queue_size, queue_timeout_s = network_queue_policy(server.repository)
        drain_deadline_s = queue_timeout_s + 2 * queue_size * baseline + DRAIN_SLACK_S
        batches_before = batch_sizes(client, "ssd300")
        rss_idle = process_tree_rss(server.process.pid)

        rss_samples, stop_sampling = [rss_idle], threading.Event()

        def sample_rss():
            while not stop_sampling.wait(0.25):
                rss_samples.append(process_tree_rss(server.process.pid))

        canary: dict = {}

        def check_canary():  # halfway through, while the queue is full
            time.sleep(duration / 2)
            started = time.monotonic()
            canary["answer"] = health.check(server.http_url, timeout_s=60)
            canary["latency_s"] = time.monotonic() - started

        outcomes: dict[int, tuple[str, float, str]] = {}
        sent_at: dict[int, float] = {}
        lock = threading.Lock()

        def on_answer(index: int):
            def callback(result, error):  # tritonclient passes both by keyword
                latency = time.monotonic() - sent_at[index]
                if error is None:
                    kind = "ok" if non_finite_values(outputs_of(result)) == 0 else "non-finite"
                    detail = ""
                else:
                    translated = translate_error(error, where=server.grpc_url, model=DETECTOR)
                    kind, detail = (
                        ("busy" if isinstance(translated, ServerBusyError) else "other"),
                        str(error),
                    )
                with lock:
                    outcomes[index] = (kind, latency, detail)

            return callback

        helpers = [threading.Thread(target=sample_rss), threading.Thread(target=check_canary)]
        for helper in helpers:
            helper.start()
        started = time.monotonic()
        for index in range(count):
            pause = started + index / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent_at[index] = time.monotonic()
            client.async_infer(
                DETECTOR, pixels_request(), on_answer(index), client_timeout=drain_deadline_s + 60
            )
        last_sent = time.monotonic()
        while len(outcomes) < count and time.monotonic() < last_sent + drain_deadline_s:
            time.sleep(0.1)
        drained = time.monotonic()
        stop_sampling.set()
        for helper in helpers:
            helper.join()

        # Recovery: the first single request answered about as fast as before the overload.
        fast_enough = max(3 * baseline, baseline + 1.0)
        recovery_s = None
        while time.monotonic() < drained + RECOVERY_DEADLINE_S:
            if timed_inference(client, timeout_s=RECOVERY_DEADLINE_S) <= fast_enough:
                recovery_s = time.monotonic() - last_sent
                break
            time.sleep(0.5)
        latency_after = statistics.median(timed_inference(client) for _ in range(3))
        batches = {size: n - batches_before.get(size, 0) for size, n in batch_sizes(client, "ssd300").items()}

    kinds = [kind for kind, _, _ in outcomes.values()]
    canary_answer = canary.get("answer", (False, "no answer"))
    latencies = {
        kind: [latency for k, latency, _ in outcomes.values() if k == kind] for kind in ("ok", "busy")
    }
    figures.section(
        "overload",
        factor=OVERLOAD_FACTOR,
        capacity_per_s=capacity,
        baseline_latency_s=baseline,
        rate_per_s=rate,
        duration_s=duration,
        sent=count,
        succeeded=kinds.count("ok"),
        refused=kinds.count("busy"),
        other_errors=len(kinds) - kinds.count("ok") - kinds.count("busy"),
        slowest_success_s=max(latencies["ok"], default=0.0),
        slowest_refusal_s=max(latencies["busy"], default=0.0),
        drain_s=drained - last_sent,
        deadline_s=drain_deadline_s,
        rss_idle_bytes=rss_idle,
        rss_peak_bytes=max(rss_samples),
        rss_bound_bytes=rss_idle + RSS_HEADROOM_BYTES,
        canary_during=("healthy: " if canary_answer[0] else "UNHEALTHY: ") + brief(canary_answer[1]),
        canary_latency_s=canary.get("latency_s", 0.0),
        recovery_s=recovery_s if recovery_s is not None else float("nan"),
        latency_after_s=latency_after,
        largest_batch=max((size for size, n in batches.items() if n > 0), default=0),
    )
    largest = figures.data["overload"]["largest_batch"]
    figures.note(
        f"Under overload the dynamic batcher ran ssd300 batches of up to {largest} images (preferred size 8, "
        "max_batch_size 64): latency and memory under overload are set by max_batch_size, "
        "not the preferred size."
    )

    assert len(outcomes) == count, (
        f"{count - len(outcomes)} requests got no answer within {drain_deadline_s:.0f} s"
    )
    unexpected = [detail or kind for kind, _, detail in outcomes.values() if kind not in ("ok", "busy")]
    assert unexpected == [], unexpected[:5]
    assert kinds.count("busy") > 0 and kinds.count("ok") > 0  # it was overloaded, and it kept working
    assert max(rss_samples) <= rss_idle + RSS_HEADROOM_BYTES
    assert canary_answer[0], canary_answer  # busy is healthy: no restart for load
    assert recovery_s is not None, (
        f"no request within {fast_enough:.2f} s in the {RECOVERY_DEADLINE_S} s after the overload"
    )
    assert latency_after <= fast_enough
    assert still_serving(server)


# --- 4. security (before the faults: the locked server is their survivor) ---------------------


def admin_headers(protocol: str, key: str) -> dict[str, str]:
    # tritonserver 2.51 expects the gRPC metadata key with a fixed prefix.
    return {"admin-key": key} if protocol == "http" else {"triton-grpc-protocol-admin-key": key}


def admin_call(
    server: EmbeddedServer, protocol: str, action: str, headers: dict | None, **arguments
) -> tuple[str, str]:
    """One admin API call → ("OK" / "HTTP 200", "") or the refusal and its message."""
    if protocol == "http":
        paths = {
            "unload": ("POST", f"/v2/repository/models/{arguments.get('model')}/unload", b"{}"),
            "load": ("POST", f"/v2/repository/models/{arguments.get('model')}/load", b"{}"),
            "register": (
                "POST",
                f"/v2/systemsharedmemory/region/{arguments.get('name')}/register",
                json.dumps(
                    {"key": arguments.get("key"), "offset": 0, "byte_size": arguments.get("byte_size")}
                ).encode(),
            ),
            "unregister": (
                "POST",
                f"/v2/systemsharedmemory/region/{arguments.get('name')}/unregister",
                b"{}",
            ),
            "logging": ("GET", "/v2/logging", b""),
            "trace": ("GET", "/v2/trace/setting", b""),
        }
        method, path, body = paths[action]
        return http_answer(server.http_url, method, path, body, headers)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        calls = {
            "unload": lambda: client.unload_model(arguments["model"], headers=headers),
            "load": lambda: client.load_model(arguments["model"], headers=headers),
            "register": lambda: client.register_system_shared_memory(
                arguments["name"], arguments["key"], arguments["byte_size"], headers=headers
            ),
            "unregister": lambda: client.unregister_system_shared_memory(arguments["name"], headers=headers),
            "logging": lambda: client.get_log_settings(headers=headers),
            "trace": lambda: client.get_trace_settings(headers=headers),
        }
        try:
            calls[action]()
            return "OK", ""
        except InferenceServerException as error:
            return (error.status() or "").replace("StatusCode.", ""), error.message() or ""


ALLOWED = {"http": "HTTP 200", "grpc": "OK"}
REFUSED = {
    "http": ("HTTP 403", r"This API is restricted, expecting header 'admin-key'"),
    "grpc": (
        "UNAVAILABLE",
        r"This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'",
    ),
}


def assert_refused(protocol: str, answer: tuple[str, str]) -> None:
    status, pattern = REFUSED[protocol]
    assert answer[0] == status and re.search(pattern, answer[1]), answer


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_model_load_and_unload_need_the_admin_key(dedicated, figures, protocol):
    server, key, model = dedicated.locked, dedicated.admin_key, "ssd300_image_postprocess"
    without = admin_call(server, protocol, "unload", None, model=model)
    wrong = admin_call(server, protocol, "unload", admin_headers(protocol, "not-" + key), model=model)
    assert_refused(protocol, without)
    assert_refused(protocol, wrong)
    assert server.is_model_ready(model)  # nothing happened
    unloaded = admin_call(server, protocol, "unload", admin_headers(protocol, key), model=model)
    gone = not server.is_model_ready(model)
    loaded = admin_call(server, protocol, "load", admin_headers(protocol, key), model=model)
    figures.restriction(
        f"model load/unload ({protocol.upper()})", [without[0], wrong[0], f"{unloaded[0]} / {loaded[0]}"]
    )
    assert unloaded[0] == ALLOWED[protocol] and gone
    assert loaded[0] == ALLOWED[protocol] and server.is_model_ready(model)
    assert still_serving(server)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_shared_memory_registration_needs_the_admin_key(dedicated, figures, protocol):
    server, key = dedicated.locked, dedicated.admin_key
    name = f"reliability_{protocol}_{os.getpid()}"
    region = shared_memory.create_shared_memory_region(name, f"/{name}", 1024)
    try:
        arguments = {"name": name, "key": f"/{name}", "byte_size": 1024}
        without = admin_call(server, protocol, "register", None, **arguments)
        wrong = admin_call(server, protocol, "register", admin_headers(protocol, "not-" + key), **arguments)
        allowed = admin_call(server, protocol, "register", admin_headers(protocol, key), **arguments)
        released = admin_call(server, protocol, "unregister", admin_headers(protocol, key), name=name)
    finally:
        shared_memory.destroy_shared_memory_region(region)
    figures.restriction(
        f"system shared-memory registration ({protocol.upper()})", [without[0], wrong[0], allowed[0]]
    )
    assert_refused(protocol, without)
    assert_refused(protocol, wrong)
    assert allowed[0] == ALLOWED[protocol] and released[0] == ALLOWED[protocol]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("api", ["logging", "trace"])
def test_logging_and_trace_settings_need_the_admin_key(dedicated, figures, protocol, api):
    server, key = dedicated.locked, dedicated.admin_key
    without = admin_call(server, protocol, api, None)
    wrong = admin_call(server, protocol, api, admin_headers(protocol, "not-" + key))
    allowed = admin_call(server, protocol, api, admin_headers(protocol, key))
    figures.restriction(f"{api} settings ({protocol.upper()})", [without[0], wrong[0], allowed[0]])
    assert_refused(protocol, without)
    assert_refused(protocol, wrong)
    assert allowed[0] == ALLOWED[protocol]


def test_inference_health_and_metadata_stay_open_without_a_key(dedicated):
    # Probes and clients hold no key: only the admin APIs are locked.
    server = dedicated.locked
    for path in (
        "/v2/health/ready",
        "/v2/health/live",
        f"/v2/models/{DETECTOR}/ready",
        f"/v2/models/{DETECTOR}",
        "/v2",
    ):
        assert http_answer_raw(server.http_url, "GET", path)[0] == "200", path
    assert health.check(server.http_url, timeout_s=60) == (True, "ok")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_client_beside_a_locked_server_sends_images_over_the_socket(
    dedicated, sample_paths, protocol, caplog
):
    """shared_memory="auto" picks shared memory on loopback; a production server refuses to
    register it without the key (gRPC says UNAVAILABLE), and the client must then fall back,
    not report the server as down."""
    server = dedicated.locked
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with Detector(url, protocol=protocol, shared_memory="auto", retries=0) as detector:
        assert len(detector.detect(sample_paths[0])) > 0
    assert "cannot use this machine's shared memory" in caplog.text


def test_the_client_reads_a_restricted_api_refusal_as_access_denied_not_as_an_outage():
    refusal = "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
    translated = translate_error(
        InferenceServerException(refusal, status="StatusCode.UNAVAILABLE"), where="h:1", model=""
    )
    assert isinstance(translated, AccessDeniedError) and not isinstance(translated, ServerUnavailableError)
    forbidden = InferenceServerException("This API is restricted, expecting header 'admin-key'", status="403")
    assert isinstance(translate_error(forbidden, where="h:1", model=""), AccessDeniedError)


# Patterns of credentials that must never be committed. Written so that this file does not match them.
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "NVIDIA API key": re.compile(r"\bnvapi-[A-Za-z0-9_-]{40,}"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{34,}\b"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:[^\s/@'\"]{3,}@[A-Za-z0-9]"),
}
SECRET_FILE_NAMES = re.compile(
    r"(^|/)(id_(rsa|dsa|ecdsa|ed25519)|\.env(\..+)?|\.netrc|\.pypirc|.+\.(pem|key|p12|pfx|jks|keystore))$"
)


def test_no_secrets_are_committed(figures):
    """Every file git tracks or would add (untracked, not ignored) is free of private keys,
    tokens and credentials; the admin key is generated at install time (chart Secret)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    findings, scanned = [], 0
    for name in filter(None, (item.decode() for item in listed)):
        path = REPO / name
        if SECRET_FILE_NAMES.search(name):
            findings.append(f"{name}: a credentials file")
        if not path.is_file():
            continue
        data = path.read_bytes()[: 2**20]
        if b"\0" in data:  # binary
            continue
        scanned += 1
        text = data.decode(errors="replace")
        findings += [f"{name}: {kind}" for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    figures.section("security", files_scanned=scanned, secrets_found=len(findings))
    assert scanned > 50  # the scan saw the repository
    assert findings == []


def test_checkpoint_loading_safety_is_specified_in_test_weights(figures):
    # Not repeated here: test_weights.py refuses arbitrary pickles (weights_only) and pins sha256.
    tree = ast.parse((REPO / "tests" / "test_weights.py").read_text())
    names = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }
    required = {"test_arbitrary_pickled_objects_are_refused", "test_sha256_mismatch_is_refused"}
    figures.section(
        "security", checkpoint_tests=sorted(f"tests/test_weights.py::{name}" for name in required & names)
    )
    assert required <= names


# --- 3. faults ------------------------------------------------------------------------------------


def test_a_detector_with_two_servers_completes_every_request_when_one_is_killed(
    dedicated, figures, sample_paths
):
    victim, survivor = dedicated.victim, dedicated.locked
    photo = sample_paths[-1]
    # Over the socket, as any client on another machine: the survivor locks shared memory anyway.
    with Detector(survivor.grpc_url, shared_memory=False) as detector:
        reference = detector.detect(photo)
    served_before = successes(survivor.grpc_url, DETECTOR)

    def one_request(detector: Detector):
        started = time.monotonic()
        return detector.detect(photo), time.monotonic() - started

    # The victim is listed first, so it serves until it dies.
    with Detector([victim.grpc_url, survivor.grpc_url], shared_memory=False) as detector:
        with ThreadPoolExecutor(FAILOVER_THREADS) as pool:
            futures = [pool.submit(one_request, detector) for _ in range(FAILOVER_REQUESTS)]
            while sum(future.done() for future in futures) < KILL_AFTER:
                time.sleep(0.05)
            answered_before_kill = sum(future.done() for future in futures)
            in_flight = sum(future.running() for future in futures)
            kill_hard(victim)
            done, pending = wait(futures, timeout=300)
    outcomes = [future.result() for future in futures if future in done]
    served_by_survivor = successes(survivor.grpc_url, DETECTOR) - served_before
    figures.section(
        "failover",
        requests=FAILOVER_REQUESTS,
        killed_after=answered_before_kill,
        in_flight_at_kill=in_flight,
        completed=len(outcomes),
        served_by_survivor=served_by_survivor,
        slowest_s=max((latency for _, latency in outcomes), default=0.0),
    )
    assert not pending and len(outcomes) == FAILOVER_REQUESTS
    for detections, _ in outcomes:
        assert_same_detections(detections, reference)
    assert served_by_survivor >= FAILOVER_REQUESTS - answered_before_kill
    assert processes_mentioning(shm_prefix(victim)) == []  # no stub of the killed server lingers


def test_a_killed_python_stub_keeps_readiness_green_but_fails_the_canary(dedicated, figures):
    """tritonserver 2.51 does not notice a dead stub: readiness and liveness stay 200 while every
    inference through that model fails. The canary check (the chart's readiness and liveness
    probes) catches it. Only this server's stub is killed: its workdir is in the command line."""
    server, model = dedicated.locked, POSTPROCESS
    os.kill(stub_pid(server, model), signal.SIGKILL)
    time.sleep(1)  # let the server notice, if it would
    paths = ["/v2/health/ready", "/v2/health/live", *(f"/v2/models/{name}/ready" for name in ALL_MODELS)]
    readiness = {path: int(http_answer_raw(server.http_url, "GET", path)[0]) for path in paths}
    answer, message, _ = grpc_answer(server.grpc_url, DETECTOR, pixels_request())
    canary = health.check(server.http_url, timeout_s=30)
    cli = subprocess.run(
        [sys.executable, "-m", "ssd300_serving.health", "--url", server.http_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    figures.section(
        "stub_crash",
        model=model,
        readiness=readiness,
        inference=brief(f"{answer}: {message}"),
        canary=("healthy: " if canary[0] else "UNHEALTHY: ") + brief(canary[1]),
    )
    assert all(status == 200 for status in readiness.values()), readiness  # the server's blind spot
    assert answer == "INTERNAL" and f"Stub process '{model}_0_0' is not healthy" in message
    assert canary[0] is False and "is not healthy" in canary[1]
    assert cli.returncode == 1 and "UNHEALTHY" in cli.stderr


def test_sigterm_under_load_finishes_in_flight_requests_refuses_new_ones_and_exits_0(dedicated, figures):
    """`make serve` stopped with SIGTERM while requests are in flight: those complete within the
    exit timeout, requests sent once draining has begun are refused at once (NOT_FOUND while the
    ensembles unload, UNAVAILABLE once the port is closed), and the launcher exits 0."""
    launcher = dedicated.launcher
    with grpcclient.InferenceServerClient(launcher.grpc_url) as client:
        timed_inference(client)  # warm-up
        finished: dict[int, tuple[str, float]] = {}

        def on_answer(index: int):
            def callback(result, error):
                finished[index] = (
                    "ok" if error is None else f"{error.status()}: {error.message()}",
                    time.monotonic(),
                )

            return callback

        for index in range(SIGTERM_IN_FLIGHT):
            client.async_infer(
                DETECTOR, pixels_request(), on_answer(index), client_timeout=2 * EXIT_TIMEOUT_S + 30
            )
        time.sleep(0.5)  # received and queued by the server
        in_flight = SIGTERM_IN_FLIGHT - len(finished)
        terminated = time.monotonic()
        launcher.process.send_signal(signal.SIGTERM)

        # From the moment the ensemble stops being ready, every new request must be refused fast.
        while http_answer_raw(launcher.http_url, "GET", f"/v2/models/{DETECTOR}/ready")[0] == "200":
            assert time.monotonic() < terminated + 10, "draining did not begin within 10 s of SIGTERM"
            time.sleep(0.05)
        new_answers: list[tuple[str, float]] = []
        while launcher.process.poll() is None or len(new_answers) < 2:
            started = time.monotonic()
            with grpcclient.InferenceServerClient(launcher.grpc_url) as late_client:
                try:
                    late_client.infer(DETECTOR, pixels_request(), client_timeout=10)
                    answer = "OK"
                except InferenceServerException as error:
                    answer = (error.status() or "").replace("StatusCode.", "")
            new_answers.append((answer, time.monotonic() - started))
            assert time.monotonic() < terminated + 2 * EXIT_TIMEOUT_S + 20, "the launcher did not exit"
            time.sleep(0.25)
        exit_code = launcher.process.wait(timeout=10)
        exited = time.monotonic()

    completed = [index for index, (answer, _) in finished.items() if answer == "ok"]
    answers: dict[str, int] = {}
    for answer, _ in new_answers:
        answers[answer] = answers.get(answer, 0) + 1
    refused = sum(answer in ("NOT_FOUND", "UNAVAILABLE") for answer, _ in new_answers)
    stubs_left = processes_mentioning(launcher.shm_prefix)
    shm_left = list(Path("/dev/shm").glob(f"{launcher.shm_prefix}*"))
    figures.section(
        "sigterm",
        in_flight=SIGTERM_IN_FLIGHT,
        in_flight_completed=len(completed),
        exit_timeout_s=EXIT_TIMEOUT_S,
        drain_s=max((at for _, at in finished.values()), default=terminated) - terminated,
        new_requests=len(new_answers),
        new_refused=refused,
        new_answers=answers,
        slowest_refusal_s=max((latency for _, latency in new_answers), default=0.0),
        exit_code=exit_code,
        exit_s=exited - terminated,
        stubs_left=len(stubs_left),
        shm_files_left=len(shm_left),
    )
    assert in_flight > 0  # the signal did arrive under load
    assert sorted(finished) == list(range(SIGTERM_IN_FLIGHT)), finished
    assert len(completed) == SIGTERM_IN_FLIGHT, finished
    assert all(at - terminated <= EXIT_TIMEOUT_S for _, at in finished.values())
    assert refused == len(new_answers), new_answers
    assert all(latency < 2 for _, latency in new_answers), new_answers
    assert exit_code == 0, launcher.log()[-3000:]
    assert stubs_left == [] and shm_left == []
