"""Why torch sees no GPU, in one sentence that says what to install.

The pinned torch (2.14.1) is a CUDA 13.0 build: on a machine whose driver only supports CUDA 12
it sees no GPU, and ``torch.cuda.is_available()`` merely warns. Its warning (c10/cuda:
"The NVIDIA driver on your system is too old (found version 12080)") carries the driver's CUDA
version; the driver is also asked directly (``cuDriverGetVersion``, no CUDA context needed).
"""

from __future__ import annotations

import ctypes
import re
import warnings

import torch

# The torch wheel index for each driver CUDA major version, and the driver branch each CUDA
# major version needs (NVIDIA's CUDA toolkit release notes, table 3).
WHEEL_FOR_DRIVER = {12: "cu126", 11: "cu118"}
DRIVER_BRANCH = {13: "R580", 12: "R525", 11: "R450"}
FOUND_VERSION = re.compile(r"too old \(found version (\d+)\)")


def driver_cuda_version() -> int | None:
    """The CUDA version the installed driver supports, as ``1000 * major + 10 * minor``; None
    when there is no driver library."""
    try:
        library = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    return version.value if library.cuDriverGetVersion(ctypes.byref(version)) == 0 else None


def torch_cuda_message() -> str:
    """What torch says while looking for a GPU (the warning, or ``torch.cuda.init()``'s error)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return ""
    try:
        torch.cuda.init()
    except (RuntimeError, AssertionError) as error:
        caught.append(warnings.WarningMessage(str(error), RuntimeWarning, "", 0))
    return " ".join(str(w.message) for w in caught).strip()


def diagnosis(torch_version: str, torch_cuda: str | None, driver: int | None, message: str) -> str:
    """Why this torch cannot use a GPU here and what to do, from the facts given."""
    if torch_cuda is None:
        return f"torch {torch_version} is a CPU-only build: install a CUDA build of torch"
    found = FOUND_VERSION.search(message)
    driver = driver or (int(found.group(1)) if found else None)
    needed = int(torch_cuda.split(".")[0])
    if driver is None:
        return f"no NVIDIA driver here (libcuda.so.1 does not load): torch {torch_version} sees no GPU"
    major, minor = driver // 1000, driver % 1000 // 10
    if major < needed:
        wheel = WHEEL_FOR_DRIVER.get(major)
        install = (
            f"install a torch built for CUDA {major} (e.g. `pip install torch --index-url "
            f"https://download.pytorch.org/whl/{wheel}`)"
            if wheel
            else "install a torch built for the driver's CUDA version"
        )
        branch = DRIVER_BRANCH.get(needed, "a newer branch")
        return (
            f"the NVIDIA driver supports CUDA {major}.{minor}, but torch {torch_version} is built for "
            f"CUDA {torch_cuda}, which needs a driver for CUDA {needed} ({branch} or newer): {install}, "
            "or update the driver"
        )
    detail = f": {message}" if message else " (is CUDA_VISIBLE_DEVICES empty?)"
    return f"the driver supports CUDA {major}.{minor}, yet torch {torch_version} sees no GPU{detail}"


def why_no_cuda() -> str:
    """:func:`diagnosis` for this machine."""
    return diagnosis(torch.__version__, torch.version.cuda, driver_cuda_version(), torch_cuda_message())
