"""Files of the client package the model build uses, found where ssd300_client is installed.

The sample photos calibrate random weights; ``imaging.py`` is copied into the server-side
decode model, so server and client decode alike. The package is located without being
imported: its ``__init__`` imports tritonclient, which the image's export stage (NGC PyTorch
container) does not have and the build does not need.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

CLIENT_PACKAGE = "ssd300_client"


def client_package_dir() -> Path:
    spec = importlib.util.find_spec(CLIENT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{CLIENT_PACKAGE} is not importable: install the project (`make setup`) "
            "or put client/ on PYTHONPATH"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def imaging_module() -> Path:
    """The client's image decoding and resizing code (standard library, numpy and Pillow only)."""
    return client_package_dir() / "imaging.py"


def sample_photo_paths() -> list[Path]:
    return sorted((client_package_dir() / "samples").glob("*.jpg"))
