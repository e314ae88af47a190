"""Bytes per request and per response, one image per request.

Two figures each: *tensor* bytes (the tensors' contents: what the model consumes and produces)
and *message* bytes, measured on the real request/response: the serialized gRPC protobuf
message, or the HTTP body (JSON header + binary tensor data, tritonclient's default binary
encoding). Neither includes transport framing (HTTP headers, HTTP/2 frames, gRPC's 5-byte
prefix), a few hundred bytes at most.
"""

from __future__ import annotations

import os
import time
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc._utils import _get_inference_request  # the message tritonclient would send
from tritonclient.utils import InferenceServerException, shared_memory

from ssd300_common.contract import (
    DETECTOR_MODEL,
    ENCODED_IMAGE_DATATYPE,
    ENCODED_IMAGE_INPUT,
    IMAGE_MODEL,
    IMAGES_DATATYPE,
    IMAGES_INPUT,
)

SHM_RELEASE_TIMEOUT_S = 10.0


def unregister_when_released(client: grpcclient.InferenceServerClient, region: str) -> None:
    """The server holds a region until it has released the last request that read it, which
    can be a moment after the response arrived ("currently in use")."""
    deadline = time.monotonic() + SHM_RELEASE_TIMEOUT_S
    while True:
        try:
            client.unregister_system_shared_memory(region)
            return
        except InferenceServerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _request_message_bytes(model: str, inputs) -> int:
    request = _get_inference_request(
        model_name=model, inputs=inputs, model_version="", request_id="", outputs=None, sequence_id=0,
        sequence_start=False, sequence_end=False, priority=0, timeout=None, parameters=None,
    )  # fmt: skip
    return request.ByteSize()


def _response_tensor_bytes(result, names) -> int:
    return sum(result.as_numpy(name).nbytes for name in names)


def _grpc_sizes(client, model: str, inputs, request_tensor_bytes: int) -> dict:
    result = client.infer(model, inputs)
    names = [output.name for output in result.get_response().outputs]
    return {
        "request_tensor_bytes": request_tensor_bytes,
        "request_message_bytes": _request_message_bytes(model, inputs),
        "response_tensor_bytes": _response_tensor_bytes(result, names),
        "response_message_bytes": result.get_response().ByteSize(),
    }


def _http_sizes(http_address: str, pixels: np.ndarray) -> dict:
    inputs = [httpclient.InferInput(IMAGES_INPUT, list(pixels.shape), IMAGES_DATATYPE)]
    inputs[0].set_data_from_numpy(pixels, binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    request = urllib.request.Request(
        f"http://{http_address}/v2/models/{DETECTOR_MODEL}/infer", data=body, headers=headers
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        reply = response.read()
        header_length = response.headers.get("Inference-Header-Content-Length")
    result = httpclient.InferenceServerClient.parse_response_body(
        reply, header_length=int(header_length) if header_length else None
    )
    names = [output["name"] for output in result.get_response()["outputs"]]
    return {
        "request_tensor_bytes": pixels.nbytes,
        "request_message_bytes": len(body),
        "response_tensor_bytes": _response_tensor_bytes(result, names),
        "response_message_bytes": len(reply),
    }


def measure(grpc_address: str, http_address: str, samples) -> dict[str, dict]:
    pixels = samples.pixel_batch(1)
    encoded = samples.encoded_batch(1)
    sizes = {}
    with grpcclient.InferenceServerClient(grpc_address) as client:
        tensor = grpcclient.InferInput(IMAGES_INPUT, list(pixels.shape), IMAGES_DATATYPE)
        tensor.set_data_from_numpy(pixels)
        sizes["grpc"] = _grpc_sizes(client, DETECTOR_MODEL, [tensor], pixels.nbytes)

        region = f"ssd300_bench_sizes_{os.getpid()}"
        handle = shared_memory.create_shared_memory_region(region, f"/{region}", pixels.nbytes)
        try:
            shared_memory.set_shared_memory_region(handle, [pixels])
            client.register_system_shared_memory(region, f"/{region}", pixels.nbytes)
            tensor = grpcclient.InferInput(IMAGES_INPUT, list(pixels.shape), IMAGES_DATATYPE)
            tensor.set_shared_memory(region, pixels.nbytes)
            # the tensor's bytes are still read by the server, from shared memory instead of the message
            sizes["grpc_shm"] = _grpc_sizes(client, DETECTOR_MODEL, [tensor], pixels.nbytes)
            unregister_when_released(client, region)
        finally:
            shared_memory.destroy_shared_memory_region(handle)

        tensor = grpcclient.InferInput(ENCODED_IMAGE_INPUT, list(encoded.shape), ENCODED_IMAGE_DATATYPE)
        tensor.set_data_from_numpy(encoded)
        # BYTES tensors carry a 4-byte length before each element
        sizes["image_grpc"] = _grpc_sizes(
            client, IMAGE_MODEL, [tensor], sum(4 + len(item) for item in encoded.flat)
        )
    sizes["http"] = _http_sizes(http_address, pixels)
    return sizes
