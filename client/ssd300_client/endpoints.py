"""Server addresses: ``host:port`` strings as tritonclient wants them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

PROTOCOLS = ("grpc", "http")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}  # Triton's defaults (docs/contracts.md)
# scheme → (protocol, TLS): Triton serves TLS on gRPC itself, HTTPS through a proxy.
_SCHEMES = {
    "grpc://": ("grpc", False),
    "http://": ("http", False),
    "grpcs://": ("grpc", True),
    "https://": ("http", True),
}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def normalise_url(url: str, *, protocol: str) -> str:
    """``"host[:port]"`` (a ``grpc://``/``http://``/``grpcs://``/``https://`` scheme is dropped)
    → ``"host:port"``."""
    return parse_url(url, protocol=protocol)[0]


def scheme_protocol(url: str) -> str | None:
    """The protocol a URL's scheme names (``grpcs://`` → grpc, ``https://`` → http), or None."""
    for scheme, (protocol, _) in _SCHEMES.items():
        if url.strip().lower().startswith(scheme):
            return protocol
    return None


def parse_url(url: str, *, protocol: str) -> tuple[str, bool]:
    """``"[scheme://]host[:port]"`` → (``"host:port"``, whether the scheme asks for TLS).

    A scheme must agree with ``protocol``: ``https://`` is HTTP, ``grpcs://`` is gRPC.
    """
    text, secure = url.strip(), False
    for scheme, (scheme_protocol_, tls) in _SCHEMES.items():
        if text.lower().startswith(scheme):
            if scheme_protocol_ != protocol:
                raise ValueError(f"{url!r} is a {scheme_protocol_} address, but the protocol is {protocol}")
            text, secure = text[len(scheme) :], tls
            break
    text = text.rstrip("/")
    if not text or "/" in text:
        raise ValueError(f"expected a server address like 127.0.0.1:8001, got {url!r}")
    host, port = split_host_port(text)
    return f"{host}:{port if port is not None else DEFAULT_PORTS[protocol]}", secure


def split_host_port(address: str) -> tuple[str, int | None]:
    if address.startswith("["):  # [::1]:8001
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return f"[{host}]", _port(port, address)
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, _port(port, address)
    return address, None


def _port(text: str | None, address: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in server address {address!r}")
    return int(text)


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine (so system shared memory can reach the server)."""
    host = split_host_port(address)[0].strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_urls(urls: str | Iterable[str]) -> list[str]:
    """One address, a comma-separated string, or a list of either → a flat list."""
    items = [urls] if isinstance(urls, str) else list(urls)
    flat = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not flat:
        raise ValueError("at least one server URL is needed")
    return flat
