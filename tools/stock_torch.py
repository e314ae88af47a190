"""``make stock-torch``: does the repository run under the torch of the stock container?

The stock ``tritonserver:24.10-py3`` container runs ``model.pt`` with its libtorch (PyTorch 2.5)
and the Python-backend models with the packed environment's torch 2.5.1 (python_env.txt), while
`make model` traces with the development torch. This installs torch 2.5.1 with its torchvision,
numpy and Pillow into a venv under ``.tools/`` (PyPI's build, ~3 GB with its CUDA libraries; no GPU
needed) and runs ``python -m load_tests.benchmark.gpu_check`` there on the CPU, at its smallest
settings, with ``PYTHONPATH`` alone on the project's folders (no tritonclient, pytriton or onnx).
Its ``outputs.npz`` must match the development torch's on the same model.pt: boxes and scores
within 1e-4, both selection functions' detections alike. Writes ``reports/stock_torch/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from load_tests.benchmark import gpu_check, gpu_models
from ssd300_build.python_env import requirements
from ssd300_common.contract import ENGINE_FILES, NETWORK_MODEL
from ssd300_serving.served_code import load_selection

log = logging.getLogger("tools.stock_torch")
REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_PATH = os.pathsep.join(str(REPO_ROOT / name) for name in ("common", "build", "serving", "."))
# Two builds of libtorch differ in kernels, not in results: outputs this close select the same
# detections but for ties at the cut, which the comparison (gpu_check.detection_parity) allows.
OUTPUT_TOLERANCE = 1e-4
SELECTIONS = ("select_detections", "select_detections_gpu")
GPU_CHECK_SETTINGS = ["--device", "cpu", "--batch-sizes", "1", "--repeats", "1", "--warmup", "0"]


def stock_venv(version: str, tools: Path) -> Path:
    """A venv holding that torch, its torchvision, and the packed environment's numpy and Pillow
    for this Python (rebuilt when the pins change)."""
    pins = requirements(python_version="{}.{}".format(*sys.version_info), torch_version=version)
    minor, patch = version.split(".")[1:3]
    pins.append(f"torchvision==0.{int(minor) + 15}.{patch}")  # torch 2.m.p pairs with 0.(m+15).p
    venv = tools / f"torch-{version}"
    python, done = venv / "bin" / "python", venv / ".installed"
    if done.is_file() and done.read_text().split() == pins:
        return python
    log.info("installing %s into %s (PyPI's CUDA build: ~3 GB, a few minutes)", " ".join(pins), venv)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    done.write_text("\n".join(pins) + "\n")
    return python


def compare(dev: dict, stock: dict) -> dict:
    """Verdicts from the two runs' ``outputs.npz`` arrays (``dev``: the development torch's)."""
    result = {
        f"max_abs_diff_{key}": float(np.abs(dev[key] - stock[key]).max()) for key in ("boxes", "scores")
    }
    result["outputs_match"] = max(result.values()) <= OUTPUT_TOLERANCE
    for name in SELECTIONS:
        expected, actual = ([torch.from_numpy(run[f"{name}_{i}"]) for i in range(4)] for run in (dev, stock))
        parity = gpu_check.detection_parity(expected, actual, OUTPUT_TOLERANCE)
        result[f"{name}_detections_match"] = parity["verdict"] == "equal"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stock_torch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "stock_torch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")  # what Triton runs
    version = next(pin.split("==")[1] for pin in requirements() if pin.startswith("torch=="))
    python = stock_venv(version, REPO_ROOT / ".tools")
    with tempfile.TemporaryDirectory(prefix="ssd300-stock-torch-") as repository:
        # one model.pt for both torches: each would calibrate random weights in its own arithmetic
        served, description = gpu_check.served_model(args.repository)
        (Path(repository) / NETWORK_MODEL / "1").mkdir(parents=True)
        torch.jit.save(served, str(Path(repository) / NETWORK_MODEL / "1" / ENGINE_FILES["torchscript"]))
        selection = load_selection()
        dev = gpu_check.served_outputs(served, selection, gpu_models.served_settings(selection))
        log.info("gpu_check under torch %s on the CPU, on %s", version, description)
        command = [str(python), "-m", "load_tests.benchmark.gpu_check", *GPU_CHECK_SETTINGS]
        command += ["--repository", repository, "--out", str(args.out / "gpu_check")]
        env = {**os.environ, "PYTHONPATH": PACKAGE_PATH, "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.monotonic()
        status = subprocess.run(command, env=env, cwd=REPO_ROOT).returncode
    report = json.loads((args.out / "gpu_check" / "gpu_check.json").read_text()) if status == 0 else {}
    result = {
        "development_torch": torch.__version__,
        "stock_torch": report.get("torch"),
        "model": description,
        "gpu_check_exit_status": status,
        "gpu_check_seconds": round(time.monotonic() - start, 1),
        **(compare(dev, dict(np.load(args.out / "gpu_check" / "outputs.npz"))) if status == 0 else {}),
    }
    result["ok"] = status == 0 and all(value for value in result.values() if isinstance(value, bool))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        log.info("%-40s %s", key, value)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
