"""The asyncio client: :class:`AsyncDetector` (tritonclient.grpc.aio / tritonclient.http.aio)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np

from . import contract
from .aio_transport import AsyncConnection
from .detector_base import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S, DetectorBase, Outcome
from .errors import InvalidInputError, ModelNotReadyError, ServerUnavailableError, SSD300Error
from .preprocess import ImageInput, PreparedImage, describe
from .results import Detections
from .retry import DEFAULT_RETRIES, backoff_delays_s
from .transport import config_parameters

log = logging.getLogger(__name__)
T = TypeVar("T")


class AsyncDetector(DetectorBase):
    """The asyncio flavour of :class:`~ssd300_client.Detector`: same options, same results.

    Decoding and resizing run in worker threads (``asyncio.to_thread``) so the event loop
    stays responsive. Use ``async with`` or ``await detector.close()``.
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
            connection_class=AsyncConnection,
        )

    async def check_ready(self) -> None:
        """Raise :class:`ServerUnavailableError` or :class:`ModelNotReadyError` when no server
        serves the model."""

        async def check(connection: AsyncConnection) -> None:
            await self._ensure_ready(connection, force=True)

        await self._with_failover(check)

    async def detect(self, image: ImageInput, *, threshold: float | None = None) -> Detections:
        """Detect objects in one image: a path, file bytes, a PIL image or a uint8 array (RGB)."""
        prepared = await asyncio.to_thread(self._prepare, image, name=describe(image, fallback="image"))
        [outcome] = (await self._infer_isolating_bad_images([(0, prepared)])).values()
        if isinstance(outcome, SSD300Error):
            raise outcome
        return outcome if threshold is None else outcome.filter(threshold)

    async def detect_many(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Detections]:
        """Detections for each image in input order; see :meth:`Detector.detect_many`."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        slots = asyncio.Semaphore(concurrency)

        async def run(batch: list[tuple[int, ImageInput]]) -> list[tuple[int, Outcome]]:
            async with slots:
                prepared, outcomes = await asyncio.to_thread(self._prepare_batch, batch)
                if prepared:
                    outcomes.update(await self._infer_isolating_bad_images(prepared))
            return [(index, outcomes[index]) for index, _ in batch]

        tasks = [asyncio.ensure_future(run(batch)) for batch in self._batches(images, batch_size)]
        try:
            batches = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        results = []
        for _, outcome in (pair for batch in batches for pair in batch):
            if isinstance(outcome, SSD300Error) and not return_exceptions:
                raise outcome
            results.append(
                outcome.filter(threshold)
                if threshold is not None and isinstance(outcome, Detections)
                else outcome
            )
        return results

    async def close(self) -> None:
        """Unregister and free shared memory, close the connections. Idempotent."""
        pool, self._shm_pool = self._shm_pool, None
        if pool is not None:
            connections = {connection.url: connection for connection in self._connections}
            for region in pool.regions():
                for url in region.registered_on:
                    try:
                        await connections[url].unregister_shared_memory(region.name)
                    except SSD300Error as exc:
                        log.debug("could not unregister %s from %s: %s", region.name, url, exc)
            pool.close()
        for connection in self._connections:
            await connection.close()

    async def __aenter__(self) -> AsyncDetector:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncDetector({list(self.urls)!r}, protocol={self.protocol!r}, model={self.model!r})"

    async def _infer_isolating_bad_images(
        self, prepared: list[tuple[int, PreparedImage]]
    ) -> dict[int, Outcome]:
        items = [item for _, item in prepared]
        try:
            results = await self._with_failover(lambda connection: self._infer_on(connection, items))
        except InvalidInputError as exc:
            if not self.server_side_decode:
                raise
            if len(prepared) == 1:
                return {prepared[0][0]: self._image_error(exc, items[0])}
            outcomes: dict[int, Outcome] = {}
            for single in prepared:
                outcomes.update(await self._infer_isolating_bad_images([single]))
            return outcomes
        return {index: result for (index, _), result in zip(prepared, results, strict=True)}

    async def _ensure_ready(self, connection: AsyncConnection, *, force: bool = False) -> None:
        if connection.url in self._ready_urls and not force:
            return
        if not await connection.is_model_ready(self.model):
            try:
                ready = await connection.ready_models()
            except SSD300Error:
                ready = None
            raise self._not_ready(connection.url, ready)
        if self._mark_ready(connection.url):
            try:
                parameters = config_parameters(await connection.model_config(contract.NETWORK_MODEL))
            except SSD300Error as exc:
                log.debug("could not read the weights' provenance from %s: %s", connection.url, exc)
                return
            self._note_weights(parameters.get(contract.WEIGHTS_PARAMETER))

    async def _infer_on(self, connection: AsyncConnection, items: list[PreparedImage]) -> list[Detections]:
        await self._ensure_ready(connection)
        if self._uses_shared_memory(connection.url):
            pixels = np.stack([item.pixels for item in items])
            with self._shm_pool.lease(pixels.nbytes) as region:
                region.write(pixels)
                if await self._register(connection, region):
                    return self._results(await connection.infer(self._request(items, region)), items)
        return self._results(await connection.infer(self._request(items)), items)

    async def _register(self, connection: AsyncConnection, region) -> bool:
        if connection.url in region.registered_on:
            return True
        try:
            await connection.register_shared_memory(region.name, region.key, region.byte_size)
        except SSD300Error as exc:
            self._shared_memory_refused(connection.url, exc)
            return False
        region.registered_on.add(connection.url)
        return True

    async def _with_failover(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        errors: list[SSD300Error] = []
        for delay_s in backoff_delays_s(self.retries):
            if delay_s:
                log.info("no server reachable; retrying in %.2f s", delay_s)
                await asyncio.sleep(delay_s)
            worth_retrying = False
            for position, connection in self._failover_order():
                try:
                    result = await operation(connection)
                except (ServerUnavailableError, ModelNotReadyError) as exc:
                    errors.append(exc)
                    worth_retrying |= self._failed_on(connection.url, exc)
                    continue
                self._preferred = position
                return result
            if not worth_retrying:
                break
        raise self._final_error(errors)
