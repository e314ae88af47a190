"""The blocking client: :class:`Detector`."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from . import contract
from .detector_base import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S, DetectorBase, Outcome
from .errors import InvalidInputError, ModelNotReadyError, ServerUnavailableError, SSD300Error
from .preprocess import ImageInput, PreparedImage, describe
from .results import Detections
from .retry import DEFAULT_RETRIES, backoff_delays_s
from .transport import Connection, config_parameters

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    ``parameters``: Triton request parameters sent with every inference; the postprocess
    reads ``score_threshold``, ``nms_iou_threshold`` and ``max_detections`` overrides from them
    (e.g. NVIDIA's COCO evaluation settings: IoU 0.50, 200 detections).

    Results keep everything the server sent (scores above its 0.05 threshold, what COCO
    evaluation needs); pass ``threshold=`` or use :meth:`Detections.filter` for display.
    A context manager; :meth:`close` releases connections and shared memory. Thread-safe.
    """

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
    ) -> None:
        super().__init__(
            url,
            protocol=protocol,
            model=model,
            timeout_s=timeout_s,
            retries=retries,
            server_side_decode=server_side_decode,
            shared_memory=shared_memory,
            parameters=parameters,
            connection_class=Connection,
        )

    # ----- public API -----

    def check_ready(self) -> None:
        """Ask the servers now; raise :class:`ServerUnavailableError` or :class:`ModelNotReadyError`
        when none serves the model. (Detection calls check on first use anyway.)"""
        self._with_failover(lambda connection: self._ensure_ready(connection, force=True))

    def detect(self, image: ImageInput, *, threshold: float | None = None) -> Detections:
        """Detect objects in one image: a path, file bytes, a PIL image or a uint8 array (RGB)."""
        prepared = self._prepare(image, name=describe(image, fallback="image"))
        [outcome] = self._infer_isolating_bad_images([(0, prepared)]).values()
        if isinstance(outcome, SSD300Error):
            raise outcome
        return outcome if threshold is None else outcome.filter(threshold)

    def detect_many(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Detections]:
        """Detections for each image, in input order; ``batch_size`` images per request and
        ``concurrency`` requests in flight.

        An unreadable image raises its :class:`InvalidImageError`, or with
        ``return_exceptions=True`` takes that exception's place in the list.
        """
        results = []
        for _, outcome in self.detect_iter(
            images, concurrency=concurrency, batch_size=batch_size, threshold=threshold
        ):
            if isinstance(outcome, SSD300Error) and not return_exceptions:
                raise outcome
            results.append(outcome)
        return results

    def detect_iter(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
    ) -> Iterator[tuple[int, Outcome]]:
        """Yield ``(index, Detections or InvalidImageError)`` in input order as results arrive.

        Images are read lazily, so a long iterable (a folder of photos) is never all in memory;
        server failures (unreachable, timeout) raise.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ssd300") as pool:
            try:
                for batch in self._batches(images, batch_size):
                    pending.append(pool.submit(self._detect_batch, batch))
                    while len(pending) > 2 * concurrency:  # bounded read-ahead
                        yield from self._filtered(pending.popleft().result(), threshold)
                while pending:
                    yield from self._filtered(pending.popleft().result(), threshold)
            finally:
                for future in pending:
                    future.cancel()

    def close(self) -> None:
        """Unregister and free shared memory, close the connections. Idempotent."""
        pool, self._shm_pool = self._shm_pool, None
        if pool is not None:
            connections = {connection.url: connection for connection in self._connections}
            for region in pool.regions():
                for url in region.registered_on:
                    try:
                        connections[url].unregister_shared_memory(region.name)
                    except SSD300Error as exc:  # a dead server has forgotten it already
                        log.debug("could not unregister %s from %s: %s", region.name, url, exc)
            pool.close()
        for connection in self._connections:
            connection.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Detector({list(self.urls)!r}, protocol={self.protocol!r}, model={self.model!r})"

    # ----- batches -----

    @staticmethod
    def _filtered(outcomes: list[tuple[int, Outcome]], threshold: float | None) -> list[tuple[int, Outcome]]:
        if threshold is None:
            return outcomes
        return [(i, o.filter(threshold) if isinstance(o, Detections) else o) for i, o in outcomes]

    def _detect_batch(self, batch: list[tuple[int, ImageInput]]) -> list[tuple[int, Outcome]]:
        prepared, outcomes = self._prepare_batch(batch)
        if prepared:
            outcomes.update(self._infer_isolating_bad_images(prepared))
        return [(index, outcomes[index]) for index, _ in batch]

    def _infer_isolating_bad_images(self, prepared: list[tuple[int, PreparedImage]]) -> dict[int, Outcome]:
        """Results by index. The server rejects a whole batch for one undecodable file
        (server-side decode), so a rejected batch is retried image by image to find it."""
        items = [item for _, item in prepared]
        try:
            results = self._with_failover(lambda connection: self._infer_on(connection, items))
        except InvalidInputError as exc:
            if not self.server_side_decode:
                raise
            if len(prepared) == 1:
                return {prepared[0][0]: self._image_error(exc, items[0])}
            outcomes: dict[int, Outcome] = {}
            for single in prepared:
                outcomes.update(self._infer_isolating_bad_images([single]))
            return outcomes
        return {index: result for (index, _), result in zip(prepared, results, strict=True)}

    # ----- one request on one server -----

    def _ensure_ready(self, connection: Connection, *, force: bool = False) -> None:
        if connection.url in self._ready_urls and not force:
            return
        if not connection.is_model_ready(self.model):
            try:
                ready = connection.ready_models()
            except SSD300Error:
                ready = None
            raise self._not_ready(connection.url, ready)
        if self._mark_ready(connection.url):
            try:
                parameters = config_parameters(connection.model_config(contract.NETWORK_MODEL))
            except SSD300Error as exc:  # provenance is a courtesy; a custom repository may lack it
                log.debug("could not read the weights' provenance from %s: %s", connection.url, exc)
                return
            self._note_weights(parameters.get(contract.WEIGHTS_PARAMETER))

    def _infer_on(self, connection: Connection, items: list[PreparedImage]) -> list[Detections]:
        self._ensure_ready(connection)
        if self._uses_shared_memory(connection.url):
            pixels = np.stack([item.pixels for item in items])
            with self._shm_pool.lease(pixels.nbytes) as region:
                region.write(pixels)
                if self._register(connection, region):
                    return self._results(connection.infer(self._request(items, region)), items)
        return self._results(connection.infer(self._request(items)), items)

    def _register(self, connection: Connection, region) -> bool:
        if connection.url in region.registered_on:
            return True
        try:
            connection.register_shared_memory(region.name, region.key, region.byte_size)
        except SSD300Error as exc:
            self._shared_memory_refused(connection.url, exc)
            return False
        region.registered_on.add(connection.url)
        return True

    def _with_failover(self, operation: Callable[[Connection], T]) -> T:
        errors: list[SSD300Error] = []
        for delay_s in backoff_delays_s(self.retries):
            if delay_s:
                log.info("no server reachable; retrying in %.2f s", delay_s)
                time.sleep(delay_s)
            worth_retrying = False
            for position, connection in self._failover_order():
                try:
                    result = operation(connection)
                except (ServerUnavailableError, ModelNotReadyError) as exc:
                    errors.append(exc)
                    worth_retrying |= self._failed_on(connection.url, exc)
                    continue
                self._preferred = position
                return result
            if not worth_retrying:
                break
        raise self._final_error(errors)
