"""Locust plumbing for Triton: a timed client wrapper and the abstract user that owns it.

gRPC's gevent support must be initialised after Locust has monkey-patched the standard library
(importing locust does that) and before tritonclient.grpc is imported or any channel exists
(docs/testing.md): import this module before anything that imports tritonclient.grpc (the
ssd300_client package does). tritonclient.http runs on geventhttpclient, gevent-native.
"""

from __future__ import annotations

import grpc.experimental.gevent as grpc_gevent
import locust  # noqa: F401  (monkey-patches the standard library, which must precede init_gevent)

grpc_gevent.init_gevent()

import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from locust import User, task

from load_tests.endpoints import GRPC, Endpoint, resolve_endpoints
from load_tests.payloads import SampleImages
from ssd300_client import TLS
from ssd300_common import contract


class UnexpectedResponse(RuntimeError):
    """The server answered, but not with one result per image sent."""


@dataclass(frozen=True)
class Request:
    """What one kind of request sends and expects back."""

    model: str
    input_name: str
    datatype: str
    outputs: tuple[str, ...]
    payload: Callable[[SampleImages, int, int], np.ndarray]  # (samples, size, start) → tensor


# Client-side preprocessed uint8 images, and image files decoded by the server.
DETECTOR = Request(
    contract.DETECTOR_MODEL,
    contract.IMAGES_INPUT,
    contract.IMAGES_DATATYPE,
    contract.DETECTION_OUTPUTS,
    SampleImages.pixel_batch,
)
IMAGE = Request(
    contract.IMAGE_MODEL,
    contract.ENCODED_IMAGE_INPUT,
    contract.ENCODED_IMAGE_DATATYPE,
    contract.IMAGE_OUTPUTS,
    SampleImages.encoded_batch,
)


class TimedTritonClient:
    """A tritonclient client that reports every inference to Locust as one ``request`` event:
    request_type = protocol, name = model, response_time in ms, response_length = bytes of the
    output tensors, exception set on failure (a failure to Locust; the user carries on)."""

    def __init__(self, endpoint: Endpoint, environment, *, timeout_s: float, tls: TLS | None = None) -> None:
        self.protocol, self.timeout_s, self._events = endpoint.protocol, timeout_s, environment.events
        # TLS when the URL says so (grpcs://, https://) or certificate files are given.
        tls = tls or (TLS() if endpoint.ssl else None)
        if endpoint.protocol == GRPC:
            self._module = grpcclient
            options = tls.grpc_options() if tls else {}
        else:
            self._module = httpclient
            options = {"connection_timeout": timeout_s, "network_timeout": timeout_s}
            options.update(tls.http_options() if tls else {})
        self._client = self._module.InferenceServerClient(endpoint.address, **options)

    def infer(self, request: Request, data: np.ndarray) -> None:
        start = time.perf_counter()
        response_length, exception = 0, None
        try:
            tensor = self._module.InferInput(request.input_name, list(data.shape), request.datatype)
            tensor.set_data_from_numpy(data)
            # HTTP has no per-call timeout: its client's network_timeout applies.
            timeout = {"client_timeout": self.timeout_s} if self.protocol == GRPC else {}
            result = self._client.infer(request.model, [tensor], **timeout)
            arrays = {name: result.as_numpy(name) for name in request.outputs}
            if any(array is None or len(array) != len(data) for array in arrays.values()):
                shapes = {name: None if array is None else array.shape for name, array in arrays.items()}
                raise UnexpectedResponse(f"{len(data)} images sent, outputs {shapes}")
            response_length = sum(array.nbytes for array in arrays.values())
        except Exception as exc:  # every failure is reported, never raised into Locust
            exception = exc
        self._events.request.fire(
            request_type=self.protocol,
            name=request.model,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=response_length,
            exception=exception,
            context={"batch_size": len(data)},
        )

    def close(self) -> None:
        self._client.close()


def tls_of(options) -> TLS | None:
    """The TLS files the locustfile's --ca-cert/--client-cert/--client-key name, if any."""
    files = {name: getattr(options, name, "") or None for name in ("ca_cert", "client_cert", "client_key")}
    return TLS(**files) if any(files.values()) else None


sample_images = functools.cache(SampleImages)  # one set of payloads per process, for all its users


class TritonUser(User):
    """Owns one Triton client for its lifetime; subclasses set ``protocol`` and ``request``.

    One client per user (a gRPC channel or an HTTP connection each), closed in on_stop: a gRPC
    channel left to ``__del__`` at exit blocks under gevent and Locust never exits.
    """

    abstract = True
    protocol = GRPC
    request = DETECTOR

    def wait_time(self) -> float:
        return self.environment.parsed_options.think_time_s

    def on_start(self) -> None:
        options = self.environment.parsed_options
        endpoints = resolve_endpoints(
            self.environment.host, grpc_url=options.grpc_url, http_url=options.http_url
        )
        self.client = TimedTritonClient(
            endpoints[self.protocol],
            self.environment,
            timeout_s=options.request_timeout_s,
            tls=tls_of(options),
        )
        # Users start at different photos: concurrent requests, and so the batches, differ.
        self.cursor = random.randrange(len(sample_images().pixels))

    def on_stop(self) -> None:
        self.client.close()

    @task
    def detect(self) -> None:
        size = self.environment.parsed_options.batch_size
        self.client.infer(self.request, self.request.payload(sample_images(), size, self.cursor))
        self.cursor += size
