"""What ``ssd300-detect`` reads: files, folders, glob patterns and ``http(s)://`` image URLs,
sorted into images and videos; URLs are downloaded with a timeout and a size limit."""

from __future__ import annotations

import functools
import glob
import http.client
import io
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .video import VIDEO_SUFFIXES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
URL_SCHEMES = ("http://", "https://")
DEFAULT_MAX_DOWNLOAD_MB = 50.0
_CHUNK_BYTES = 1 << 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DownloadError(Exception):
    """A URL could not be fetched within the limits; the message says why."""


@dataclass
class Inputs:
    """``images`` and ``videos`` in input order without repeats (images: paths or URLs), and
    the inputs that named nothing."""

    images: list[str | Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def is_url(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.lower().startswith(URL_SCHEMES)


def collect_inputs(specs: Sequence[str], *, recursive: bool = False) -> Inputs:
    """Folders give their image and video files (sorted; with ``recursive`` their subfolders'
    too); a file named explicitly is tried whatever its suffix (a video suffix makes it a video)."""
    inputs = Inputs()
    seen: set[str | Path] = set()
    for spec in specs:
        if is_url(spec):
            matches: list[str | Path] = [spec]
        else:
            matches = list(_local_files(spec, recursive=recursive))
            if not matches and not Path(spec).is_dir():
                inputs.missing.append(spec)
        for match in matches:
            if match in seen:
                continue
            seen.add(match)
            if isinstance(match, Path) and match.suffix.lower() in VIDEO_SUFFIXES:
                inputs.videos.append(match)
            else:
                inputs.images.append(match)
    return inputs


def _local_files(spec: str, *, recursive: bool) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        found = path.rglob("*") if recursive else path.iterdir()
        wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES
        return sorted(p for p in found if p.is_file() and p.suffix.lower() in wanted)
    if path.exists():
        return [path]
    if glob.has_magic(spec):
        return sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    return []


def stem(name: str | Path) -> str:
    """The file name without suffix, for a path or a URL (its path's last part)."""
    if is_url(name):
        return PurePosixPath(urlsplit(str(name)).path).stem or "download"
    return Path(name).stem


def suffix(name: str | Path) -> str:
    if is_url(name):
        return PurePosixPath(urlsplit(str(name)).path).suffix.lower()
    return Path(name).suffix.lower()


def download(url: str, folder: Path, *, number: int, timeout_s: float, max_bytes: int) -> Path:
    """Fetch ``url`` into ``folder``: at most ``max_bytes`` (with or without a Content-Length),
    the whole transfer (connection, redirects, headers, body) within ``timeout_s``.

    Redirects are followed to http(s) URLs only. Raises DownloadError naming the URL.
    """
    deadline = time.monotonic() + timeout_s
    opener = urllib.request.build_opener(
        _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline), _HttpOnlyRedirects()
    )
    request = urllib.request.Request(url, headers={"User-Agent": "ssd300-detect"})
    try:
        with opener.open(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise DownloadError(f"{url}: {int(length)} bytes, over the {max_bytes}-byte limit")
            chunks, size = [], 0
            while chunk := response.read1(_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"{url}: more than the {max_bytes}-byte limit")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or time.monotonic() >= deadline:
            raise DownloadError(f"{url}: not downloaded within {timeout_s:g} s (--timeout)") from exc
        raise DownloadError(f"{url}: cannot download ({reason})") from exc
    target = folder / f"{number:06d}_{_UNSAFE.sub('_', stem(url))[:80]}{suffix(url)[:8]}"
    target.write_bytes(b"".join(chunks))
    return target


class _DeadlineReader(io.RawIOBase):
    """A socket's reader whose every read may take only the time left before ``deadline``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._raw, self._deadline = sock, sock.makefile("rb", buffering=0), deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(left)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()  # the socket's own reader: it closes the socket once nothing uses it
        super().close()


class _DeadlineSocket:
    """A connected socket whose reader (http.client reads the status, headers and body
    through ``makefile``) stops at ``deadline``; everything else is the socket's."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    """http.client's connection whose connect (TLS handshake included) and every read end by
    ``deadline``."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def connect(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.timeout = min(self.timeout, left) if isinstance(self.timeout, float | int) else left
        super().connect()  # TCP, then (for HTTPS, next in the method order) the TLS handshake
        self.sock = _DeadlineSocket(self.sock, self.deadline)


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, http.client.HTTPSConnection):
    """The same over TLS: HTTPSConnection's connect runs inside the deadline's."""


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_DeadlineHTTPConnection, deadline=self.deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()  # the default SSL context: the system's trust store
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_DeadlineHTTPSConnection, deadline=self.deadline), req)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// too; an image URL's may go to http(s) only."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise DownloadError(f"{req.full_url}: redirected to a {scheme or 'schemeless'} URL ({newurl})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
