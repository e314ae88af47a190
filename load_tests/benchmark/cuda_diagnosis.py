"""Why torch sees no GPU, in one sentence that says what to install.

The pinned torch (2.14.1) is a CUDA 13.0 build: under a driver that supports only CUDA 12 it sees
no GPU, and ``torch.cuda.is_available()`` merely warns. The driver is asked which CUDA version it
supports (``cuDriverGetVersion``, no CUDA context needed) and the answer compared with torch's.
"""

from __future__ import annotations

import ctypes

import torch

# The torch wheel index for each driver CUDA major version, and the driver branch each CUDA
# major version needs (NVIDIA's CUDA toolkit release notes, table 3).
WHEEL_FOR_DRIVER = {12: "cu126", 11: "cu118"}
DRIVER_BRANCH = {13: "R580", 12: "R525", 11: "R450"}


def driver_cuda_version() -> int | None:
    """The driver's CUDA version as ``1000 * major + 10 * minor``; None without a driver library."""
    try:
        library = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    return version.value if library.cuDriverGetVersion(ctypes.byref(version)) == 0 else None


def diagnosis(torch_version: str, torch_cuda: str | None, driver: int | None) -> str:
    """Why this torch cannot use a GPU here and what to do, from the facts given."""
    if torch_cuda is None:
        return f"torch {torch_version} is a CPU-only build: install a CUDA build of torch"
    if driver is None:
        return f"no NVIDIA driver here (libcuda.so.1 does not load): torch {torch_version} sees no GPU"
    major, minor, needed = driver // 1000, driver % 1000 // 10, int(torch_cuda.split(".")[0])
    if major >= needed:
        return (
            f"the driver supports CUDA {major}.{minor}, yet torch {torch_version} sees no GPU "
            "(is CUDA_VISIBLE_DEVICES empty? nvidia-smi tells whether the driver sees one)"
        )
    wheel = WHEEL_FOR_DRIVER.get(major)
    install = (
        f"install a torch built for CUDA {major} (e.g. `pip install torch --index-url "
        f"https://download.pytorch.org/whl/{wheel}`)"
        if wheel
        else "install a torch built for the driver's CUDA version"
    )
    return (
        f"the NVIDIA driver supports CUDA {major}.{minor}, but torch {torch_version} is built for "
        f"CUDA {torch_cuda}, which needs a driver for CUDA {needed} "
        f"({DRIVER_BRANCH.get(needed, 'a newer branch')} or newer): {install}, or update the driver"
    )


def why_no_cuda() -> str:
    """:func:`diagnosis` for this machine."""
    return diagnosis(torch.__version__, torch.version.cuda, driver_cuda_version())
