"""The exceptions the client raises: one root, :class:`SSD300Error`, and a subclass per cause.

Transport failures are raised ``from`` tritonclient's or the socket's exception, so the
original cause stays in the traceback.
"""

from __future__ import annotations


class SSD300Error(Exception):
    """Root of every error this package raises on purpose."""


class ServerUnavailableError(SSD300Error):
    """No server could be reached (connection refused or reset, gRPC UNAVAILABLE, HTTP 503)."""


class ServerBusyError(ServerUnavailableError):
    """The server is up but refused the request for lack of capacity: its queue was full, or
    the request waited there longer than the queue timeout (gRPC UNAVAILABLE, HTTP 503).

    Retried with backoff and failed over like any unavailable server; a subclass so that a
    caller can tell overload (shed or slow down) from an outage.
    """


class AccessDeniedError(SSD300Error):
    """The server refused an API it keeps behind a key (shared memory, model repository, …).

    Over gRPC tritonserver 2.51 answers such calls with UNAVAILABLE; they are not retried.
    """


class ModelNotReadyError(SSD300Error):
    """The server answered, but the model is unknown to it or not loaded (yet)."""


class InferenceTimeoutError(SSD300Error, TimeoutError):
    """The server accepted the request but did not answer within ``timeout_s``."""


class InvalidInputError(SSD300Error, ValueError):
    """The request was rejected as malformed (gRPC INVALID_ARGUMENT, HTTP 400)."""


class InvalidImageError(InvalidInputError):
    """An image could not be read or decoded; ``name`` is its file path or position."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class InferenceError(SSD300Error):
    """The server failed the request for another reason (an internal error, say)."""


class RandomWeightsWarning(UserWarning):
    """The server runs SSD300 with random weights: its detections are meaningless."""
