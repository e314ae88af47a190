"""The packed Python environment (`make python-env`, Triton's EXECUTION_ENV_PATH).

The real test starts the bundled tritonserver from a Python that has neither torch nor Pillow,
as in the stock container, with every Python-backend model pointed at an archive built by
ssd300_build.python_env for this Python version, and checks that both ensembles give the
detections of the normal embedded server. The archive is built once per session.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ssd300_build import python_env
from ssd300_client import contract
from ssd300_serving.embedded_server import EmbeddedServer

from .helpers.images import photo_batch

REPO_ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = REPO_ROOT / "model_repository"
ENV_PARAMETER = "EXECUTION_ENV_PATH"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# The interpreter this venv was made from: on this machine kind (pyenv's 3.11) it has numpy but
# neither torch nor Pillow, like the stock container's Python.
BARE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{PYTHON_VERSION}"
# The test archive takes a CPU build of torch: a tenth of the CUDA build's size. This machine
# kind keeps torch 2.13.0's CPU wheel for Python 3.11 on disk, where pip finds it; elsewhere
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu makes pip fetch it.
TEST_TORCH_VERSION = "2.13.0"


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
    from packaging.markers import Marker

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
    packed = python_env.requirements()
    for name in ("pillow", "numpy"):
        assert pinned(name, packed, PYTHON_VERSION) == pinned(name, development, PYTHON_VERSION)
    # Pillow 13 has no wheels for Python 3.10 (the 24.10 container's): the last 12.x is pinned.
    assert pinned("pillow", packed, "3.10") == "12.3.0"


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


@pytest.fixture(scope="session")
def packed_env(tmp_path_factory) -> Path:
    """The archive, built once per session by the same code as `make python-env`."""
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
    output = tmp_path_factory.mktemp("python_env") / python_env.ARCHIVE_NAME
    return python_env.build(
        output,
        python_version=PYTHON_VERSION,
        torch_variant="cpu",
        torch_version=TEST_TORCH_VERSION,
        torch_index_url="",
    )


@pytest.fixture(scope="session")
def env_repository(built_repository, packed_env, tmp_path_factory) -> Path:
    """``built_repository`` whose Python-backend CPU configs carry production's EXECUTION_ENV_PATH."""
    value = production_env_path()
    parameter = f'parameters {{ key: "{ENV_PARAMETER}" value: {{ string_value: "{value}" }} }}\n'
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
            config += parameter
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
def test_a_python_without_torch_or_pillow_serves_both_ensembles_from_the_archive(
    bare_server, triton_server, sample_paths
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
