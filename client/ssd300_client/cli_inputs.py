"""What ``ssd300-detect`` reads: files, folders, glob patterns and ``http(s)://`` image URLs,
sorted into images and videos; URLs are downloaded with a timeout and a size limit."""

from __future__ import annotations

import glob
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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
    """Fetch ``url`` into ``folder``; at most ``max_bytes``, the whole transfer within ``timeout_s``.

    Only http(s) URLs, redirects included (urllib refuses others). Raises DownloadError.
    """
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": "ssd300-detect"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise DownloadError(f"{url}: {int(length)} bytes, over the {max_bytes}-byte limit")
            chunks, size = [], 0
            while chunk := response.read(_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"{url}: more than the {max_bytes}-byte limit")
                if time.monotonic() > deadline:
                    raise DownloadError(f"{url}: download took longer than {timeout_s:g} s")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot download ({reason})") from exc
    target = folder / f"{number:06d}_{_UNSAFE.sub('_', stem(url))[:80]}{suffix(url)[:8]}"
    target.write_bytes(b"".join(chunks))
    return target
