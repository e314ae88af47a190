"""The blocking client: :class:`Detector`, the detection core run by calling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from . import retry
from .detector_base import DetectorBase, Outcome
from .flow import CALL, CLOSE, EMIT, PAUSE, WAIT, WORK, WORKERS, Flow, Steps, front_door
from .transport import Connection

T = TypeVar("T")


class _Threads:
    """Flows run ``count`` at a time on worker threads; leaving cancels those not started and
    waits for those running."""

    def __init__(self, count: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="ssd300")

    def start(self, flow: Flow[T]) -> Future[T]:
        return self._pool.submit(_run, flow)

    def __enter__(self) -> _Threads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# How this client performs each effect: by calling.
_PERFORM: dict[str, Callable[..., Any]] = {
    CALL: lambda connection, operation: connection.call(operation),
    CLOSE: lambda connection: connection.close(),
    PAUSE: lambda seconds: retry.pause(seconds),  # looked up when called: tests replace the seam
    WORK: lambda function, *args: function(*args),
    WORKERS: _Threads,
    WAIT: lambda future: future.result(),
}


def _emitted(steps: Steps) -> Iterator[Any]:
    """Run a flow on this thread, yielding what it emits."""
    with steps:
        for effect in steps:
            if effect.kind == EMIT:
                yield from effect.args[0]
            else:
                steps.settle(_PERFORM[effect.kind], *effect.args)


def _run(flow: Flow[T]) -> T:
    steps = Steps(flow)
    for _ in _emitted(steps):
        pass
    return steps.value


def _iterate(flow: Flow[Any]) -> Iterator[tuple[int, Outcome]]:
    return _emitted(Steps(flow))


class Detector(DetectorBase):
    """SSD300 object detection on a Triton server.

    ``url``: ``"host:port"`` (default port 8001 for gRPC, 8000 for HTTP), a comma-separated
    string or a list. With several, an unreachable server is skipped (failover) and the one
    that last answered is asked first; a round over all of them that found none reachable is
    retried ``retries`` times with exponential backoff and jitter. Rejected inputs and
    timeouts are not retried (a timed-out request may still be running).

    ``model``: defaults to ``ssd300_detector``, or ``ssd300_image`` with ``server_side_decode``.
    ``server_side_decode``: send image files as they are to ``ssd300_image``, which decodes
    them with the same imaging code, instead of decoding and resizing here.
    ``shared_memory``: pass input images through system shared memory: ``"auto"`` when the
    server is on loopback (127.0.0.1, localhost, ::1), ``True`` always, ``False`` never.
    ``tls``: a :class:`~ssd300_client.TLS` (CA bundle, client certificate and key) for every
    address, or True for TLS with the system's trust store; a ``grpcs://`` / ``https://``
    address turns TLS on by itself.
    ``parameters``: Triton request parameters sent with every inference; the postprocess
    reads ``score_threshold``, ``nms_iou_threshold`` and ``max_detections`` overrides from them
    (e.g. NVIDIA's COCO evaluation settings: IoU 0.50, 200 detections).

    Results keep everything the server sent (scores above its 0.05 threshold, what COCO
    evaluation needs); pass ``threshold=`` or use :meth:`Detections.filter` for display.
    A context manager; :meth:`close` releases connections and shared memory. Thread-safe.
    """

    _connection_class = Connection

    check_ready = front_door(DetectorBase._check_ready, _run)
    detect = front_door(DetectorBase._detect, _run)
    detect_many = front_door(DetectorBase._detect_many, _run)
    detect_iter = front_door(DetectorBase._detect_iter, _iterate, returns="Iterator[tuple[int, Outcome]]")
    close = front_door(DetectorBase._close, _run)

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
