"""``make stock-torch``: does the repository run under the torch of the stock container?

`make model` traces ``model.pt`` with the development torch (requirements.txt), while the stock
``tritonserver:24.10-py3`` container loads it with its PyTorch backend's libtorch (PyTorch 2.5)
and runs the Python-backend models with the packed environment's torch (python_env.txt pins the
same release). This installs that torch with its torchvision, numpy and Pillow into a venv of its
own under ``.tools/`` (PyPI's Linux build, ~3 GB with its CUDA libraries; no GPU needed to import
it) and runs there, with ``PYTHONPATH`` alone on the project's folders (no tritonclient, pytriton
or onnx in that venv):

- ``model.pt`` on the sample photos: boxes and scores within 1e-4 of the development torch's,
  and both selection functions of the served postprocess identical on the same outputs;
- ``python -m load_tests.benchmark.gpu_check`` on the CPU at its smallest settings.

Writes ``reports/stock_torch/result.json`` (and ``gpu_check/``); exit status 1 on a failure.
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

log = logging.getLogger("tools.stock_torch")
REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_PATH = os.pathsep.join(str(REPO_ROOT / name) for name in ("client", "build", "serving", "."))
# Two builds of libtorch differ in kernels, not in results: outputs this close select the same
# detections but for ties, and the selections are compared on the same outputs anyway.
OUTPUT_TOLERANCE = 1e-4
SELECTIONS = ("select_detections", "select_detections_gpu")
GPU_CHECK_SETTINGS = ["--device", "cpu", "--batch-sizes", "1", "--postprocess-batches", "1", "--repeats", "1"]
GPU_CHECK_SETTINGS += ["--warmup", "0", "--precisions", "fp32", "fp16"]


def stock_venv(version: str, tools: Path) -> Path:
    """A venv holding that torch, its torchvision, and the packed environment's numpy and Pillow
    for this Python (rebuilt when the pins change)."""
    from ssd300_build.python_env import requirements  # packaging: the development venv only

    python_version = "{}.{}".format(*sys.version_info)
    pins = requirements(python_version=python_version, torch_version=version)
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


def run(model_path: Path, images: np.ndarray, outputs: dict | None = None) -> dict[str, np.ndarray]:
    """model.pt's boxes and scores on ``images``, and both served selections of ``outputs`` (the
    arrays of another run) or of its own: under whichever torch runs this."""
    from load_tests.benchmark.gpu_models import served_settings
    from ssd300_serving.served_code import load_selection

    selection = load_selection()
    settings = served_settings(selection)
    with torch.inference_mode():
        boxes, scores = torch.jit.load(str(model_path))(torch.from_numpy(images))
        result = {"torch": np.array(torch.__version__), "boxes": boxes.numpy(), "scores": scores.numpy()}
        inputs = (
            [torch.from_numpy(outputs[key]) for key in ("boxes", "scores")] if outputs else (boxes, scores)
        )
        for name in SELECTIONS:
            for index, array in enumerate(getattr(selection, name)(*inputs, **settings)):
                result[f"{name}_{index}"] = array.numpy()
    return result


def compare(dev: dict, stock: dict) -> dict:
    """Verdicts from the two runs' arrays (``dev``: development torch)."""
    result = {
        f"max_abs_diff_{key}": float(np.abs(dev[key] - stock[key]).max()) for key in ("boxes", "scores")
    }
    result["outputs_match"] = max(result.values()) <= OUTPUT_TOLERANCE
    for name in SELECTIONS:
        same = all(np.array_equal(dev[f"{name}_{i}"], stock[f"{name}_{i}"]) for i in range(4))
        result[f"{name}_identical_on_same_outputs"] = same
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stock_torch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--torch-version", help="default: the pin in build/ssd300_build/python_env.txt")
    parser.add_argument("--tools", type=Path, default=REPO_ROOT / ".tools")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "stock_torch")
    parser.add_argument(
        "--inside", nargs=3, type=Path, metavar=("MODEL", "INPUTS", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.inside:  # the stock torch's side, started below
        model_path, inputs, out = args.inside
        data = dict(np.load(inputs))
        np.savez(out, **run(model_path, data.pop("images"), data))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")  # what Triton runs
    from load_tests.benchmark.gpu_check import served_model
    from load_tests.benchmark.gpu_models import photos
    from ssd300_build.python_env import requirements

    version = args.torch_version or next(p.split("==")[1] for p in requirements() if p.startswith("torch=="))
    python = stock_venv(version, args.tools)
    env = {**os.environ, "PYTHONPATH": PACKAGE_PATH, "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory(prefix="ssd300-stock-torch-") as workdir:
        model_path, inputs, out = (Path(workdir) / name for name in ("model.pt", "inputs.npz", "stock.npz"))
        served, description = served_model(args.repository)
        torch.jit.save(served, str(model_path))
        images = photos().numpy()
        dev = run(model_path, images)
        np.savez(inputs, images=images, boxes=dev["boxes"], scores=dev["scores"])
        log.info("running %s and the postprocess under torch %s", description, version)
        command = [str(python), "-m", "tools.stock_torch", "--inside", str(model_path), str(inputs), str(out)]
        subprocess.run(command, env=env, cwd=REPO_ROOT, check=True)
        stock = dict(np.load(out))
    log.info("running gpu_check under torch %s on the CPU", version)
    check_out, start = args.out / "gpu_check", time.monotonic()
    command = [str(python), "-m", "load_tests.benchmark.gpu_check", *GPU_CHECK_SETTINGS]
    command += ["--repository", str(args.repository), "--out", str(check_out)]
    check = subprocess.run(command, env=env, cwd=REPO_ROOT)
    report = json.loads((check_out / "gpu_check.json").read_text()) if check.returncode == 0 else {}
    result = {
        "development_torch": torch.__version__,
        "stock_torch": str(stock["torch"]),
        "model": description,
        "images": len(images),
        **compare(dev, stock),
        "gpu_check_exit_status": check.returncode,
        "gpu_check_torch": report.get("torch"),
        "gpu_check_seconds": round(time.monotonic() - start, 1),
    }
    result["ok"] = all(v for v in result.values() if isinstance(v, bool)) and check.returncode == 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        log.info("%-40s %s", key, value)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
