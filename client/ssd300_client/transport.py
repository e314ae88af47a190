"""One Triton server over gRPC or HTTP: requests in, numpy arrays out, typed errors.

:class:`Connection` is the blocking flavour; :mod:`ssd300_client.aio_transport` the asyncio
one. Both make the same :class:`Operation` values (built by :class:`Operations`) and translate
failures with :func:`translated_errors`, so the two behave alike.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .errors import (
    AccessDeniedError,
    InferenceError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotReadyError,
    ServerBusyError,
    ServerUnavailableError,
    SSD300Error,
)
from .tls import TLS

log = logging.getLogger(__name__)

# HTTP reports a refused or dropped connection as an OSError; gRPC and both protocols' server
# answers as statuses (gRPC "StatusCode.X", HTTP the status code as text).
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "503", "502"}
_TIMED_OUT = {"StatusCode.DEADLINE_EXCEEDED", "504", "408"}
_NOT_FOUND = {"StatusCode.NOT_FOUND", "404"}
_INVALID = {"StatusCode.INVALID_ARGUMENT", "400"}
_DENIED = {"StatusCode.PERMISSION_DENIED", "StatusCode.UNAUTHENTICATED", "403", "401"}
# tritonserver's words for a restricted API called without its key; over gRPC the status is
# UNAVAILABLE, which would otherwise read as an outage.
_RESTRICTED_API = "is restricted, expecting header"
# Its words when the queue policy refuses a request: the queue is full, or the request waited
# past the queue timeout. Both come as UNAVAILABLE / 503 (model_repository/ssd300/configs/cpu.pbtxt).
_OVERLOADED = ("Exceeds maximum queue size", "Request timeout expired")


@dataclass(frozen=True)
class InputTensor:
    """An input given either as data or as a registered system shared-memory region."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None
    shm_region: str | None = None
    shm_byte_size: int = 0


@dataclass(frozen=True)
class InferRequest:
    model: str
    inputs: tuple[InputTensor, ...]
    outputs: tuple[str, ...]
    parameters: dict | None = None  # Triton request parameters, e.g. postprocess overrides


def client_module(protocol: str) -> Any:
    """tritonclient.grpc or tritonclient.http; their aio clients use the same tensor classes."""
    return grpcclient if protocol == "grpc" else httpclient


def build_tensors(module: Any, request: InferRequest) -> tuple[list, list]:
    inputs = []
    for tensor in request.inputs:
        item = module.InferInput(tensor.name, list(tensor.shape), tensor.datatype)
        if tensor.shm_region is not None:
            item.set_shared_memory(tensor.shm_region, tensor.shm_byte_size)
        else:
            item.set_data_from_numpy(tensor.data)
        inputs.append(item)
    return inputs, [module.InferRequestedOutput(name) for name in request.outputs]


def translate_error(
    exc: BaseException, *, where: str, model: str, control: bool = False
) -> SSD300Error | None:
    """The typed error for a transport failure, or None when ``exc`` is not one.

    ``control``: the call was a health/metadata query, where no answer in time means the
    server is unusable rather than that an inference ran long.
    """
    if isinstance(exc, InferenceServerException):
        status, message = exc.status() or "", exc.message() or ""
        if status in _DENIED or _RESTRICTED_API in message:
            return AccessDeniedError(
                f"Triton server {where} refused a restricted API without its key: {message}"
            )
        if status in _UNAVAILABLE and any(reason in message for reason in _OVERLOADED):
            return ServerBusyError(f"Triton server {where} is overloaded and refused the request: {message}")
        if status in _UNAVAILABLE:
            return ServerUnavailableError(f"Triton server {where} is unavailable: {message}")
        if status in _TIMED_OUT:
            return _timeout(where, model, control, message)
        if status in _NOT_FOUND:
            return ModelNotReadyError(f"model {model!r} not found on {where}: {message}")
        if status in _INVALID:
            return InvalidInputError(f"{where} rejected the request for {model!r}: {message}")
        return InferenceError(
            f"{where} failed the request for {model!r} ({status or 'client error'}): {message}"
        )
    if isinstance(exc, TimeoutError):  # socket.timeout, asyncio.TimeoutError
        return _timeout(where, model, control, str(exc) or "timed out")
    if isinstance(exc, OSError) or _is_aiohttp_connection_error(exc):
        return ServerUnavailableError(f"cannot connect to Triton server {where}: {exc}")
    return None


def _timeout(where: str, model: str, control: bool, message: str) -> SSD300Error:
    if control:
        return ServerUnavailableError(f"Triton server {where} did not answer in time: {message}")
    return InferenceTimeoutError(f"{where} did not answer the request for {model!r} in time: {message}")


def _is_aiohttp_connection_error(exc: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # the http.aio extra is optional
        return False
    return isinstance(exc, aiohttp.ClientConnectionError)


@contextmanager
def translated_errors(where: str, model: str, *, control: bool = False) -> Iterator[None]:
    """Re-raise transport failures as typed errors, ``from`` the original."""
    try:
        yield
    except SSD300Error:
        raise
    except Exception as exc:
        error = translate_error(exc, where=where, model=model, control=control)
        if error is None:
            raise
        raise error from exc


def config_parameters(config: dict) -> dict[str, str]:
    """``parameters`` of a model config (as JSON from either protocol) → name: string value."""
    config = config.get("config", config)  # gRPC wraps the config in {"config": …}
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def ready_models(index: dict | list) -> list[str]:
    """Names of READY models from a repository index (gRPC: {"models": […]}, HTTP: […])."""
    entries = index.get("models", []) if isinstance(index, dict) else index
    return sorted({entry["name"] for entry in entries if entry.get("state") == "READY"})


@dataclass(frozen=True)
class Operation:
    """One call on a tritonclient client, described but not made: ``client.<method>(*args,
    **kwargs)``, whose answer ``reply`` turns into ours. The blocking and the asyncio
    connections make the same operations; ``model`` and ``control`` word a failure."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    model: str = ""
    control: bool = True  # a health or metadata query, not an inference
    reply: Callable[[Any], Any] = lambda answer: answer


class Operations:
    """The operations the detector needs, worded for one protocol (tritonclient's blocking and
    aio clients take the same arguments)."""

    def __init__(self, protocol: str, *, timeout_s: float) -> None:
        self._module = client_module(protocol)
        self._grpc = protocol == "grpc"
        # gRPC takes a deadline per call; HTTP clients carry theirs (set when they are made).
        self._deadline = {"client_timeout": timeout_s} if self._grpc else {}
        self._as_json = {"as_json": True, **self._deadline} if self._grpc else {}

    def model_ready(self, model: str) -> Operation:
        return Operation("is_model_ready", (model,), self._deadline, model=model)

    def model_config(self, model: str) -> Operation:
        return Operation("get_model_config", (model,), self._as_json, model=model)

    def ready_models(self) -> Operation:
        return Operation("get_model_repository_index", (), self._as_json, reply=ready_models)

    def register_region(self, name: str, key: str, byte_size: int) -> Operation:
        return Operation("register_system_shared_memory", (name, key, byte_size))

    def unregister_region(self, name: str) -> Operation:
        return Operation("unregister_system_shared_memory", (name,))

    def infer(self, request: InferRequest) -> Operation:
        inputs, outputs = build_tensors(self._module, request)

        def arrays(result: Any) -> dict[str, np.ndarray]:
            return {name: result.as_numpy(name) for name in request.outputs}

        kwargs = {"outputs": outputs, "parameters": request.parameters, **self._deadline}
        return Operation("infer", (request.model, inputs), kwargs, request.model, control=False, reply=arrays)


class Endpoint:
    """What both connection flavours know about their server; ``tls`` None means plaintext."""

    def __init__(self, url: str, *, protocol: str, timeout_s: float, tls: TLS | None = None) -> None:
        self.url, self.protocol, self.timeout_s, self.tls = url, protocol, timeout_s, tls
        self.where = f"{url} ({protocol}{' over TLS' if tls else ''})"

    def errors(self, operation: Operation) -> AbstractContextManager[None]:
        return translated_errors(self.where, operation.model, control=operation.control)


class Connection(Endpoint):
    """A blocking client for one server. Safe to share between threads.

    gRPC clients are thread-safe, so all threads share one. HTTP clients (gevent underneath)
    must stay on the thread that made them, so each thread gets its own; those of finished
    threads are closed as new ones are made.
    """

    def __init__(self, url: str, *, protocol: str, timeout_s: float, tls: TLS | None = None) -> None:
        super().__init__(url, protocol=protocol, timeout_s=timeout_s, tls=tls)
        self._lock = threading.Lock()
        self._clients: dict[threading.Thread, Any] = {}  # gRPC: one entry, whichever thread
        self._closed = False

    def _new_client(self) -> Any:
        if self.protocol == "grpc":
            return grpcclient.InferenceServerClient(self.url, **(self.tls.grpc_options() if self.tls else {}))
        return httpclient.InferenceServerClient(
            self.url,
            connection_timeout=self.timeout_s,
            network_timeout=self.timeout_s,
            **(self.tls.http_options() if self.tls else {}),
        )

    def _client(self) -> Any:
        with self._lock:
            if self._closed:
                raise SSD300Error("the detector is closed")
            if self.protocol == "grpc" and self._clients:
                return next(iter(self._clients.values()))
            thread = threading.current_thread()
            client = self._clients.get(thread)
            if client is None:
                finished = [t for t in self._clients if not t.is_alive()]
                for stale in finished:
                    _close_quietly(self._clients.pop(stale), self.where)
                client = self._clients[thread] = self._new_client()
            return client

    def call(self, operation: Operation) -> Any:
        with self.errors(operation):
            answer = getattr(self._client(), operation.method)(*operation.args, **operation.kwargs)
        return operation.reply(answer)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            _close_quietly(client, self.where)


def _close_quietly(client: Any, where: str) -> None:
    try:
        client.close()
    except Exception:  # closing must not hide the error that led here
        log.debug("closing a client for %s failed", where, exc_info=True)
