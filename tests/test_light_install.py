"""``pip install .`` is the client and CLI without torch: guarded by importing them with torch
(and the other extras) made unimportable, in a fresh interpreter. The shared core
(ssd300_common) goes further: numpy and Pillow are all it may import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

from ssd300_common import samples

REPO_ROOT = Path(__file__).resolve().parents[1]

# A meta-path finder that refuses the extras' packages, as an environment without them would.
# (gevent stays: tritonclient[http] needs it through geventhttpclient.)
BLOCKER = """
import sys
BLOCKED = {"torch", "torchvision", "pycocotools", "av", "locust", "onnx", "onnxruntime"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, Blocker())
"""


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )


def test_the_client_and_cli_import_and_run_without_torch():
    result = run_blocked(
        "import ssd300_client, ssd300_client.cli, ssd300_client.evaluation, ssd300_client.async_detector\n"
        "from ssd300_client.cli import main\n"
        "assert main(['--version']) == 0\n"
        "assert 'torch' not in sys.modules and 'av' not in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ssd300-detect ")


def imported_beyond_the_standard_library(code: str) -> list[str]:
    """The top-level modules outside the standard library that ``code`` imports in a fresh
    interpreter (those loaded from a file: Cython's runtime registers a few that are not)."""
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"{code}\n"
        "new = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        "new = {name for name in new if getattr(sys.modules.get(name), '__file__', None)}\n"
        "print(' '.join(sorted(new - set(sys.stdlib_module_names))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_shared_core_imports_nothing_but_the_standard_library_numpy_and_pillow():
    """What the models' environment and the image's export stage can import: no tritonclient,
    no torch, nothing of the client."""
    imported = imported_beyond_the_standard_library(
        "import ssd300_common.contract, ssd300_common.imaging, ssd300_common.labels, ssd300_common.samples\n"
        "assert ssd300_common.samples.paths()"
    )
    assert imported == ["PIL", "numpy", "ssd300_common"]


def test_importing_the_shared_core_package_alone_imports_neither_numpy_nor_its_modules():
    """python_env.py imports it to find its folder, where numpy may be missing (the image's stage)."""
    assert imported_beyond_the_standard_library("import ssd300_common") == ["ssd300_common"]
    code = "import sys, ssd300_common\nassert not [m for m in sys.modules if m.startswith('ssd300_common.')]"
    assert imported_beyond_the_standard_library(code) == ["ssd300_common"]


def test_the_blocker_really_blocks():
    result = run_blocked("import torch")
    assert result.returncode != 0 and "blocked by the test" in result.stderr


def test_a_video_without_pyav_is_skipped_naming_the_extra_not_a_traceback(tmp_path, triton_server):
    """Against the session's server, so the run really reaches the video: it is skipped (exit 1)
    with the install hint, and the image beside it is still detected."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    photo = samples.paths()[0]
    result = run_blocked(
        "from ssd300_client.cli import main\n"
        f"sys.exit(main([{str(photo)!r}, {str(clip)!r}, '--url', {triton_server.grpc_url!r}, '--print']))\n"
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"skipped {clip}" in result.stderr and "pip install 'ssd300-triton[video]'" in result.stderr
    assert result.stdout.startswith(f"{photo}: ")
    assert result.stderr.rstrip().endswith("; 1 skipped") and "1 image, " in result.stderr


def test_the_package_declares_no_torch_and_ships_its_type_marker():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith(("torch", "av", "pycocotools", "locust"))]
    extras = project["optional-dependencies"]
    assert {"build", "eval", "video", "load", "dev"} <= set(extras)
    assert any(d.startswith("torch") for d in extras["build"])
    assert any(d.startswith("av") for d in extras["video"])
    assert (REPO_ROOT / "client" / "ssd300_client" / "py.typed").is_file()


def test_ssd300_build_without_torch_names_the_extra_to_install():
    result = run_blocked("from ssd300_build.entry import main\nsys.exit(main(['--help']))\n")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pip install 'ssd300-triton[build]'" in result.stderr


def test_the_ssd300_build_command_points_at_the_guarded_entry():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ssd300-build"] == "ssd300_build.entry:main"
