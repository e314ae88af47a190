"""Which server a load test talks to, over which protocol.

Locust's ``--host`` names one endpoint and its form selects the protocol, as the Helm chart
passes it: ``http://svc:8000`` (``https://``) is Triton's HTTP endpoint, a bare ``svc:8001``
(``grpc://``, ``grpcs://``) its gRPC endpoint. ``--http-url`` / ``--grpc-url`` add or override
the endpoint of either protocol, so one run can drive both. Addresses are read as the client
reads them (``ssd300_client.endpoints``: a missing port is Triton's default).

Imports ``ssd300_client``: under Locust, only after gRPC's gevent support is initialised
(triton_user.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ssd300_client.endpoints import parse_url, scheme_protocol

GRPC, HTTP = "grpc", "http"


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "grpc" or "http"
    address: str  # host:port, the form tritonclient takes
    ssl: bool = False


def parse_endpoint(url: str, *, protocol: str | None = None) -> Endpoint:
    """``[scheme://]host[:port]``: the scheme names the protocol, else ``protocol``, else gRPC.
    A scheme of the other protocol than ``protocol`` is refused."""
    protocol = protocol or scheme_protocol(url) or GRPC
    return Endpoint(protocol, *parse_url(url, protocol=protocol))


def resolve_endpoints(host: str | None, *, grpc_url: str = "", http_url: str = "") -> dict[str, Endpoint]:
    """Endpoint per protocol: the host's protocol from ``host``, the explicit URLs on top."""
    endpoints = {}
    if host:
        endpoint = parse_endpoint(host)
        endpoints[endpoint.protocol] = endpoint
    for protocol, url in ((GRPC, grpc_url), (HTTP, http_url)):
        if url:
            endpoints[protocol] = parse_endpoint(url, protocol=protocol)
    return endpoints
