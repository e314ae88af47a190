"""Video files in and out with PyAV (the ``[video]`` extra): frames decoded one at a time,
annotated frames encoded as H.264 MP4. Nothing here holds more than one frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"})
_FALLBACK_FPS = 25.0  # when a container states no frame rate


class VideoError(Exception):
    """A video could not be opened, decoded or written, or PyAV is not installed."""


def _av(path: str | Path) -> Any:
    """PyAV, or a VideoError naming ``path`` (the CLI reports it as that input skipped)."""
    try:
        import av
    except ImportError:
        raise VideoError(f"{path}: video needs PyAV: pip install 'ssd300-triton[video]' (or av)") from None
    return av


@dataclass(frozen=True)
class Frame:
    index: int  # position in the video, from 0 (sampled frames keep their original index)
    time_s: float  # presentation time
    pixels: np.ndarray  # uint8 [H, W, 3] RGB


class VideoReader:
    """The frames of a video's first video stream, decoded lazily."""

    def __init__(self, path: str | Path) -> None:
        av = _av(path)
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as exc:
            raise VideoError(f"{path}: not a video PyAV can read ({exc})") from exc
        self._stream.thread_type = "AUTO"
        self.path = Path(path)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else _FALLBACK_FPS
        self.width, self.height = self._stream.codec_context.width, self._stream.codec_context.height
        self.frame_count = int(self._stream.frames or 0)  # 0: the container does not say

    def frames(self, *, every: int = 1) -> Iterator[Frame]:
        """Every ``every``-th frame (0, every, 2 × every, …)."""
        av = _av(self.path)
        try:
            for index, frame in enumerate(self._container.decode(self._stream)):
                if index % every:
                    continue
                time_s = float(frame.time) if frame.time is not None else index / self.fps
                yield Frame(index, time_s, frame.to_ndarray(format="rgb24"))
        except av.FFmpegError as exc:
            raise VideoError(f"{self.path}: decoding failed ({exc})") from exc

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class VideoWriter:
    """H.264 (libx264, yuv420p) in MP4. yuv420p needs even sizes, so an odd width or height
    loses its last column or row."""

    def __init__(self, path: str | Path, *, fps: float, width: int, height: int) -> None:
        av = _av(path)
        self.path = Path(path)
        try:
            self._container = av.open(str(path), mode="w")
            self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        except av.FFmpegError as exc:
            raise VideoError(f"{path}: cannot write an H.264 video ({exc})") from exc
        self._stream.width, self._stream.height = width - width % 2, height - height % 2
        self._stream.pix_fmt = "yuv420p"
        self._frame_class = av.VideoFrame
        self._errors = (av.FFmpegError, OSError)  # PyAV's errors (a full disk: av.error.OSError)
        self._failed = self._closed = False

    def write(self, pixels: np.ndarray) -> None:
        """One uint8 [H, W, 3] RGB frame. Raises VideoError when it cannot be encoded or written
        (and again for every later frame: the file is unusable then)."""
        if self._failed:
            raise VideoError(f"{self.path}: an earlier frame could not be written")
        pixels = pixels[: self._stream.height, : self._stream.width]
        try:
            frame = self._frame_class.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            self._container.mux(self._stream.encode(frame))
        except self._errors as exc:
            # Muxing again after a failed write segfaults (PyAV 18): never mux again.
            self._failed = True
            raise VideoError(f"{self.path}: writing a frame failed ({exc})") from exc

    def close(self) -> None:
        """Flush the encoder and finish the file (once). Raises VideoError when that fails."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                if not self._failed:
                    self._container.mux(self._stream.encode())  # flush the encoder's delayed frames
            finally:
                self._container.close()
        except self._errors as exc:
            raise VideoError(f"{self.path}: finishing the video failed ({exc})") from exc

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
