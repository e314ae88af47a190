"""Which server a load test talks to, over which protocol.

Locust's ``--host`` names one endpoint; its form selects the protocol, as the Helm chart passes
it: ``http://svc:8000`` (or ``https://``) is Triton's HTTP/REST endpoint, a bare ``svc:8001``
(or ``grpc://svc:8001``, ``grpcs://`` for TLS) its gRPC endpoint. ``--http-url`` /
``--grpc-url`` add or override the endpoint of either protocol, so one run can drive both.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

GRPC, HTTP = "grpc", "http"
PROTOCOLS = (GRPC, HTTP)


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "grpc" or "http"
    address: str  # host:port, the form tritonclient takes
    ssl: bool = False


def parse_endpoint(url: str, *, default_protocol: str = GRPC) -> Endpoint:
    """``http[s]://host:port[/]``, ``grpc[s]://host:port`` or ``host:port`` (→ ``default_protocol``)."""
    text = url.strip()
    if "://" not in text:
        text = f"{default_protocol}://{text}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("grpc", "grpcs", "http", "https"):
        raise ValueError(f"{url!r}: the scheme must be http, https, grpc or grpcs (or none for gRPC)")
    if not parts.hostname or parts.port is None:
        raise ValueError(f"{url!r}: expected host:port")
    if parts.path not in ("", "/"):
        raise ValueError(f"{url!r}: Triton's endpoints take no path")
    protocol = GRPC if scheme in ("grpc", "grpcs") else HTTP
    return Endpoint(protocol, parts.netloc, ssl=scheme in ("https", "grpcs"))


def resolve_endpoints(
    host: str | None, *, grpc_url: str | None = None, http_url: str | None = None
) -> dict[str, Endpoint]:
    """Endpoint per protocol: the host's protocol from ``host``, the explicit URLs on top."""
    endpoints: dict[str, Endpoint] = {}
    if host:
        endpoint = parse_endpoint(host)
        endpoints[endpoint.protocol] = endpoint
    if grpc_url:
        endpoints[GRPC] = parse_endpoint(grpc_url, default_protocol=GRPC)
    if http_url:
        endpoints[HTTP] = parse_endpoint(http_url, default_protocol=HTTP)
    for protocol, endpoint in endpoints.items():
        if endpoint.protocol != protocol:
            raise ValueError(f"--{protocol}-url {endpoint.address}: names a {endpoint.protocol} endpoint")
    return endpoints
