"""Install the external programs the operations tooling runs, into ``.tools/``, without touching
the system or the project's virtualenv.

- ``perf_analyzer``: Triton's load generator, the same release (2.51) as the bundled
  tritonserver. PyPI's ``perf-analyzer`` package is a placeholder; the real binary ships inside
  the ``tritonclient==2.51.0`` manylinux wheel, which is only unpacked here (the client library
  keeps the version pinned in requirements.txt). The binary links ``libb64.so.0d`` (Debian
  ``libb64-0d``) and ``libcudart.so.12`` (PyPI ``nvidia-cuda-runtime-cu12``: a plain shared
  library that loads without a GPU). A wrapper script puts both on ``LD_LIBRARY_PATH``.
- ``prometheus`` and ``promtool``: Debian's ``prometheus`` package (2.42), unpacked with
  ``dpkg-deb -x``: the two binaries are static Go programs, so no dependency or service install
  is needed.

Each tool lands in ``.tools/<name>/`` with a stamp naming what was installed; a second run
with the same pins does nothing. ``python -m tools.external_tools perf_analyzer prometheus``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS_DIR = REPO_ROOT / ".tools"


@dataclass(frozen=True)
class Wheel:
    requirement: str  # name==version
    filename: str
    sha256: str


PERF_ANALYZER_WHEEL = Wheel(
    "tritonclient==2.51.0",
    "tritonclient-2.51.0-py3-none-manylinux1_x86_64.whl",
    "c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52",
)
PERF_ANALYZER_MEMBER = "tritonclient-2.51.0.data/data/bin/perf_analyzer"
PERF_ANALYZER_VERSION = "2.51.0"
# CUDA 12.6 is the runtime of NGC 24.10, the release the server and perf_analyzer come from.
CUDA_RUNTIME_WHEEL = Wheel(
    "nvidia-cuda-runtime-cu12==12.6.77",
    "nvidia_cuda_runtime_cu12-12.6.77-py3-none-manylinux2014_x86_64.whl",
    "a84d15d5e1da416dd4774cb42edf5e954a3e60cc945698dc1d5be02321c44dc8",
)
CUDA_RUNTIME_MEMBER = "nvidia/cuda_runtime/lib/libcudart.so.12"
LIBB64_PACKAGE, LIBB64_FILE = "libb64-0d", "usr/lib/x86_64-linux-gnu/libb64.so.0d"
PROMETHEUS_PACKAGE, PROMETHEUS_VERSION = "prometheus", "2.42."

WRAPPER = """#!/bin/sh
# perf_analyzer {version} from the tritonclient wheel, with the libraries it links beside it.
home=$(dirname "$(readlink -f "$0")")/..
LD_LIBRARY_PATH="$home/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "$home/libexec/perf_analyzer" "$@"
"""


class ToolInstallError(RuntimeError):
    """A tool could not be downloaded, unpacked or run; the message says which and why."""


def perf_analyzer_path(root: Path = TOOLS_DIR) -> Path:
    return root / "perf_analyzer" / "bin" / "perf_analyzer"


def prometheus_paths(root: Path = TOOLS_DIR) -> tuple[Path, Path]:
    """(prometheus, promtool)."""
    bin_dir = root / "prometheus" / "bin"
    return bin_dir / "prometheus", bin_dir / "promtool"


def _run(command: list[str], *, cwd: Path | None = None, what: str) -> str:
    """stdout and stderr together (perf_analyzer prints its version on stderr)."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as error:
        raise ToolInstallError(f"{what}: {command[0]} is not available ({error})") from error
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ToolInstallError(f"{what}: `{' '.join(command)}` failed: {' / '.join(tail)}")
    return result.stdout + result.stderr


def _download_wheel(wheel: Wheel, into: Path) -> Path:
    _run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"),
            *("--platform", "manylinux2014_x86_64", "--dest", str(into), wheel.requirement),
        ],
        what=f"downloading {wheel.requirement} from PyPI",
    )
    path = into / wheel.filename
    if not path.is_file():
        raise ToolInstallError(f"pip downloaded no {wheel.filename} for {wheel.requirement}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != wheel.sha256:
        raise ToolInstallError(f"{wheel.filename}: sha256 {digest}, expected {wheel.sha256}")
    return path


def _extract_member(wheel: Path, member: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            shutil.copyfileobj(source, out)


def _download_deb(package: str, into: Path) -> Path:
    """``apt-get download``: the signed archive's .deb, nothing installed. A fresh container
    has no package lists yet; as root they are fetched once (``apt-get update``) and retried."""
    what = f"downloading Debian package {package}"
    try:
        _run(["apt-get", "download", package], cwd=into, what=what)
    except ToolInstallError as error:
        if "Unable to locate package" not in str(error) or os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"], what="fetching Debian's package lists")
        _run(["apt-get", "download", package], cwd=into, what=what)
    (deb,) = into.glob(f"{package}_*.deb")
    unpacked = into / package
    _run(["dpkg-deb", "-x", str(deb), str(unpacked)], what=f"unpacking {deb.name}")
    return unpacked


def _stamp_ok(stamp: Path, expected: str) -> bool:
    return stamp.is_file() and stamp.read_text() == expected


def _check_machine() -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise ToolInstallError(
            f"only linux x86_64 builds are pinned, this is {sys.platform} {platform.machine()}"
        )


def install_perf_analyzer(root: Path = TOOLS_DIR) -> Path:
    """Returns the wrapper to run; does nothing when the pinned build is installed already."""
    home = root / "perf_analyzer"
    stamp = home / ".installed"
    expected = f"{PERF_ANALYZER_WHEEL.sha256} {CUDA_RUNTIME_WHEEL.sha256} {LIBB64_PACKAGE}\n"
    if _stamp_ok(stamp, expected) and perf_analyzer_path(root).is_file():
        return perf_analyzer_path(root)
    _check_machine()
    shutil.rmtree(home, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as scratch:
        work = Path(scratch)
        _extract_member(
            _download_wheel(PERF_ANALYZER_WHEEL, work),
            PERF_ANALYZER_MEMBER,
            home / "libexec" / "perf_analyzer",
        )
        _extract_member(
            _download_wheel(CUDA_RUNTIME_WHEEL, work), CUDA_RUNTIME_MEMBER, home / "lib" / "libcudart.so.12"
        )
        shutil.copy2(_download_deb(LIBB64_PACKAGE, work) / LIBB64_FILE, home / "lib" / "libb64.so.0d")
    (home / "libexec" / "perf_analyzer").chmod(0o755)
    wrapper = perf_analyzer_path(root)
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(WRAPPER.format(version=PERF_ANALYZER_VERSION))
    wrapper.chmod(0o755)
    version = _run([str(wrapper), "--version"], what="running the installed perf_analyzer")
    if PERF_ANALYZER_VERSION not in version:
        raise ToolInstallError(
            f"installed perf_analyzer reports {version.strip()!r}, expected {PERF_ANALYZER_VERSION}"
        )
    stamp.write_text(expected)
    return wrapper


def install_prometheus(root: Path = TOOLS_DIR) -> tuple[Path, Path]:
    """Returns (prometheus, promtool); does nothing when a 2.42 build is installed already."""
    home = root / "prometheus"
    stamp = home / ".installed"
    expected = f"{PROMETHEUS_PACKAGE} {PROMETHEUS_VERSION}x\n"
    if _stamp_ok(stamp, expected) and all(p.is_file() for p in prometheus_paths(root)):
        return prometheus_paths(root)
    _check_machine()
    shutil.rmtree(home, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="prometheus-") as scratch:
        unpacked = _download_deb(PROMETHEUS_PACKAGE, Path(scratch))
        for path in prometheus_paths(root):
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(unpacked / "usr" / "bin" / path.name, path)
    for path in prometheus_paths(root):
        version = _run([str(path), "--version"], what=f"running the installed {path.name}")
        if f"version {PROMETHEUS_VERSION}" not in version:
            raise ToolInstallError(
                f"{path.name} reports {version.splitlines()[0]!r}, expected {PROMETHEUS_VERSION}x"
            )
    stamp.write_text(expected)
    return prometheus_paths(root)


INSTALLERS = {"perf_analyzer": install_perf_analyzer, "prometheus": install_prometheus}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.external_tools", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("tools", nargs="+", choices=sorted(INSTALLERS))
    args = parser.parse_args(argv)
    for name in args.tools:
        try:
            installed = INSTALLERS[name]()
        except ToolInstallError as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 1
        print(f"{name}: {installed if isinstance(installed, Path) else ', '.join(map(str, installed))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
