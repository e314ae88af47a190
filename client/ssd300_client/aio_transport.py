"""One Triton server over gRPC or HTTP with asyncio (tritonclient.grpc.aio / tritonclient.http.aio).

The asyncio twin of :class:`ssd300_client.transport.Connection`. One aio client serves every
concurrent call; it is created on first use, inside the running event loop.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from .errors import SSD300Error
from .transport import InferRequest, build_tensors, client_module, ready_models, translated_errors

log = logging.getLogger(__name__)


class AsyncConnection:
    def __init__(self, url: str, *, protocol: str, timeout_s: float) -> None:
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self.where = f"{url} ({protocol})"
        self._module = client_module(protocol)
        self._client = None
        self._closed = False

    def _get_client(self):
        if self._closed:
            raise SSD300Error("the detector is closed")
        if self._client is None:
            if self.protocol == "grpc":
                import tritonclient.grpc.aio as aio
            else:
                import tritonclient.http.aio as aio
            kwargs = {} if self.protocol == "grpc" else {"conn_timeout": self.timeout_s}
            self._client = aio.InferenceServerClient(self.url, **kwargs)
        return self._client

    def _timeout_kwargs(self) -> dict:
        # gRPC takes a deadline per call; the aiohttp session carries HTTP's (conn_timeout).
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    async def is_model_ready(self, model: str) -> bool:
        with translated_errors(self.where, model, control=True):
            return await self._get_client().is_model_ready(model, **self._timeout_kwargs())

    async def model_config(self, model: str) -> dict:
        with translated_errors(self.where, model, control=True):
            if self.protocol == "grpc":
                return await self._get_client().get_model_config(
                    model, as_json=True, **self._timeout_kwargs()
                )
            return await self._get_client().get_model_config(model)

    async def ready_models(self) -> list[str]:
        with translated_errors(self.where, "", control=True):
            if self.protocol == "grpc":
                index = await self._get_client().get_model_repository_index(
                    as_json=True, **self._timeout_kwargs()
                )
            else:
                index = await self._get_client().get_model_repository_index()
            return ready_models(index)

    async def register_shared_memory(self, name: str, key: str, byte_size: int) -> None:
        with translated_errors(self.where, "", control=True):
            await self._get_client().register_system_shared_memory(name, key, byte_size)

    async def unregister_shared_memory(self, name: str) -> None:
        with translated_errors(self.where, "", control=True):
            await self._get_client().unregister_system_shared_memory(name)

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        inputs, outputs = build_tensors(self._module, request)
        with translated_errors(self.where, request.model):
            result = await self._get_client().infer(
                request.model,
                inputs,
                outputs=outputs,
                parameters=request.parameters,
                **self._timeout_kwargs(),
            )
        return {name: result.as_numpy(name) for name in request.outputs}

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except (Exception, asyncio.CancelledError):
                log.debug("closing the aio client for %s failed", self.where, exc_info=True)
