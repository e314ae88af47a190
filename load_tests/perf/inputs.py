"""perf_analyzer ``--input-data`` files holding real request payloads (the sample photos).

perf_analyzer sends the entries round-robin, one per request. A ``b64`` value is used as the
tensor's raw bytes: for the uint8 images the [300, 300, 3] array; for a BYTES tensor Triton's
serialised form, each element prefixed with its length as a little-endian uint32 (without it
the server reads the JPEG's first four bytes as a length and refuses the request).
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
from pathlib import Path

import numpy as np

from load_tests.payloads import SampleImages
from ssd300_common.contract import ENCODED_IMAGE_INPUT, IMAGES_INPUT


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def detector_input_data(pixels: np.ndarray) -> dict:
    """uint8 [n, 300, 300, 3] → one ``images`` entry per photo (each request carries one)."""
    return {"data": [{IMAGES_INPUT: _b64(np.ascontiguousarray(photo).tobytes())} for photo in pixels]}


def image_input_data(encoded: list[bytes]) -> dict:
    """JPEG files → one length-prefixed ``encoded_image`` entry per file."""
    return {"data": [{ENCODED_IMAGE_INPUT: _b64(struct.pack("<I", len(data)) + data)} for data in encoded]}


def write_input_data(samples: SampleImages, folder: Path) -> dict[str, Path]:
    """{"detector": path, "image": path}: the files the scenarios' ``--input-data`` name."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "detector": (folder / "detector_inputs.json", detector_input_data(samples.pixels)),
        "image": (folder / "image_inputs.json", image_input_data(samples.encoded)),
    }
    for path, content in files.values():
        path.write_text(json.dumps(content))
    return {name: path for name, (path, _) in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.perf.inputs", description="Write perf_analyzer --input-data files."
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write them to")
    parser.add_argument("--samples", type=Path, help="folder of images (default: the sample photos)")
    args = parser.parse_args(argv)
    for path in write_input_data(SampleImages(args.samples), args.out).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
