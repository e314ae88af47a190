"""The asyncio client: :class:`AsyncDetector`, the detection core run by awaiting
(tritonclient.grpc.aio / tritonclient.http.aio)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from . import retry
from .aio_transport import AsyncConnection
from .detector_base import DetectorBase, Outcome
from .flow import CALL, CLOSE, EMIT, PAUSE, WAIT, WORK, WORKERS, Flow, Steps, front_door

T = TypeVar("T")


class _Tasks:
    """Flows run as tasks of the running loop, ``count`` at a time; leaving cancels those not
    finished."""

    def __init__(self, count: int) -> None:
        self._slots = asyncio.Semaphore(count)
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, flow: Flow[T]) -> asyncio.Task[T]:
        task = asyncio.create_task(self._run(flow))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def _run(self, flow: Flow[T]) -> T:
        async with self._slots:
            return await _run(flow)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # seen: a batch abandoned after another failed must not log "never retrieved"

    def __enter__(self) -> _Tasks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for task in list(self._tasks):
            task.cancel()


async def _awaited(value: Any) -> Any:
    return value


def _in_thread(function: Callable[..., T], *args: Any) -> Awaitable[T]:
    """``asyncio.to_thread``, letting go of ``args`` (a batch of images) as soon as the call
    returns: the executor keeps its work item a moment after the answer reaches the loop."""
    call = [functools.partial(function, *args)]
    return asyncio.to_thread(lambda: call.pop()())


# How this client performs each effect: by awaiting.
_PERFORM: dict[str, Callable[..., Awaitable[Any]]] = {
    CALL: lambda connection, operation: connection.call(operation),
    CLOSE: lambda connection: connection.close(),
    PAUSE: lambda seconds: retry.pause_async(seconds),
    WORK: _in_thread,
    WORKERS: lambda count: _awaited(_Tasks(count)),
    WAIT: lambda task: task,
}


async def _emitted(steps: Steps) -> AsyncIterator[Any]:
    """Run a flow on the running loop, yielding what it emits."""
    with steps:
        for effect in steps:
            if effect.kind == EMIT:
                for item in effect.args[0]:
                    yield item
            else:
                await steps.settle_async(_PERFORM[effect.kind], *effect.args)


async def _run(flow: Flow[T]) -> T:
    steps = Steps(flow)
    async for _ in _emitted(steps):
        pass
    return steps.value


def _iterate(flow: Flow[Any]) -> AsyncIterator[tuple[int, Outcome]]:
    return _emitted(Steps(flow))


class AsyncDetector(DetectorBase):
    """The asyncio flavour of :class:`~ssd300_client.Detector`: same options, same results,
    the same core. Decoding and resizing run in worker threads (``asyncio.to_thread``) so
    the event loop stays responsive. Use ``async with`` or ``await detector.close()``;
    ``detect_iter`` is an async iterator (``async for index, outcome in ...``).
    """

    _connection_class = AsyncConnection

    check_ready = front_door(DetectorBase._check_ready, _run)
    detect = front_door(DetectorBase._detect, _run)
    detect_many = front_door(DetectorBase._detect_many, _run)
    detect_iter = front_door(
        DetectorBase._detect_iter, _iterate, returns="AsyncIterator[tuple[int, Outcome]]"
    )
    close = front_door(DetectorBase._close, _run)

    async def __aenter__(self) -> AsyncDetector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
