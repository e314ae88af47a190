"""Real request payloads from the sample photographs, prepared once per process.

Detector requests carry client-side preprocessed uint8 images [B, 300, 300, 3] (what
``ssd300_detector`` takes); server-side-decode requests carry the JPEG files' bytes [B, 1]
(what ``ssd300_image`` takes). Preprocessing happens once, not per request, so the load
generator measures the server rather than its own image resizing.

Imports ``ssd300_client``, whose package imports ``tritonclient.grpc``: under Locust, import
this module only after gRPC's gevent support is initialised (see triton_user.py).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from ssd300_common import samples
from ssd300_common.imaging import decode_image, resize_for_model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class SampleImages:
    """The photos of a folder as model inputs and as encoded files, served round-robin: by
    default $SSD300_SAMPLES_DIR (e.g. your own images), else the client's sample photos (package
    data, so also inside the load-test image, which installs the client)."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or Path(os.environ.get("SSD300_SAMPLES_DIR") or samples.folder())
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")

    @cached_property
    def encoded(self) -> list[bytes]:
        return [path.read_bytes() for path in self.paths]

    @cached_property
    def pixels(self) -> np.ndarray:
        """uint8 [n, 300, 300, 3]: each photo, then each photo mirrored (twice the variety)."""
        decoded = (decode_image(data, name=str(path)) for path, data in zip(self.paths, self.encoded))
        photos = np.stack([resize_for_model(image) for image in decoded])
        return np.concatenate([photos, photos[:, :, ::-1]])

    def pixel_batch(self, size: int, start: int = 0) -> np.ndarray:
        """uint8 [size, 300, 300, 3], C-contiguous, photos taken round-robin from ``start``."""
        picks = [(start + i) % len(self.pixels) for i in range(size)]
        return np.ascontiguousarray(self.pixels[picks])

    def encoded_batch(self, size: int, start: int = 0) -> np.ndarray:
        """object [size, 1] of file bytes, the BYTES tensor ``ssd300_image`` takes."""
        picks = [self.encoded[(start + i) % len(self.encoded)] for i in range(size)]
        return np.array(picks, dtype=object).reshape(size, 1)
