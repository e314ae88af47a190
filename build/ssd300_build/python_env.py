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
on ``PATH``. Versions come from ``python_env.txt`` beside this file; the project's shared core
(``ssd300_common``, pure Python, which the decode model imports) is copied in as it is.

``EXECUTION_ENV_PATH`` may also name a folder, which the backend uses in place (r24.10
``src/pb_env.cc``:261-273): ``--unpacked`` writes one, activated once so that a read-only copy
(the serving image's) needs no writes at server start.

    python -m ssd300_build.python_env --python-version 3.10 --output model_repository/python_env.tar.gz
    python -m ssd300_build.python_env --unpacked --output /opt/ssd300/python_env   # the image's
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import ssd300_common

log = logging.getLogger(__name__)

PINS_FILE = Path(__file__).with_name("python_env.txt")
ARCHIVE_NAME = "python_env.tar.gz"
DEFAULT_PYTHON_VERSION = "3.10"  # the Python of nvcr.io/nvidia/tritonserver:24.10-py3
TORCH_VARIANTS = ("cuda", "cpu")
# PyTorch's index of CPU-only builds (PyPI's Linux torch wheels are the CUDA builds).
TORCH_CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
# glibc 2.28+ wheels run in the 24.10 container (Ubuntu 22.04, glibc 2.35); older tags too.
# linux_x86_64: PyTorch's CPU index names its 2.5.1 wheels so (PyPI accepts no such wheel).
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
)
# Resolved but not installed. triton is torch.compile's GPU kernel compiler (a 209 MB wheel for
# torch 2.5.1), a dependency of PyPI's CUDA torch; torch imports it only when inductor compiles,
# which no model does (torch.utils._triton.has_triton() finds it missing and does without).
EXCLUDED = frozenset({"triton"})
# The project's own packages the models import: pure Python, so the source folder serves any
# server Python as it is (importing ssd300_common itself imports nothing).
PROJECT_PACKAGES = (Path(ssd300_common.__file__).parent,)
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


def _check_python_version(version: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", version):
        raise PythonEnvError(f"Python version must be major.minor such as 3.10, got {version!r}")
    return version


def target_environment(python_version: str) -> dict[str, str]:
    """PEP 508 marker variables of the server's interpreter: CPython ``python_version`` on Linux x86_64.

    The patch release is unknown; ``.0`` stands for it (no pin here compares it).
    """
    version = _check_python_version(python_version)
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{version}.0",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{version}.0",
        "python_version": version,
        "sys_platform": "linux",
    }


def requirements(
    *,
    python_version: str = DEFAULT_PYTHON_VERSION,
    torch_variant: str = "cuda",
    torch_version: str | None = None,
) -> list[str]:
    """Plain ``name==version`` pins for ``python_version``, torch's release and build adjusted as asked.

    pip would evaluate the pins' markers for the interpreter running it, whatever
    ``--python-version`` says, so they are evaluated here for the target and dropped.
    """
    if torch_variant not in TORCH_VARIANTS:
        raise PythonEnvError(
            f"torch variant must be one of {', '.join(TORCH_VARIANTS)}, got {torch_variant!r}"
        )
    environment = target_environment(python_version)
    pins = []
    for raw in PINS_FILE.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        specifier = str(requirement.specifier)
        if canonicalize_name(requirement.name) == "torch":
            version = torch_version or specifier.removeprefix("==").split("+")[0]
            specifier = f"=={version}" + ("+cpu" if torch_variant == "cpu" else "")
        pins.append(f"{requirement.name}{specifier}")
    names = [canonicalize_name(Requirement(pin).name) for pin in pins]
    if "torch" not in names:
        raise PythonEnvError(f"{PINS_FILE} pins no torch")
    if len(set(names)) != len(names):
        raise PythonEnvError(f"{PINS_FILE} pins a package twice for Python {python_version}: {pins}")
    return pins


def pip_target_options(python_version: str) -> list[str]:
    """The options that make pip pick wheels for the server's Python and platform, not its own."""
    return [
        "--python-version",
        _check_python_version(python_version),
        "--implementation",
        "cp",
        *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
        "--only-binary=:all:",
    ]


def _run_pip(command: list[str], what: str) -> None:
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        output = "\n".join(
            line for line in result.stdout.splitlines() if "is ignored: it is neither a file" not in line
        )
        raise PythonEnvError(f"pip could not {what}:\n{output}")


def resolve(
    pins: list[str],
    *,
    python_version: str,
    index_urls: tuple[str, ...] = (),
    extra_args: tuple[str, ...] = (),
    pip: tuple[str, ...] = (sys.executable, "-m", "pip"),
) -> list[dict]:
    """What pip would install for ``pins`` on the server: the ``install`` items of its JSON report.

    Each item has ``metadata`` (``name``, ``version``, ``requires_dist``) and
    ``download_info.url`` (the wheel). Nothing is downloaded but metadata. ``extra_args`` go to
    pip as they are (e.g. ``--no-index --find-links <folder>``).
    """
    with tempfile.TemporaryDirectory(prefix="python_env-resolve-") as scratch:
        report = Path(scratch) / "report.json"
        command = [
            *pip,
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--dry-run",
            # Reads each wheel's metadata by HTTP range requests where the index serves none of
            # its own (PEP 658), instead of downloading ~3 GB of CUDA wheels to resolve; pip
            # downloads whole wheels where ranges are refused.
            "--use-feature=fast-deps",
            "--ignore-installed",
            "--report",
            str(report),
            # --target: what an empty folder would need, whatever this interpreter has installed.
            "--target",
            str(Path(scratch) / "target"),
            *pip_target_options(python_version),
            *(arg for url in index_urls for arg in ("--extra-index-url", url)),
            *extra_args,
            *pins,
        ]
        _run_pip(command, f"resolve {' '.join(pins)} for Python {python_version}")
        return json.loads(report.read_text())["install"]


def install(
    target: Path,
    *,
    python_version: str,
    pins: list[str],
    index_urls: tuple[str, ...] = (),
    pip: tuple[str, ...] = (sys.executable, "-m", "pip"),
) -> Path:
    """Install ``pins`` and their dependencies for ``python_version`` into ``target`` (an environment folder).

    Only binary wheels for that Python and manylinux x86_64, so the running interpreter may be
    any version. Resolved first, then installed without the packages of ``EXCLUDED``; the
    ``PROJECT_PACKAGES`` are copied beside them. Returns the ``site-packages`` folder.
    """
    resolved = resolve(pins, python_version=python_version, index_urls=index_urls, pip=pip)
    exact = [
        f"{item['metadata']['name']}=={item['metadata']['version']}"
        for item in resolved
        if canonicalize_name(item["metadata"]["name"]) not in EXCLUDED
    ]
    site_packages = target / "lib" / f"python{python_version}" / "site-packages"
    site_packages.mkdir(parents=True, exist_ok=True)
    log.info("installing %s", " ".join(sorted(exact, key=str.lower)))
    command = [
        *pip,
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        # Bytecode compiled here would be for this interpreter, not the server's.
        "--no-compile",
        # The resolution above is complete; this keeps pip from adding EXCLUDED back.
        "--no-deps",
        "--target",
        str(site_packages),
        *pip_target_options(python_version),
        *(arg for url in index_urls for arg in ("--extra-index-url", url)),
        *exact,
    ]
    _run_pip(command, f"install the environment for Python {python_version}")
    # Console scripts carry this machine's interpreter in their shebangs; the models need none.
    shutil.rmtree(site_packages / "bin", ignore_errors=True)
    # torch's C++ headers only serve to compile extensions, which no model does; they are over
    # half of the files Triton unpacks at start and deletes file by file when it stops.
    shutil.rmtree(site_packages / "torch" / "include", ignore_errors=True)
    for package in PROJECT_PACKAGES:
        # Sources only: bytecode compiled here would be for this interpreter (as --no-compile).
        shutil.copytree(
            package, site_packages / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return site_packages


def foreign_extensions(site_packages: Path, python_version: str) -> list[Path]:
    """Extension modules built for another CPython than ``python_version`` (should be none).

    ``*.cpython-310-x86_64-linux-gnu.so`` is for 3.10 only; ``*.abi3.so`` and plain ``*.so``
    libraries (torch's, CUDA's) load in any.
    """
    tag = "".join(_check_python_version(python_version).split("."))
    return sorted(
        path
        for path in site_packages.rglob("*.cpython-*")
        if (match := re.search(r"\.cpython-(\d+)", path.name)) and match.group(1) != tag
    )


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


def activate_in_place(env: Path, *, path: str | None = None) -> None:
    """Source ``env``'s activate once, as the server would (``path``: its ``PATH``, default this one's).

    An environment used in place (``EXECUTION_ENV_PATH`` naming a folder) may sit on a read-only
    filesystem: this writes the ``pyvenv.cfg`` and ``python3`` links activate would otherwise
    write at the first stub start, so that later runs find them current and write nothing.
    """
    script = 'source "$1/bin/activate" && test "$VIRTUAL_ENV" = "$(cd "$1" && pwd -P)"'
    variables = {**os.environ, "PATH": path} if path is not None else None
    result = subprocess.run(
        # bash found on this process's PATH: subprocess would look for it on ``path``.
        [shutil.which("bash") or "bash", "-c", script, "activate", str(env)],
        capture_output=True,
        text=True,
        env=variables,
    )
    if result.returncode != 0 or result.stderr:
        raise PythonEnvError(f"{env}/bin/activate did not activate the environment:\n{result.stderr}")


def _megabytes(root: Path) -> float:
    return (
        sum(path.lstat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())
        / 1e6
    )


def build(
    output: Path,
    *,
    python_version: str = DEFAULT_PYTHON_VERSION,
    torch_variant: str = "cuda",
    torch_version: str | None = None,
    torch_index_url: str | None = None,
    unpacked: bool = False,
) -> Path:
    """Build the environment into the archive ``output`` (with ``unpacked``: into the folder ``output``).

    The folder form is for ``EXECUTION_ENV_PATH`` naming a folder, which the Python backend
    uses in place; it is activated once here (see ``activate_in_place``), so the server's
    ``python3.X`` must be on ``PATH``.
    """
    output = Path(output)
    started = time.monotonic()
    if torch_index_url is None and torch_variant == "cpu":
        torch_index_url = TORCH_CPU_INDEX_URL
    pins = requirements(
        python_version=python_version, torch_variant=torch_variant, torch_version=torch_version
    )
    if unpacked and output.exists():
        raise PythonEnvError(f"{output} exists; remove it first (the folder form is built from scratch)")
    # The folder form is built beside its destination and renamed into place.
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix="python_env-", dir=output.parent if unpacked else None
    ) as scratch:
        env = Path(scratch) / "env"
        site_packages = install(
            env,
            python_version=python_version,
            pins=pins,
            index_urls=(torch_index_url,) if torch_index_url else (),
        )
        foreign = foreign_extensions(site_packages, python_version)
        if foreign:
            raise PythonEnvError(
                f"extension modules for another Python than {python_version}: "
                + ", ".join(str(path.relative_to(env)) for path in foreign[:5])
            )
        write_activate(env, python_version)
        unpacked_mb = _megabytes(env)
        if unpacked:
            activate_in_place(env)
            env.rename(output)
        else:
            log.info("packing %s", output)
            pack(env, output)
    log.info(
        "wrote %s (%s%.0f MB unpacked, Python %s, torch %s) in %.0f s",
        output,
        "" if unpacked else f"{output.stat().st_size / 1e6:.0f} MB, ",
        unpacked_mb,
        python_version,
        torch_variant,
        time.monotonic() - started,
    )
    return output


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
        help="archive to write, or folder with --unpacked (default: %(default)s)",
    )
    parser.add_argument(
        "--unpacked",
        action="store_true",
        help="write the environment as a folder used in place, activated once for the python3.X on PATH",
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
            unpacked=args.unpacked,
        )
    except PythonEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
