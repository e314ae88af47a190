"""TLS settings for a Triton endpoint, worded for each tritonclient flavour.

Triton itself terminates TLS on gRPC only (``--grpc-use-ssl``); HTTPS reaches it through a
TLS-terminating proxy or ingress. ``grpcs://`` and ``https://`` addresses turn TLS on; the
certificate files are PEM and are read when a connection is made.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TLS:
    """``ca_cert``: the CA bundle that signed the server's certificate (default: the system's /
    certifi's trust store). ``client_cert`` + ``client_key``: this client's certificate and key,
    for servers that verify clients (mutual TLS, ``--grpc-use-ssl-mutual``)."""

    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")
        for label, path in (
            ("ca_cert", self.ca_cert),
            ("client_cert", self.client_cert),
            ("client_key", self.client_key),
        ):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{label}: no such file {path!r}")

    def grpc_options(self) -> dict[str, Any]:
        """Keyword arguments of tritonclient.grpc(.aio).InferenceServerClient (it reads the files)."""
        return {
            "ssl": True,
            "root_certificates": self.ca_cert,
            "private_key": self.client_key,
            "certificate_chain": self.client_cert,
        }

    def http_options(self) -> dict[str, Any]:
        """Keyword arguments of tritonclient.http.InferenceServerClient (geventhttpclient)."""
        options: dict[str, Any] = {}
        if self.ca_cert:
            options["ca_certs"] = self.ca_cert
        if self.client_cert:
            options.update(certfile=self.client_cert, keyfile=self.client_key)
        return {"ssl": True, "ssl_options": options}

    def ssl_context(self) -> ssl.SSLContext:
        """An SSLContext for tritonclient.http.aio (aiohttp)."""
        context = ssl.create_default_context(cafile=self.ca_cert)
        if self.client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context
