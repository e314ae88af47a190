"""Freely licensed sample photographs (credits in LICENSE.md), shipped as package data.

The demo, the load tests, the tests and the model build (random weights are calibrated on
them) read them from the installed package, wherever it lives.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PHOTO_SUFFIX = ".jpg"


def folder() -> Path:
    """The folder holding the photos (a real directory: the package is installed unzipped)."""
    location = resources.files(__name__)
    if not isinstance(location, Path):
        raise RuntimeError(f"ssd300_common is installed as an archive ({location}); install it unpacked")
    return location


def paths() -> list[Path]:
    """The sample photos, sorted by name."""
    return sorted(folder().glob(f"*{PHOTO_SUFFIX}"))
