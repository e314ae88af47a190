"""One Triton server over gRPC or HTTP with asyncio (tritonclient.grpc.aio / tritonclient.http.aio).

The asyncio twin of :class:`ssd300_client.transport.Connection`: it makes the same
:class:`~ssd300_client.transport.Operation` values, awaiting them. One aio client serves every
concurrent call; it is created on first use, inside the running event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .errors import SSD300Error
from .tls import TLS
from .transport import Endpoint, Operation

log = logging.getLogger(__name__)


class AsyncConnection(Endpoint):
    def __init__(self, url: str, *, protocol: str, timeout_s: float, tls: TLS | None = None) -> None:
        super().__init__(url, protocol=protocol, timeout_s=timeout_s, tls=tls)
        self._client: Any = None
        self._closed = False

    def _get_client(self) -> Any:
        if self._closed:
            raise SSD300Error("the detector is closed")
        if self._client is None:
            if self.protocol == "grpc":
                import tritonclient.grpc.aio as aio
            else:
                import tritonclient.http.aio as aio
            # gRPC takes a deadline per call; the aiohttp session carries HTTP's (conn_timeout).
            kwargs: dict[str, Any] = {} if self.protocol == "grpc" else {"conn_timeout": self.timeout_s}
            if self.tls and self.protocol == "grpc":
                kwargs.update(self.tls.grpc_options())
            elif self.tls:
                kwargs.update(ssl=True, ssl_context=self.tls.ssl_context())
            self._client = aio.InferenceServerClient(self.url, **kwargs)
        return self._client

    async def call(self, operation: Operation) -> Any:
        with self.errors(operation):
            answer = await getattr(self._get_client(), operation.method)(*operation.args, **operation.kwargs)
        return operation.reply(answer)

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except (Exception, asyncio.CancelledError):
                log.debug("closing the aio client for %s failed", self.where, exc_info=True)
