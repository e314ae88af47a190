"""Talking to a tritonserver below the client library: raw gRPC and HTTP requests whose answer
(status and message) the tests inspect, and the canary check that a server still serves."""

from __future__ import annotations

import http.client
import json
import re

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ssd300_common import contract
from ssd300_common.contract import ENCODED_IMAGE_INPUT
from ssd300_serving import health


def url_for(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def encoded_tensor(data: bytes) -> grpcclient.InferInput:
    return tensor(ENCODED_IMAGE_INPUT, np.array([[data]], dtype=np.object_), "BYTES")


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


def server_version(http_url: str) -> str | None:
    status, body = http_answer_raw(http_url, "GET", "/v2")
    return json.loads(body).get("version") if status == "200" else None


def outputs_of(result) -> dict[str, np.ndarray]:
    return {output.name: result.as_numpy(output.name) for output in result.get_response().outputs}


def non_finite_values(outputs: dict[str, np.ndarray]) -> int:
    return sum(int((~np.isfinite(a)).sum()) for a in outputs.values() if np.issubdtype(a.dtype, np.floating))


def brief(message: str, length: int = 120) -> str:
    """A server message for the report, without tritonserver's request-id prefix."""
    return re.sub(r"\[request id: [^\]]*\]\s*", "", message)[:length]


def served_summary(outputs: dict[str, np.ndarray]) -> str:
    """What a successful answer held, for the report."""
    summary = f"{int(outputs[contract.COUNT_OUTPUT][0, 0])} detections"
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
