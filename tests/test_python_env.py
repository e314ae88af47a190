"""The packed Python environment (`make python-env`, Triton's EXECUTION_ENV_PATH).

Fast: the pins, activate, packing, and pip's resolution of every pin set (Python 3.10 and
3.11, CUDA and CPU torch) with the build's own options, whose wheels must fit the target.

The real test starts the bundled tritonserver from a Python that has neither torch nor Pillow,
as in the stock container, with the Python-backend models pointed at an environment made by
ssd300_build.python_env's functions for this Python version (as an archive and as a folder
used in place), and checks that both ensembles give the detections of the normal embedded
server. The environment is made once per session.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from tritonclient.grpc import model_config_pb2

import ssd300_common
from ssd300_build import python_env
from ssd300_common import contract
from ssd300_serving.embedded_server import EmbeddedServer

from .helpers.images import photo_batch

REPO_ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = REPO_ROOT / "model_repository"
ENV_PARAMETER = "EXECUTION_ENV_PATH"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# The interpreter this venv was made from: on this machine kind (pyenv's 3.11) it has numpy but
# neither torch nor Pillow, like the stock container's Python.
BARE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{PYTHON_VERSION}"
# The 24.10 container: Ubuntu 22.04 (glibc 2.35), x86_64.
TARGET_GLIBC_MINOR = 35
# How PyTorch's CPU index (python_env.TORCH_CPU_INDEX_URL, which this machine cannot reach) names
# the pinned release's wheels, as listed there for 2.5.1: torch-2.5.1+cpu-cp310-cp310-linux_x86_64.whl.
CPU_TORCH_WHEEL = "torch-{version}+cpu-cp{tag}-cp{tag}-linux_x86_64.whl"


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def production_env_path() -> str:
    """The EXECUTION_ENV_PATH every production Python-backend config sets (one value)."""
    values = {
        parse_config(path).parameters[ENV_PARAMETER].string_value
        for path in REPOSITORY.glob("*/config.pbtxt")
        if parse_config(path).backend == "python"
    }
    assert len(values) == 1, values
    return values.pop()


# --- pins and activate (fast) ---------------------------------------------------------------


def pinned(name: str, requirement_lines: list[str], python_version: str) -> str:
    """The version ``requirement_lines`` pin for ``name`` under ``python_version``'s markers."""
    for line in requirement_lines:
        spec, _, marker = line.partition(";")
        match = re.fullmatch(rf"{name}==(\S+)", spec.strip(), flags=re.IGNORECASE)
        if match and (not marker or Marker(marker).evaluate({"python_version": python_version})):
            return match.group(1)
    raise AssertionError(f"{name} is not pinned for Python {python_version}")


def test_pins_give_torch_the_variant_and_release_asked_for():
    default = python_env.requirements()
    assert pinned("torch", default, "3.10") == "2.5.1"  # the PyTorch release of NGC 24.10
    cpu = python_env.requirements(torch_variant="cpu", torch_version="2.13.0")
    assert pinned("torch", cpu, "3.11") == "2.13.0+cpu"
    assert [line for line in cpu if not line.startswith("torch")] == [
        line for line in default if not line.startswith("torch")
    ]
    with pytest.raises(python_env.PythonEnvError, match="torch variant must be one of cuda, cpu"):
        python_env.requirements(torch_variant="rocm")


def test_server_side_decode_uses_the_clients_pillow_and_numpy_where_wheels_exist():
    development = [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if "==" in line]
    packed = python_env.requirements(python_version=PYTHON_VERSION)
    for name in ("pillow", "numpy"):
        assert pinned(name, packed, PYTHON_VERSION) == pinned(name, development, PYTHON_VERSION)


@pytest.mark.parametrize(("python_version", "pillow"), [("3.10", "12.3.0"), ("3.11", "13.0.0")])
def test_pins_reach_pip_with_markers_evaluated_for_the_target_python(python_version, pillow):
    # Pillow 13 has no wheels for Python 3.10 (the 24.10 container's): the last 12.x is pinned.
    # pip would take the 3.11 line for a 3.10 target when run by 3.11: the markers must not reach it.
    pins = python_env.requirements(python_version=python_version)
    assert [pin for pin in pins if pin.lower().startswith("pillow")] == [f"pillow=={pillow}"]
    assert not any(";" in pin for pin in pins)


def source_activate(env: Path, path: str) -> dict[str, str]:
    """Source ``env``'s activate as Triton's launcher does and return the resulting variables."""
    script = f'source "{env}/bin/activate" && echo "PATH=$PATH" && echo "VIRTUAL_ENV=$VIRTUAL_ENV"'
    result = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/")},
        capture_output=True,
        text=True,
        check=True,
    )
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    values["stderr"] = result.stderr
    return values


@pytest.mark.skipif(not BARE_PYTHON.is_file(), reason=f"no {BARE_PYTHON}")
def test_activate_derives_every_path_from_where_the_archive_was_unpacked(tmp_path):
    python_env.write_activate(tmp_path / "first", PYTHON_VERSION)
    shutil.copytree(tmp_path / "first", tmp_path / "moved")
    system_path = f"{BARE_PYTHON.parent}:/usr/bin:/bin"
    for env in (tmp_path / "first", tmp_path / "moved"):
        values = source_activate(env, system_path)
        assert values["PATH"].split(":")[0] == str(env.resolve() / "bin")
        assert values["VIRTUAL_ENV"] == str(env.resolve())
        for name in ("python3", f"python{PYTHON_VERSION}"):
            assert (env / "bin" / name).resolve() == BARE_PYTHON.resolve()
        config = (env / "pyvenv.cfg").read_text()
        assert f"home = {BARE_PYTHON.resolve().parent}\n" in config
        assert "include-system-site-packages = false" in config
    # Sourced a second time (PATH already leads into the environment): still the real interpreter.
    again = source_activate(tmp_path / "moved", f"{tmp_path / 'moved' / 'bin'}:{system_path}")
    assert again["stderr"] == ""
    assert (tmp_path / "moved" / "bin" / "python3").resolve() == BARE_PYTHON.resolve()


def test_activate_for_another_python_says_how_to_rebuild_and_leaves_path_alone(tmp_path):
    python_env.write_activate(tmp_path, "3.99")
    values = source_activate(tmp_path, "/usr/bin:/bin")
    assert values["PATH"] == "/usr/bin:/bin"
    assert "make python-env PYTHON_ENV_VERSION=" in values["stderr"]
    assert "Python 3.99" in values["stderr"]


@pytest.mark.skipif(not BARE_PYTHON.is_file(), reason=f"no {BARE_PYTHON}")
def test_activating_in_place_writes_what_activate_needs_or_fails_loudly(tmp_path):
    # The image's build step: a folder that activate would still write into at server start
    # (read-only there) must fail the build, not the stubs.
    python_env.write_activate(tmp_path / "other", "3.99")
    with pytest.raises(python_env.PythonEnvError, match="no python3.99 on PATH"):
        python_env.activate_in_place(tmp_path / "other", path=f"{BARE_PYTHON.parent}:/usr/bin:/bin")
    assert not (tmp_path / "other" / "pyvenv.cfg").exists()
    python_env.write_activate(tmp_path / "env", PYTHON_VERSION)
    python_env.activate_in_place(tmp_path / "env", path=f"{BARE_PYTHON.parent}:/usr/bin:/bin")
    assert f"home = {BARE_PYTHON.resolve().parent}\n" in (tmp_path / "env" / "pyvenv.cfg").read_text()
    assert (tmp_path / "env" / "bin" / "python3").resolve() == BARE_PYTHON.resolve()
    with pytest.raises(python_env.PythonEnvError, match="exists; remove it first"):
        python_env.build(tmp_path / "env", python_version=PYTHON_VERSION, unpacked=True)


def test_packing_puts_activate_at_the_top_of_the_archive(tmp_path):
    env = tmp_path / "env"
    python_env.write_activate(env, PYTHON_VERSION)
    (env / "lib" / f"python{PYTHON_VERSION}" / "site-packages").mkdir(parents=True)
    archive = python_env.pack(env, tmp_path / "out" / python_env.ARCHIVE_NAME)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert "bin/activate" in names
        assert {member.uid for member in tar.getmembers()} == {0}
    assert f"lib/python{PYTHON_VERSION}/site-packages" in names
    assert not list(archive.parent.glob("*.partial"))


# A stand-in for pip (python -c PIP_STAND_IN <pip arguments>): its resolution report lists
# nothing and its install installs nothing, so install() runs all its own steps in a moment.
PIP_STAND_IN = """
import json, sys
args = sys.argv[1:]
if "--report" in args:
    open(args[args.index("--report") + 1], "w").write(json.dumps({"install": []}))
"""


def test_the_environment_carries_the_shared_core_the_models_import(tmp_path, monkeypatch):
    """What install() puts beside the wheels: ssd300_common's sources, as they are, where the
    stubs' Python looks (the decode model imports ssd300_common.imaging from there); not the
    bytecode of the interpreter that built it (a staged copy of the package has some)."""
    source = Path(ssd300_common.__file__).parent
    assert (source,) == python_env.PROJECT_PACKAGES
    staged = tmp_path / "checkout" / "ssd300_common"
    shutil.copytree(source, staged)
    (staged / "__pycache__").mkdir(exist_ok=True)
    (staged / "__pycache__" / "imaging.cpython-311.pyc").write_bytes(b"bytecode")
    monkeypatch.setattr(python_env, "PROJECT_PACKAGES", (staged,))
    site_packages = python_env.install(
        tmp_path / "env",
        python_version="3.10",
        pins=python_env.requirements(python_version="3.10"),
        pip=(sys.executable, "-c", PIP_STAND_IN),
    )
    assert site_packages == tmp_path / "env" / "lib" / "python3.10" / "site-packages"

    def files(root: Path) -> list[Path]:
        return sorted(
            p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )

    copied = site_packages / "ssd300_common"
    assert files(copied) == files(source) and Path("imaging.py") in files(copied)
    assert not list(copied.rglob("__pycache__")) and not list(copied.rglob("*.pyc"))
    assert (copied / "imaging.py").read_bytes() == (source / "imaging.py").read_bytes()
    # Importable from there as a package, ahead of this checkout's copy.
    found = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(site_packages)!r}); "
            "import ssd300_common.imaging as m; print(m.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == str(copied / "imaging.py")


# --- what pip resolves for each pin set (fast; PyPI) --------------------------------------------

PIN_SETS = [(version, variant) for version in ("3.10", "3.11") for variant in python_env.TORCH_VARIANTS]


def target_tags(python_version: str) -> set:
    """Every wheel tag CPython ``python_version`` installs in the 24.10 container (x86_64, glibc 2.35)."""
    version = tuple(map(int, python_version.split(".")))
    interpreter = f"cp{version[0]}{version[1]}"
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(TARGET_GLIBC_MINOR, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    return {
        *cpython_tags(version, [interpreter, "abi3", "none"], platforms),
        *compatible_tags(version, interpreter, platforms),
    }


def pypi_pins(python_version: str, variant: str) -> list[str]:
    """The pins resolved from PyPI: all, except the CPU variant's torch (on PyTorch's index only)."""
    pins = python_env.requirements(python_version=python_version, torch_variant=variant)
    return [pin for pin in pins if variant == "cuda" or not pin.startswith("torch==")]


@pytest.fixture(scope="module")
def resolutions() -> dict[tuple[str, str], list[dict]]:
    """pip's report for every pin set, with the build's options (four pip runs at once)."""
    with ThreadPoolExecutor(len(PIN_SETS)) as pool:
        runs = {
            key: pool.submit(python_env.resolve, pypi_pins(*key), python_version=key[0]) for key in PIN_SETS
        }
        return {key: run.result() for key, run in runs.items()}


def wheel_name(item: dict) -> str:
    return urllib.parse.unquote(item["download_info"]["url"].rsplit("/", 1)[-1])


def required(pins: list[str], resolved: list[dict], python_version: str) -> set[str]:
    """The names ``pins`` require, transitively, with every marker evaluated for ``python_version``."""
    environment = python_env.target_environment(python_version)
    requires = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"].get("requires_dist", [])
        for item in resolved
    }
    todo = [Requirement(pin) for pin in pins]
    names: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in names:
            continue
        names.add(name)
        for line in requires.get(name, []):
            dependency = Requirement(line)
            extras = ["", *sorted(requirement.extras)]
            marker = dependency.marker
            if marker is None or any(marker.evaluate({**environment, "extra": extra}) for extra in extras):
                todo.append(dependency)
    return names


@pytest.mark.parametrize(("python_version", "variant"), PIN_SETS)
def test_every_resolved_wheel_installs_on_the_target_python(resolutions, python_version, variant):
    resolved = resolutions[(python_version, variant)]
    tags = target_tags(python_version)
    unfit = [wheel_name(item) for item in resolved if not parse_wheel_filename(wheel_name(item))[3] & tags]
    assert unfit == [], f"wheels CPython {python_version} (x86_64, glibc 2.35) cannot install"
    versions = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in resolved}
    for pin in pypi_pins(python_version, variant):
        requirement = Requirement(pin)
        assert requirement.specifier.contains(versions[canonicalize_name(requirement.name)], prereleases=True)


@pytest.mark.parametrize(("python_version", "variant"), PIN_SETS)
def test_resolution_is_what_the_target_python_requires_no_more_no_less(resolutions, python_version, variant):
    # pip evaluates dependencies' markers for itself too; a package required only below or above
    # this Python's version would be missing or extra.
    resolved = resolutions[(python_version, variant)]
    names = {canonicalize_name(item["metadata"]["name"]) for item in resolved}
    assert names == required(pypi_pins(python_version, variant), resolved, python_version)


@pytest.mark.parametrize("python_version", ["3.10", "3.11"])
def test_what_the_build_leaves_out_is_a_dependency_of_cuda_torch(resolutions, python_version):
    names = {canonicalize_name(item["metadata"]["name"]) for item in resolutions[(python_version, "cuda")]}
    assert names >= python_env.EXCLUDED  # otherwise EXCLUDED is stale


def write_empty_wheel(path: Path) -> None:
    """A wheel with metadata only: enough for pip to choose it by its name and read its version."""
    name, version, _, tags = parse_wheel_filename(path.name)
    info = f"{name}-{version}.dist-info"
    (tag,) = tags
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(
            f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n"
        )
        wheel.writestr(f"{info}/RECORD", f"{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")


@pytest.mark.parametrize("python_version", ["3.10", "3.11"])
def test_the_build_options_take_the_cpu_torch_wheel_as_pytorchs_index_names_it(python_version, tmp_path):
    """PyTorch's CPU index is out of this machine's reach. What is checked instead: pip, with the
    build's options and no index, is offered an empty wheel under the file name that index gives
    the pinned CPU torch for this Python, and must take it; and that name's tags fit the target.
    Not checked: the real wheel's dependencies (its own metadata)."""
    (pin,) = [
        pin
        for pin in python_env.requirements(python_version=python_version, torch_variant="cpu")
        if pin.startswith("torch==")
    ]
    version = pin.removeprefix("torch==")
    assert version.endswith("+cpu")
    name = CPU_TORCH_WHEEL.format(version=version.removesuffix("+cpu"), tag=python_version.replace(".", ""))
    assert parse_wheel_filename(name)[3] & target_tags(python_version)
    write_empty_wheel(tmp_path / name)
    resolved = python_env.resolve(
        [pin], python_version=python_version, extra_args=("--no-index", "--find-links", str(tmp_path))
    )
    assert [wheel_name(item) for item in resolved] == [name]


def test_extension_modules_of_another_python_are_found(tmp_path):
    site_packages = tmp_path / "lib" / "python3.10" / "site-packages"
    for name in (
        "numpy/core/_multiarray_umath.cpython-310-x86_64-linux-gnu.so",
        "PIL/_imaging.cpython-311-x86_64-linux-gnu.so",  # a wheel for 3.11 that pip let in
        "cryptography/hazmat/bindings/_rust.abi3.so",
        "torch/lib/libtorch_cpu.so",
    ):
        (site_packages / name).parent.mkdir(parents=True, exist_ok=True)
        (site_packages / name).touch()
    found = python_env.foreign_extensions(site_packages, "3.10")
    assert [path.name for path in found] == ["_imaging.cpython-311-x86_64-linux-gnu.so"]
    assert python_env.foreign_extensions(site_packages, "3.11") == [
        site_packages / "numpy/core/_multiarray_umath.cpython-310-x86_64-linux-gnu.so"
    ]


# --- the stock-container situation, for real -------------------------------------------------


class BareInterpreterServer(EmbeddedServer):
    """The embedded server with the bare interpreter, not this venv, first on PATH."""

    def environment(self) -> dict[str, str]:
        env = super().environment()
        venv_bin = str(Path(sys.executable).parent)
        others = [entry for entry in env["PATH"].split(os.pathsep) if entry != venv_bin]
        env["PATH"] = os.pathsep.join([str(BARE_PYTHON.parent), *others])
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
            env.pop(name, None)
        return env


def link_installed(site_packages: Path, name: str) -> list[str]:
    """Link distribution ``name`` and all it requires, as installed in this venv, into ``site_packages``.

    Top-level entries (packages, modules, dist-info folders) become symbolic links into this
    venv's site-packages; those ``site_packages`` has already are kept, EXCLUDED is left out.
    Returns the distributions linked.
    """
    todo = [Requirement(name)]
    seen: set[tuple[str, frozenset[str]]] = set()
    linked = []
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen or key[0] in python_env.EXCLUDED:
            continue
        seen.add(key)
        distribution = importlib.metadata.distribution(requirement.name)
        linked.append(distribution.metadata["Name"])
        for line in distribution.requires or []:
            dependency = Requirement(line)
            extras = ["", *sorted(requirement.extras)]
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dependency)
        for top in {file.parts[0] for file in distribution.files or [] if file.parts[0] != ".."}:
            link = site_packages / top
            if not link.exists() and not link.is_symlink():
                link.symlink_to(Path(distribution.locate_file(top)))
    return sorted(set(linked))


@pytest.fixture(scope="session")
def env_folder(tmp_path_factory) -> Path:
    """An environment folder for this Python, made by python_env's own functions, but for torch.

    numpy and Pillow are installed by ``python_env.install`` from the pins (wheels from PyPI), as
    in ``make python-env``. torch and its dependencies are links to this venv's installed copies
    (``link_installed``), without EXCLUDED: torch has no CPU wheel on PyPI for Linux, and its CUDA
    wheels (this venv's) weigh gigabytes. So this checks the environment's activation and
    isolation and that the models run without EXCLUDED; which torch wheel the build picks for the
    server's Python is checked by the resolution tests above.
    """
    if not BARE_PYTHON.is_file():
        pytest.skip(f"no {BARE_PYTHON}")
    missing = subprocess.run(
        [
            str(BARE_PYTHON),
            "-c",
            "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('PIL'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if missing != ["None", "None"]:
        pytest.skip(f"{BARE_PYTHON} has torch or Pillow; the test needs a Python without them")
    env = tmp_path_factory.mktemp("python_env") / "env"
    pins = python_env.requirements(python_version=PYTHON_VERSION)
    site_packages = python_env.install(
        env, python_version=PYTHON_VERSION, pins=[pin for pin in pins if not pin.startswith("torch==")]
    )
    assert "torch" in link_installed(site_packages, "torch")
    assert python_env.foreign_extensions(site_packages, PYTHON_VERSION) == []
    python_env.write_activate(env, PYTHON_VERSION)
    return env


@pytest.fixture(scope="session")
def packed_env(env_folder) -> Path:
    """``env_folder`` packed as `make python-env` packs it (before any activation wrote into it)."""
    return python_env.pack(env_folder, env_folder.parent / "archive" / python_env.ARCHIVE_NAME)


ACTIVATION_FILES = ("pyvenv.cfg", "bin/python3", f"bin/python{PYTHON_VERSION}")


@pytest.fixture(scope="session")
def in_place_env(env_folder, packed_env) -> tuple[Path, dict[str, int]]:
    """``env_folder`` as the image has it, activated once at build time, then used in place; and
    the inodes of what activation wrote (activate replaces a file it rewrites by a rename)."""
    python_env.activate_in_place(env_folder, path=f"{BARE_PYTHON.parent}:/usr/bin:/bin")
    return env_folder, {name: os.lstat(env_folder / name).st_ino for name in ACTIVATION_FILES}


# The image's form (a folder) for the server-side decode's two models, the archive for the
# postprocess: ssd300_detector runs through the archive only, ssd300_image through both.
IN_PLACE_MODELS = ("ssd300_image_preprocess", "ssd300_image_postprocess")


@pytest.fixture(scope="session")
def env_repository(built_repository, packed_env, in_place_env, tmp_path_factory) -> Path:
    """``built_repository`` whose Python-backend CPU configs carry an EXECUTION_ENV_PATH.

    Production's value (the archive beside the models) but for IN_PLACE_MODELS, which name the
    folder, as the image's configs do.
    """
    view = tmp_path_factory.mktemp("env_repo") / "model_repository"
    view.mkdir(parents=True)
    for model in sorted(p for p in built_repository.iterdir() if (p / "config.pbtxt").is_file()):
        cpu_config = model / "configs" / "cpu.pbtxt"
        if not cpu_config.is_file():  # an ensemble: one config everywhere
            (view / model.name).symlink_to(model, target_is_directory=True)
            continue
        (view / model.name / "configs").mkdir(parents=True)
        for item in model.iterdir():
            if item.name != "configs":
                (view / model.name / item.name).symlink_to(item)
        config = cpu_config.read_text()
        if parse_config(cpu_config).backend == "python":
            value = str(in_place_env[0]) if model.name in IN_PLACE_MODELS else production_env_path()
            config += f'parameters {{ key: "{ENV_PARAMETER}" value: {{ string_value: "{value}" }} }}\n'
        (view / model.name / "configs" / "cpu.pbtxt").write_text(config)
    # Where $$TRITON_MODEL_DIRECTORY/../ leads.
    (view / python_env.ARCHIVE_NAME).symlink_to(packed_env)
    return view


@pytest.fixture(scope="session")
def bare_server(env_repository, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("bare_server") / "tritonserver.log"
    server = BareInterpreterServer.on_free_ports(env_repository, log_path=log_path)
    server.start(timeout_s=600)
    yield server
    # At exit the backend deletes the unpacked environment file by file: give it time, so that
    # nothing is left in /tmp.
    server.stop(timeout_s=300)


def detections(server: EmbeddedServer, images: np.ndarray, encoded: list[bytes]) -> dict[str, dict]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        tensor = grpcclient.InferInput(contract.IMAGES_INPUT, list(images.shape), contract.IMAGES_DATATYPE)
        tensor.set_data_from_numpy(images)
        by_tensor = client.infer(contract.DETECTOR_MODEL, [tensor])
        files = grpcclient.InferInput(
            contract.ENCODED_IMAGE_INPUT, [len(encoded), 1], contract.ENCODED_IMAGE_DATATYPE
        )
        files.set_data_from_numpy(np.array([[data] for data in encoded], dtype=object))
        by_bytes = client.infer(contract.IMAGE_MODEL, [files])
    finally:
        client.close()
    return {
        contract.DETECTOR_MODEL: {name: by_tensor.as_numpy(name) for name in contract.DETECTION_OUTPUTS},
        contract.IMAGE_MODEL: {name: by_bytes.as_numpy(name) for name in contract.DETECTION_OUTPUTS},
    }


def assert_same_detections(served: dict, expected: dict, *, atol: float) -> None:
    """Same count per image and, detection by detection, the same class, score and box.

    Matched rather than compared row by row: two boxes of one class whose scores tie to within
    float rounding may come out in either order from two torch builds.
    """
    np.testing.assert_array_equal(served[contract.COUNT_OUTPUT], expected[contract.COUNT_OUTPUT])
    for image, count in enumerate(expected[contract.COUNT_OUTPUT][:, 0]):
        rows = [
            np.concatenate(
                [
                    [result[contract.CLASSES_OUTPUT][image, i]],
                    [result[contract.SCORES_OUTPUT][image, i]],
                    result[contract.BOXES_OUTPUT][image, i],
                ]
            )
            for result in (served, expected)
            for i in range(count)
        ]
        mine, theirs = rows[:count], rows[count:]
        unmatched = list(range(count))
        for row in mine:
            match = next((j for j in unmatched if np.allclose(row, theirs[j], rtol=0, atol=atol)), None)
            assert match is not None, f"image {image}: detection {row} has no counterpart"
            unmatched.remove(match)


@pytest.mark.server
@pytest.mark.python_env
def test_a_python_without_torch_or_pillow_serves_both_ensembles_from_the_archive_and_the_folder(
    bare_server, triton_server, in_place_env, sample_paths
):
    images = photo_batch(sample_paths, 4).numpy()
    encoded = [path.read_bytes() for path in sample_paths]
    served = detections(bare_server, images, encoded)
    expected = detections(triton_server, images, encoded)
    for model in contract.PUBLIC_MODELS:
        assert expected[model][contract.COUNT_OUTPUT].sum() > 0, "nothing to compare"
        # Boxes of ssd300_image are in pixels (up to ~1,000): 1e-3 there is 1e-6 relative.
        assert_same_detections(
            served[model], expected[model], atol=1e-3 if model == contract.IMAGE_MODEL else 2e-5
        )
    # activate found the server's interpreter for every stub (it says so on stderr otherwise).
    assert "python_env: no python" not in bare_server.log_path.read_text(errors="replace")
    # The stubs' activate found the folder as activated at build time and wrote nothing into it,
    # so the image's read-only root filesystem does not stop it.
    env, activated = in_place_env
    assert {name: os.lstat(env / name).st_ino for name in ACTIVATION_FILES} == activated
