"""The vocabulary between the detection core and the two clients that run it.

The core (:mod:`ssd300_client.detector_base`) writes each operation once, as a generator that
yields :class:`Effect` values, "call this server", "pause", "decode these images", and gets
each one's result back (or its exception thrown in). It never does I/O itself. The blocking
:class:`~ssd300_client.Detector` performs effects by calling; the
:class:`~ssd300_client.AsyncDetector` by awaiting. Batching, read-ahead, failover, readiness
and bad-image isolation therefore exist once, and the two clients only differ in how they wait.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")
P = ParamSpec("P")

# What each effect asks of the client running the flow (the arguments in Effect.args):
CALL = "call"  # (connection, transport.Operation): make one call on a server; its answer
CLOSE = "close"  # (connection,): close it
PAUSE = "pause"  # (seconds,): wait before the next round of attempts
WORK = "work"  # (function, *args): CPU-bound work (decoding); the asyncio client runs it in a thread
WORKERS = "workers"  # (count,): a Workers to run that many flows at a time
WAIT = "wait"  # (handle from Workers.start,): the list that flow emitted
EMIT = "emit"  # (items,): hand items to the caller as they come (detect_iter)


class Effect(NamedTuple):
    kind: str
    args: tuple[Any, ...]


#: A generator of effects that returns a ``T``.
Flow = Generator[Effect, Any, T]


class Workers(Protocol):
    """Runs flows alongside the current one, at most ``count`` at a time; a context manager
    whose exit cancels the flows not yet waited for."""

    def start(self, flow: Flow[Any]) -> Any: ...

    def __enter__(self) -> Workers: ...

    def __exit__(self, *exc_info: object) -> None: ...


def call(connection: Any, operation: Any) -> Effect:
    return Effect(CALL, (connection, operation))


def close(connection: Any) -> Effect:
    return Effect(CLOSE, (connection,))


def pause(seconds: float) -> Effect:
    return Effect(PAUSE, (seconds,))


def work(function: Callable[..., Any], *args: Any) -> Effect:
    return Effect(WORK, (function, *args))


def workers(count: int) -> Effect:
    return Effect(WORKERS, (count,))


def wait(handle: Any) -> Effect:
    return Effect(WAIT, (handle,))


def emit(items: Iterable[Any]) -> Effect:
    return Effect(EMIT, (list(items),))


class Steps:
    """A flow taken one effect at a time: iterate for the effects, and settle each one before
    asking for the next, so that its result is sent into the flow (or its error thrown in).
    Iteration ends when the flow returns; ``value`` is what it returned. A context manager
    that closes the flow on exit, so an abandoned flow releases what it holds (a leased
    shared-memory region, pending batches)."""

    def __init__(self, flow: Flow[Any]) -> None:
        self._flow = flow
        self._reply: Any = None
        self._error: BaseException | None = None
        self.value: Any = None

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._flow.close()

    def __iter__(self) -> Steps:
        return self

    def __next__(self) -> Effect:
        reply, error, self._reply, self._error = self._reply, self._error, None, None
        try:
            return self._flow.throw(error) if error is not None else self._flow.send(reply)
        except StopIteration as stop:
            self.value = stop.value
            raise

    def settle(self, function: Callable[..., Any], *args: Any) -> None:
        """Perform an effect by calling ``function(*args)``."""
        try:
            self._reply = function(*args)
        except Exception as exc:  # the flow decides what is worth catching
            self._error = exc

    async def settle_async(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Perform an effect by awaiting ``function(*args)``."""
        try:
            self._reply = await function(*args)
        except Exception as exc:  # as above; cancellation passes through and closes the flow
            self._error = exc


def front_door(
    flow_method: Callable[Concatenate[S, P], Flow[T]],
    run: Callable[[Flow[T]], R],
    *,
    returns: str = "",
) -> Callable[Concatenate[S, P], R]:
    """The public method that hands ``flow_method``'s flow to ``run`` (a client's way of running
    flows), dressed as what it is: the flow's name without its underscore, its docstring and
    parameters, and what the caller gets (``returns``, by default what the flow returns)."""

    def method(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        return run(flow_method(self, *args, **kwargs))

    functools.update_wrapper(method, flow_method)
    method.__name__ = method.__qualname__ = flow_method.__name__.lstrip("_")
    del method.__wrapped__  # type: ignore[attr-defined]  # help() would show the flow's signature
    signature = inspect.signature(flow_method)
    returns = returns or str(signature.return_annotation).removeprefix("Flow[").removesuffix("]")
    method.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
    return method
