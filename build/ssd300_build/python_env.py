"""Pack the Python environment of the Python-backend models for Triton's ``EXECUTION_ENV_PATH``.

The stock tritonserver container's Python has neither torch nor Pillow. Triton's Python backend
can run a model's stub inside a packed environment instead: it unpacks the ``.tar.gz`` named by
the config parameter ``EXECUTION_ENV_PATH`` once, then starts each stub with
``source <env>/bin/activate && exec env LD_LIBRARY_PATH=<env>/lib:... <stub>``.

The archive holds ``lib/python3.X/site-packages`` (wheels for the *server's* Python version and
platform, installed by pip into a folder, so no conda and no interpreter of that version are
needed to build it) and a ``bin/activate`` that works wherever the archive is unpacked. The
stub's embedded interpreter finds its ``sys.prefix`` through the first ``python3`` on ``PATH``
and honours a ``pyvenv.cfg`` beside it, like a virtual environment's interpreter; a
``PYTHONPATH`` alone does not reach it. So ``activate`` links the server's own ``python3.X``
into the environment's ``bin/``, writes ``pyvenv.cfg`` next to it, and puts that ``bin/`` first
on ``PATH``. Versions come from ``python_env.txt`` beside this file.

    python -m ssd300_build.python_env --python-version 3.10 --output model_repository/python_env.tar.gz
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

PINS_FILE = Path(__file__).with_name("python_env.txt")
ARCHIVE_NAME = "python_env.tar.gz"
DEFAULT_PYTHON_VERSION = "3.10"  # the Python of nvcr.io/nvidia/tritonserver:24.10-py3
TORCH_VARIANTS = ("cuda", "cpu")
# PyTorch's index of CPU-only builds (PyPI's Linux torch wheels are the CUDA builds).
TORCH_CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
# glibc 2.28+ wheels run in the 24.10 container (Ubuntu 22.04, glibc 2.35); older tags too.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
# Fast compression: most of the bytes are shared libraries that compress little at any level.
COMPRESS_LEVEL = 1

# Sourced by bash (the Python backend's launcher) before every stub; it must not exit the shell.
# @PYTHON_VERSION@ is filled in when the archive is built.
ACTIVATE = r"""# bin/activate of ssd300's packed Python environment (python -m ssd300_build.python_env).
# Triton's Python backend unpacks the archive into a temporary folder and sources this file with
# bash before starting each model stub, so every path is derived from this file's location.
# The stub's embedded Python finds sys.prefix through the first python3 on PATH and reads the
# pyvenv.cfg beside it: link the server's own python3.X here and put this bin/ first on PATH.
_ssd300_env="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
_ssd300_python="python@PYTHON_VERSION@"
_ssd300_real="$(command -v "$_ssd300_python" 2>/dev/null || true)"
# Sourced again (PATH already starts here): follow the link made the first time.
[ -n "$_ssd300_real" ] && _ssd300_real="$(readlink -f "$_ssd300_real")"
if [ -z "$_ssd300_real" ] || [ ! -x "$_ssd300_real" ]; then
    echo "python_env: no $_ssd300_python on PATH, but this archive holds packages for Python" \
        "@PYTHON_VERSION@ only; rebuild it for the server's Python with" \
        "\`make python-env PYTHON_ENV_VERSION=<major.minor>\`" >&2
else
    # Stubs of several models start at once: write each file under a temporary name and
    # rename it into place, so that no stub ever sees a half-written one.
    _ssd300_cfg="home = $(dirname "$_ssd300_real")
include-system-site-packages = false
version = @PYTHON_VERSION@"
    if [ "$(cat "$_ssd300_env/pyvenv.cfg" 2>/dev/null)" != "$_ssd300_cfg" ]; then
        printf '%s\n' "$_ssd300_cfg" > "$_ssd300_env/pyvenv.cfg.$$"
        mv -f "$_ssd300_env/pyvenv.cfg.$$" "$_ssd300_env/pyvenv.cfg"
    fi
    for _ssd300_name in python3 "$_ssd300_python"; do
        if [ "$(readlink "$_ssd300_env/bin/$_ssd300_name")" != "$_ssd300_real" ]; then
            ln -sfn "$_ssd300_real" "$_ssd300_env/bin/$_ssd300_name.$$"
            mv -f "$_ssd300_env/bin/$_ssd300_name.$$" "$_ssd300_env/bin/$_ssd300_name"
        fi
    done
    export VIRTUAL_ENV="$_ssd300_env"
    export PATH="$_ssd300_env/bin:$PATH"
fi
unset _ssd300_env _ssd300_python _ssd300_real _ssd300_cfg _ssd300_name
"""


class PythonEnvError(RuntimeError):
    """The environment could not be built (bad option, or pip found no matching wheels)."""


def requirements(*, torch_variant: str = "cuda", torch_version: str | None = None) -> list[str]:
    """The pinned requirement lines, with torch's version and build adjusted as asked."""
    if torch_variant not in TORCH_VARIANTS:
        raise PythonEnvError(
            f"torch variant must be one of {', '.join(TORCH_VARIANTS)}, got {torch_variant!r}"
        )
    lines = []
    for raw in PINS_FILE.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"torch==([^\s;+]+)(\+\w+)?", line)
        if match:
            version = torch_version or match.group(1)
            line = f"torch=={version}" + ("+cpu" if torch_variant == "cpu" else "")
        lines.append(line)
    if not any(line.startswith("torch==") for line in lines):
        raise PythonEnvError(f"{PINS_FILE} pins no torch")
    return lines


def _check_python_version(version: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", version):
        raise PythonEnvError(f"Python version must be major.minor such as 3.10, got {version!r}")
    return version


def install(
    target: Path,
    *,
    python_version: str,
    torch_variant: str = "cuda",
    torch_version: str | None = None,
    torch_index_url: str | None = None,
    pip: tuple[str, ...] = (sys.executable, "-m", "pip"),
) -> Path:
    """Install the pinned packages for ``python_version`` into ``target`` (an environment folder).

    Only binary wheels for that Python and manylinux x86_64, so the running interpreter may be
    any version. Returns the ``site-packages`` folder.
    """
    python_version = _check_python_version(python_version)
    site_packages = target / "lib" / f"python{python_version}" / "site-packages"
    site_packages.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="python_env-") as pins:
        pins.write("\n".join(requirements(torch_variant=torch_variant, torch_version=torch_version)) + "\n")
        pins.flush()
        command = [
            *pip,
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            # Bytecode compiled here would be for this interpreter, not the server's.
            "--no-compile",
            "--target",
            str(site_packages),
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
            "--only-binary=:all:",
            "--requirement",
            pins.name,
        ]
        if torch_index_url is None and torch_variant == "cpu":
            torch_index_url = TORCH_CPU_INDEX_URL
        if torch_index_url:
            command += ["--extra-index-url", torch_index_url]
        log.info("installing %s", " ".join(Path(pins.name).read_text().split()))
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        output = "\n".join(
            line for line in result.stdout.splitlines() if "is ignored: it is neither a file" not in line
        )
        raise PythonEnvError(f"pip could not install the environment for Python {python_version}:\n{output}")
    # Console scripts carry this machine's interpreter in their shebangs; the models need none.
    shutil.rmtree(site_packages / "bin", ignore_errors=True)
    # torch's C++ headers only serve to compile extensions, which no model does; they are over
    # half of the files Triton unpacks at start and deletes file by file when it stops.
    shutil.rmtree(site_packages / "torch" / "include", ignore_errors=True)
    return site_packages


def write_activate(target: Path, python_version: str) -> Path:
    path = target / "bin" / "activate"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ACTIVATE.replace("@PYTHON_VERSION@", _check_python_version(python_version)))
    path.chmod(0o755)
    return path


def pack(source: Path, archive: Path) -> Path:
    """``source``'s contents at the archive's top level (Triton expects ``bin/activate`` there)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")

    def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(partial, "w:gz", compresslevel=COMPRESS_LEVEL) as tar:
        for item in sorted(source.iterdir()):
            tar.add(item, arcname=item.name, filter=anonymous)
    # Rename into place: a server never unpacks a half-written archive.
    partial.replace(archive)
    return archive


def build(
    output: Path,
    *,
    python_version: str = DEFAULT_PYTHON_VERSION,
    torch_variant: str = "cuda",
    torch_version: str | None = None,
    torch_index_url: str | None = None,
    workdir: Path | None = None,
) -> Path:
    """Build the environment in a temporary folder and pack it into ``output``."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="python_env-", dir=workdir) as temporary:
        env = Path(temporary) / "env"
        install(
            env,
            python_version=python_version,
            torch_variant=torch_variant,
            torch_version=torch_version,
            torch_index_url=torch_index_url,
        )
        write_activate(env, python_version)
        log.info("packing %s", output)
        pack(env, Path(output))
    log.info(
        "wrote %s (%.0f MB, Python %s, torch %s) in %.0f s",
        output,
        Path(output).stat().st_size / 1e6,
        python_version,
        torch_variant,
        time.monotonic() - started,
    )
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssd300_build.python_env",
        description="Pack the Python-backend models' environment for Triton's EXECUTION_ENV_PATH.",
    )
    parser.add_argument(
        "--python-version",
        default=DEFAULT_PYTHON_VERSION,
        help="the server's Python, major.minor (default: %(default)s, as in the 24.10 container)",
    )
    parser.add_argument(
        "--torch-variant",
        choices=TORCH_VARIANTS,
        default="cuda",
        help="cuda: PyPI's CUDA build (GPU serving); cpu: PyTorch's CPU-only build (default: %(default)s)",
    )
    parser.add_argument("--torch-version", help=f"override the torch release pinned in {PINS_FILE.name}")
    parser.add_argument(
        "--torch-index-url",
        help=f"extra package index for torch (default: {TORCH_CPU_INDEX_URL} for the cpu variant, "
        "none for cuda; an empty value adds none)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("model_repository") / ARCHIVE_NAME,
        help="archive to write (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(
            args.output,
            python_version=args.python_version,
            torch_variant=args.torch_variant,
            torch_version=args.torch_version,
            torch_index_url=args.torch_index_url,
        )
    except PythonEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
