"""Locust plumbing for Triton: a timed client wrapper and the abstract user that owns it.

gRPC under gevent: gRPC's gevent support must be initialised after Locust has monkey-patched
the standard library (importing locust does that) and before tritonclient.grpc is imported or
any channel exists (docs/testing.md). This module does it first, so import it before anything that
imports tritonclient.grpc (the ssd300_client package does). tritonclient.http runs on
geventhttpclient, which is gevent-native.
"""

from __future__ import annotations

import grpc.experimental.gevent as grpc_gevent
import locust  # noqa: F401  (monkey-patches the standard library, which must precede init_gevent)

grpc_gevent.init_gevent()

import random
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from locust import User

from load_tests.endpoints import GRPC, HTTP, Endpoint, resolve_endpoints
from load_tests.payloads import SampleImages
from ssd300_client import TLS, contract


class UnexpectedResponse(RuntimeError):
    """The server answered, but not with one result per image sent."""


class TimedTritonClient:
    """A tritonclient client whose every inference is reported to Locust.

    One ``request`` event per call: request_type = protocol, name = model, response_time in ms,
    response_length = bytes of the output tensors, exception set on failure (Locust counts it
    as a failure; the user carries on).
    """

    def __init__(self, endpoint: Endpoint, environment, *, timeout_s: float, tls: TLS | None = None) -> None:
        self.protocol = endpoint.protocol
        self.timeout_s = timeout_s
        self._events = environment.events
        # TLS when the URL says so (grpcs://, https://) or certificate files are given; the
        # files map onto tritonclient's options as in the ssd300_client connections.
        tls = tls or (TLS() if endpoint.ssl else None)
        if endpoint.protocol == GRPC:
            self._module = grpcclient
            self._client = grpcclient.InferenceServerClient(
                endpoint.address, **(tls.grpc_options() if tls else {})
            )
        else:
            self._module = httpclient
            self._client = httpclient.InferenceServerClient(
                endpoint.address,
                connection_timeout=timeout_s,
                network_timeout=timeout_s,
                **(tls.http_options() if tls else {}),
            )

    def infer(
        self, model: str, input_name: str, data: np.ndarray, datatype: str, outputs: tuple[str, ...]
    ) -> None:
        start = time.perf_counter()
        response_length, exception = 0, None
        try:
            tensor = self._module.InferInput(input_name, list(data.shape), datatype)
            tensor.set_data_from_numpy(data)
            if self.protocol == GRPC:
                result = self._client.infer(model, [tensor], client_timeout=self.timeout_s)
            else:
                result = self._client.infer(model, [tensor])
            response_length = self._checked_length(result, outputs, len(data))
        except Exception as exc:  # every failure is reported, never raised into Locust
            exception = exc
        self._events.request.fire(
            request_type=self.protocol,
            name=model,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=response_length,
            exception=exception,
            context={"batch_size": len(data)},
        )

    @staticmethod
    def _checked_length(result, outputs: tuple[str, ...], batch_size: int) -> int:
        arrays = [result.as_numpy(name) for name in outputs]
        missing = [name for name, array in zip(outputs, arrays) if array is None]
        if missing:
            raise UnexpectedResponse(f"response lacks {', '.join(missing)}")
        if arrays[-1].shape[0] != batch_size or arrays[0].shape[0] != batch_size:
            raise UnexpectedResponse(f"{arrays[0].shape[0]} results for {batch_size} images")
        return sum(array.nbytes for array in arrays)

    def close(self) -> None:
        self._client.close()


def tls_of(options) -> TLS | None:
    """The TLS files the locustfile's --ca-cert/--client-cert/--client-key name, if any."""
    files = {name: getattr(options, name, "") or None for name in ("ca_cert", "client_cert", "client_key")}
    return TLS(**files) if any(files.values()) else None


_samples: SampleImages | None = None


def sample_images() -> SampleImages:
    """One set of prepared payloads per process, shared by all its users."""
    global _samples
    if _samples is None:
        _samples = SampleImages()
    return _samples


class TritonUser(User):
    """Owns one Triton client for its lifetime; subclasses set ``protocol`` and add @tasks.

    One client per user (a gRPC channel or an HTTP connection each), closed in on_stop: a gRPC
    channel left to ``__del__`` at exit blocks under gevent and Locust never exits.
    """

    abstract = True
    protocol = GRPC

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
        self.images = sample_images()
        # Users start at different photos: concurrent requests, and so the batches, differ.
        self.cursor = random.randrange(len(self.images.pixels))

    def on_stop(self) -> None:
        self.client.close()

    def detect_pixels(self) -> None:
        """One ``ssd300_detector`` request: client-side preprocessed uint8 images."""
        size = self.environment.parsed_options.batch_size
        self.client.infer(
            contract.DETECTOR_MODEL,
            contract.IMAGES_INPUT,
            self.images.pixel_batch(size, self.cursor),
            contract.IMAGES_DATATYPE,
            contract.DETECTION_OUTPUTS,
        )
        self.cursor += size

    def detect_encoded(self) -> None:
        """One ``ssd300_image`` request: the image files' bytes, decoded by the server."""
        size = self.environment.parsed_options.image_batch_size
        self.client.infer(
            contract.IMAGE_MODEL,
            contract.ENCODED_IMAGE_INPUT,
            self.images.encoded_batch(size, self.cursor),
            contract.ENCODED_IMAGE_DATATYPE,
            contract.IMAGE_OUTPUTS,
        )
        self.cursor += size


class TritonGrpcUser(TritonUser):
    abstract = True
    protocol = GRPC


class TritonHttpUser(TritonUser):
    abstract = True
    protocol = HTTP
