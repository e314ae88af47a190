"""The detection core that the blocking :class:`~ssd300_client.Detector` and the
:class:`~ssd300_client.AsyncDetector` share: options, readiness and weights bookkeeping,
failover with backoff, shared memory, bad-image isolation, batching and bounded read-ahead.

Each public operation is written once here as a flow (:mod:`ssd300_client.flow`): a
generator that yields the I/O it needs and never performs it. The two clients run the same
flows, one by calling, the other by awaiting.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType
from typing import Any, ClassVar, TypeVar

from ssd300_common import contract

from .endpoints import check_protocol, is_loopback, parse_url, split_urls
from .errors import (
    InvalidImageError,
    InvalidInputError,
    ModelNotReadyError,
    RandomWeightsWarning,
    ServerUnavailableError,
    SSD300Error,
)
from .exchange import IMAGE_BYTES, detections_from, detector_request, image_error, image_request, pixels_of
from .flow import Flow, Workers, call, close, emit, pause, wait, work, workers
from .preprocess import ImageInput, PreparedImage, describe, prepare_for_model, prepare_for_server_decode
from .results import Detections
from .retry import DEFAULT_RETRIES, backoff_delays_s, rotation
from .shared_memory import Region, SharedMemoryPool
from .tls import TLS
from .transport import Endpoint, Operations, config_parameters

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT_S = 60.0  # per request; a CPU server needs ~0.4 s per image, a batch of 8 ~3 s
DEFAULT_BATCH_SIZE = 8  # the CPU config's preferred batch; GPUs gain up to 64
DEFAULT_CONCURRENCY = 4  # requests in flight: the client prepares the next while the server works
# Batches read ahead of the caller, per request in flight: while one batch is at the server the
# next is decoded, so `concurrency` requests keep at most 2 × concurrency batches in memory.
READ_AHEAD_PER_REQUEST = 2
SHARED_MEMORY_MODES = ("auto", True, False)

RANDOM_WEIGHTS_MESSAGE = (
    "the server runs SSD300 with RANDOM weights (model config parameter weights=random): "
    "its detections are meaningless. Build the model with WEIGHTS=nvidia for real ones."
)

#: What one image gives: its detections, or why it could not be read.
Outcome = Detections | InvalidImageError
Batch = list[tuple[int, ImageInput]]


class DetectorBase:
    """Options and state shared by both detectors, and the flows they run; see
    :class:`~ssd300_client.Detector` for the options."""

    _connection_class: ClassVar[type[Endpoint]]  # the client's transport: blocking or asyncio

    def __init__(
        self,
        url: str | Iterable[str],
        *,
        protocol: str = "grpc",
        model: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        server_side_decode: bool = False,
        shared_memory: str | bool = "auto",
        parameters: Mapping[str, str | int | float | bool] | None = None,
        tls: TLS | bool | None = None,
    ) -> None:
        self.protocol = check_protocol(protocol)
        if shared_memory not in SHARED_MEMORY_MODES:
            raise ValueError(f"shared_memory must be 'auto', True or False, got {shared_memory!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        parsed = [parse_url(item, protocol=protocol) for item in split_urls(url)]
        self.urls = tuple(address for address, _ in parsed)
        # TLS for a grpcs:// or https:// address, or for every address when ``tls`` is given.
        settings = tls if isinstance(tls, TLS) else TLS() if tls else None
        self.tls = tuple(settings or (TLS() if secure else None) for _, secure in parsed)
        self.server_side_decode = bool(server_side_decode)
        self.model = model or (contract.IMAGE_MODEL if server_side_decode else contract.DETECTOR_MODEL)
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self.shared_memory = shared_memory
        self.parameters = dict(parameters) if parameters else None
        #: The weights the server reports for ssd300 ("random", "nvidia", "file"), once known.
        self.server_weights: str | None = None
        self._operations = Operations(self.protocol, timeout_s=self.timeout_s)
        self._connections: list[Any] = [
            self._connection_class(item, protocol=protocol, timeout_s=self.timeout_s, tls=settings)
            for item, settings in zip(self.urls, self.tls)
        ]
        self._preferred = 0  # index of the last connection that answered
        self._ready_urls: set[str] = set()
        self._shm_refused: set[str] = set()
        self._weights_checked = False
        self._state_lock = threading.Lock()
        self._shm_pool: SharedMemoryPool | None = None
        if not self.server_side_decode and any(self._shared_memory_wanted(url) for url in self.urls):
            self._shm_pool = SharedMemoryPool(IMAGE_BYTES)
            # Safety net for a detector never closed: POSIX regions outlive the process otherwise.
            weakref.finalize(self, self._shm_pool.close)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.urls)!r}, protocol={self.protocol!r}, model={self.model!r})"

    # ----- the public operations, as flows (the clients give them their names) -----

    def _check_ready(self) -> Flow[None]:
        """Ask the servers now; raise :class:`ServerUnavailableError` or :class:`ModelNotReadyError`
        when none serves the model. (Detection calls check on first use anyway.)"""
        return (yield from self._with_failover(lambda connection: self._ensure_ready(connection, force=True)))

    def _detect(self, image: ImageInput, *, threshold: float | None = None) -> Flow[Detections]:
        """Detect objects in one image: a path, file bytes, a PIL image or a uint8 array (RGB)."""
        prepared = yield work(self._prepare, image, describe(image, fallback="image"))
        [outcome] = (yield from self._infer_isolating_bad_images([(0, prepared)])).values()
        if isinstance(outcome, SSD300Error):
            raise outcome
        return outcome if threshold is None else outcome.filter(threshold)

    def _detect_many(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        return_exceptions: bool = False,
    ) -> Flow[list[Outcome]]:
        """Detections for each image, in input order; ``batch_size`` images per request and
        ``concurrency`` requests in flight. Images are read lazily, at most
        ``2 × concurrency`` batches ahead of the answers.

        An unreadable image raises its :class:`InvalidImageError`, or with
        ``return_exceptions=True`` takes that exception's place in the list.
        """
        return (
            yield from self._pipeline(
                images,
                concurrency,
                batch_size,
                threshold,
                stream=False,
                raise_bad_images=not return_exceptions,
            )
        )

    def _detect_iter(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
    ) -> Flow[list[Outcome]]:
        """``(index, Detections or InvalidImageError)`` for each image in input order, as results
        arrive. Images are read lazily, at most ``2 × concurrency`` batches ahead of the
        caller, so a long iterable (a folder of photos, a video's frames) is never all in
        memory; server failures (unreachable, timeout) raise.
        """
        return (
            yield from self._pipeline(
                images, concurrency, batch_size, threshold, stream=True, raise_bad_images=False
            )
        )

    def _close(self) -> Flow[None]:
        """Unregister and free shared memory, close the connections. Idempotent."""
        pool, self._shm_pool = self._shm_pool, None
        if pool is not None:
            connections = {connection.url: connection for connection in self._connections}
            try:
                for region in pool.regions():
                    for url in region.registered_on:
                        try:
                            yield call(connections[url], self._operations.unregister_region(region.name))
                        except SSD300Error as exc:  # a dead server has forgotten it already
                            log.debug("could not unregister %s from %s: %s", region.name, url, exc)
            finally:
                pool.close()
        for connection in self._connections:
            yield close(connection)

    # ----- batches and read-ahead -----

    def _pipeline(
        self,
        images: Iterable[ImageInput],
        concurrency: int,
        batch_size: int,
        threshold: float | None,
        *,
        stream: bool,
        raise_bad_images: bool,
    ) -> Flow[list[Outcome]]:
        """Batches run ``concurrency`` at a time, answered in input order: emitted as they come
        (``stream``) or returned as one list. At most ``READ_AHEAD_PER_REQUEST × concurrency``
        batches are read and not yet answered, whatever the length of ``images``."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not 1 <= batch_size <= contract.MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{contract.MAX_BATCH_SIZE}, got {batch_size}")
        read_ahead = READ_AHEAD_PER_REQUEST * concurrency
        started: deque[Any] = deque()  # handles of the batches not yet answered, oldest first
        results: list[Outcome] = []

        def answer_oldest() -> Flow[None]:
            pairs = _filtered((yield wait(started.popleft())), threshold)
            if raise_bad_images:
                for _, outcome in pairs:
                    if isinstance(outcome, InvalidImageError):
                        raise outcome
            if stream:
                yield emit(pairs)
            else:
                results.extend(outcome for _, outcome in pairs)

        pool: Workers = yield workers(concurrency)
        with pool:
            for batch in _batches(images, batch_size):
                started.append(pool.start(self._detect_batch(batch)))
                if len(started) >= read_ahead:
                    yield from answer_oldest()
            while started:
                yield from answer_oldest()
        return results

    def _detect_batch(self, batch: Batch) -> Flow[list[tuple[int, Outcome]]]:
        prepared, outcomes = yield work(self._prepare_batch, batch)
        if prepared:
            outcomes.update((yield from self._infer_isolating_bad_images(prepared)))
        return [(index, outcomes[index]) for index, _ in batch]

    def _prepare(self, image: ImageInput, name: str) -> PreparedImage:
        if self.server_side_decode:
            return prepare_for_server_decode(image, name=name)
        return prepare_for_model(image, name=name)

    def _prepare_batch(self, batch: Batch) -> tuple[list[tuple[int, PreparedImage]], dict[int, Outcome]]:
        prepared: list[tuple[int, PreparedImage]] = []
        failed: dict[int, Outcome] = {}
        for index, image in batch:
            try:
                prepared.append((index, self._prepare(image, describe(image, fallback=f"images[{index}]"))))
            except InvalidImageError as exc:
                failed[index] = _without_tracebacks(exc)
        return prepared, failed

    def _infer_isolating_bad_images(
        self, prepared: list[tuple[int, PreparedImage]]
    ) -> Flow[dict[int, Outcome]]:
        """Results by index. The server rejects a whole batch for one undecodable file
        (server-side decode), so a rejected batch is retried image by image to find it."""
        items = [item for _, item in prepared]
        try:
            results = yield from self._with_failover(lambda connection: self._infer_on(connection, items))
        except InvalidInputError as exc:
            if not self.server_side_decode:
                raise
            if len(prepared) == 1:
                return {prepared[0][0]: _without_tracebacks(image_error(exc, items[0]))}
            outcomes: dict[int, Outcome] = {}
            for single in prepared:
                outcomes.update((yield from self._infer_isolating_bad_images([single])))
            return outcomes
        return {index: result for (index, _), result in zip(prepared, results, strict=True)}

    # ----- one request on one server -----

    def _infer_on(self, connection: Any, items: list[PreparedImage]) -> Flow[list[Detections]]:
        yield from self._ensure_ready(connection)
        if self.server_side_decode:
            request = image_request(self.model, items, self.parameters)
        else:
            pool = self._shm_pool
            if pool is not None and self._uses_shared_memory(connection.url):
                pixels = pixels_of(items)
                with pool.lease(pixels.nbytes) as region:
                    region.write(pixels)
                    if (yield from self._register(connection, region)):
                        request = detector_request(self.model, items, self.parameters, region)
                        return detections_from(
                            (yield call(connection, self._operations.infer(request))), items
                        )
            request = detector_request(self.model, items, self.parameters)
        return detections_from((yield call(connection, self._operations.infer(request))), items)

    def _register(self, connection: Any, region: Region) -> Flow[bool]:
        if connection.url in region.registered_on:
            return True
        try:
            yield call(
                connection, self._operations.register_region(region.name, region.key, region.byte_size)
            )
        except SSD300Error as exc:
            self._shared_memory_refused(connection.url, exc)
            return False
        region.registered_on.add(connection.url)
        return True

    def _ensure_ready(self, connection: Any, *, force: bool = False) -> Flow[None]:
        if connection.url in self._ready_urls and not force:
            return
        if not (yield call(connection, self._operations.model_ready(self.model))):
            try:
                ready = yield call(connection, self._operations.ready_models())
            except SSD300Error:
                ready = None
            raise self._not_ready(connection.url, ready)
        if self._mark_ready(connection.url):
            try:
                config = yield call(connection, self._operations.model_config(contract.NETWORK_MODEL))
            except SSD300Error as exc:  # provenance is a courtesy; a custom repository may lack it
                log.debug("could not read the weights' provenance from %s: %s", connection.url, exc)
                return
            self._note_weights(config_parameters(config).get(contract.WEIGHTS_PARAMETER))

    def _with_failover(self, operation: Callable[[Any], Flow[T]]) -> Flow[T]:
        """``operation`` on the servers in turn, the last that answered first, until one does;
        rounds over all of them are retried with backoff while none is reachable."""
        errors: list[SSD300Error] = []
        for delay_s in backoff_delays_s(self.retries):
            if delay_s:
                log.info("no server reachable; retrying in %.2f s", delay_s)
                yield pause(delay_s)
            worth_retrying = False
            for position, connection in rotation(list(enumerate(self._connections)), self._preferred):
                try:
                    result = yield from operation(connection)
                except (ServerUnavailableError, ModelNotReadyError) as exc:
                    errors.append(exc)
                    worth_retrying |= self._failed_on(connection.url, exc)
                    continue
                self._preferred = position
                return result
            if not worth_retrying:
                break
        raise self._final_error(errors)

    # ----- shared memory -----

    def _shared_memory_wanted(self, url: str) -> bool:
        return self.shared_memory is True or (self.shared_memory == "auto" and is_loopback(url))

    def _uses_shared_memory(self, url: str) -> bool:
        return self._shm_pool is not None and self._shared_memory_wanted(url) and url not in self._shm_refused

    def _shared_memory_refused(self, url: str, error: SSD300Error) -> None:
        """In "auto" mode a server that cannot map our regions (another container, say) gets bytes."""
        if self.shared_memory is True or isinstance(error, ServerUnavailableError):
            raise error
        log.warning(
            "%s cannot use this machine's shared memory (%s); sending images over the socket", url, error
        )
        self._shm_refused.add(url)

    # ----- readiness, weights, failover bookkeeping -----

    def _not_ready(self, url: str, ready: list[str] | None) -> ModelNotReadyError:
        known = f"; ready models there: {', '.join(ready) or 'none'}" if ready is not None else ""
        where = f"{url} ({self.protocol})"
        return ModelNotReadyError(
            f"model {self.model!r} is not ready on {where}: unknown there or still loading{known}"
        )

    def _mark_ready(self, url: str) -> bool:
        """Record that ``url`` serves the model; True when the weights still need checking."""
        with self._state_lock:
            self._ready_urls.add(url)
            first, self._weights_checked = not self._weights_checked, True
            return first

    def _note_weights(self, weights: str | None) -> None:
        self.server_weights = weights or None
        if weights == contract.RANDOM_WEIGHTS:
            log.warning(RANDOM_WEIGHTS_MESSAGE)
            warnings.warn(
                RANDOM_WEIGHTS_MESSAGE, RandomWeightsWarning, stacklevel=_first_frame_outside_package()
            )

    def _failed_on(self, url: str, error: SSD300Error) -> bool:
        """Bookkeeping after a connection failed; True when another round may help."""
        self._ready_urls.discard(url)
        log.info("%s%s", error, "; trying the next server" if len(self._connections) > 1 else "")
        return isinstance(error, ServerUnavailableError)

    def _final_error(self, errors: list[SSD300Error]) -> SSD300Error:
        if len(self._connections) == 1:
            return errors[-1]
        kind = (
            ModelNotReadyError
            if all(isinstance(e, ModelNotReadyError) for e in errors)
            else ServerUnavailableError
        )
        summary = kind(
            f"no server could run {self.model!r} ({len(errors)} attempts): "
            + "; ".join(dict.fromkeys(map(str, errors)))
        )
        summary.__cause__, summary.__suppress_context__ = errors[-1], True
        return summary


def _batches(images: Iterable[ImageInput], batch_size: int) -> Iterator[Batch]:
    """``(index, image)`` pairs, ``batch_size`` at a time, read from ``images`` only as needed."""
    batch: Batch = []
    # A new pair, not enumerate()'s own: enumerate keeps the last tuple it made for reuse, and a
    # tuple stored in a batch would keep its image alive after the batch is answered.
    for index, image in enumerate(images):
        batch.append((index, image))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _without_tracebacks(error: InvalidImageError) -> InvalidImageError:
    """``error`` (and its causes) as a value the caller may keep: a traceback's frames, and the
    frames that called them, would keep the whole batch of images alive. Its message says
    what was wrong."""
    link: BaseException | None = error
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return error


def _filtered(pairs: list[tuple[int, Outcome]], threshold: float | None) -> list[tuple[int, Outcome]]:
    if threshold is None:
        return pairs
    return [(i, o.filter(threshold) if isinstance(o, Detections) else o) for i, o in pairs]


def _first_frame_outside_package() -> int:
    """``stacklevel`` for warnings.warn that points at the caller's code, not at this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level
