"""``make stock-torch``: does the repository run under the torch of the stock container?

`make model` traces ``model.pt`` with the development torch (requirements.txt), while the stock
``tritonserver:24.10-py3`` container loads it with its PyTorch backend's libtorch (PyTorch 2.5)
and runs the Python-backend models with the torch of the packed environment
(build/ssd300_build/python_env.txt pins the same release). This installs that torch into a
venv of its own under ``.tools/`` (PyPI's Linux build: about 3 GB with its CUDA libraries, no
GPU needed to import it), then, on the sample photos:

- loads ``model.pt`` with it and compares boxes and scores with the development torch's;
- runs both selection functions of the served postprocess under it, on the development
  torch's outputs (must be identical) and on its own (must match within the network's
  difference).

Writes ``reports/stock_torch/result.json``; exit code 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from load_tests.benchmark import serving
from load_tests.benchmark.inprocess import load_selection_module, served_selection_options
from load_tests.payloads import SampleImages
from ssd300_build.python_env import requirements
from ssd300_serving.embedded_server import stop_servers_on_sigterm

log = logging.getLogger("tools.stock_torch")
REPO_ROOT = Path(__file__).resolve().parents[1]
SELECTION_FILE = REPO_ROOT / "model_repository" / "ssd300_postprocess" / "1" / "detection_selection.py"
# Two builds of libtorch differ in kernels, not in results: outputs this close select the same
# detections but for ties (checked below on the detections themselves).
OUTPUT_TOLERANCE = 1e-4
SELECTIONS = ("select_detections", "select_detections_gpu")


def stock_venv(version: str, tools: Path) -> Path:
    """A venv holding the pinned torch and numpy of the packed environment (idempotent)."""
    venv = tools / f"torch-{version}"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    if done.is_file():
        return python
    pins = [line for line in requirements(torch_version=version) if line.startswith(("torch==", "numpy=="))]
    log.info("installing %s into %s (PyPI's CUDA build: ~3 GB, a few minutes)", " ".join(pins), venv)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    done.touch()
    return python


def compare(dev: dict, stock: dict) -> dict:
    """Figures and verdicts from the two runs' arrays (``dev``: development torch)."""
    result = {
        "max_abs_diff_boxes": float(np.abs(dev["boxes"] - stock["boxes"]).max()),
        "max_abs_diff_scores": float(np.abs(dev["scores"] - stock["scores"]).max()),
    }
    result["outputs_match"] = (
        max(result["max_abs_diff_boxes"], result["max_abs_diff_scores"]) <= OUTPUT_TOLERANCE
    )
    for name in SELECTIONS:
        same_input = [np.array_equal(dev[f"{name}_{i}"], stock[f"dev_{name}_{i}"]) for i in range(4)]
        result[f"{name}_identical_on_same_outputs"] = all(same_input)
        counts_equal = np.array_equal(dev[f"{name}_3"], stock[f"own_{name}_3"])
        close = counts_equal and all(
            np.allclose(dev[f"{name}_{i}"], stock[f"own_{name}_{i}"], atol=OUTPUT_TOLERANCE) for i in range(3)
        )
        result[f"{name}_matches_on_own_outputs"] = bool(close)
    result["ok"] = all(value for key, value in result.items() if isinstance(value, bool))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stock_torch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--torch-version", help="default: the pin in build/ssd300_build/python_env.txt")
    parser.add_argument("--tools", type=Path, default=REPO_ROOT / ".tools")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "stock_torch")
    args = parser.parse_args(argv)
    stop_servers_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    version = args.torch_version or next(
        line.split("==")[1] for line in requirements() if line.startswith("torch==")
    )
    python = stock_venv(version, args.tools)
    args.out.mkdir(parents=True, exist_ok=True)
    selection = load_selection_module()
    options = served_selection_options(selection)
    images = torch.from_numpy(SampleImages().pixels)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ssd300-stock-torch-") as workdir:
        repository = serving.repository_to_serve(args.repository, stack)
        model_path = repository / "ssd300" / "1" / "model.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(model_path))
        with torch.inference_mode():
            boxes, scores = model(images)
            dev = {"boxes": boxes.numpy(), "scores": scores.numpy()}
            for name in SELECTIONS:
                for index, array in enumerate(getattr(selection, name)(boxes, scores, **options)):
                    dev[f"{name}_{index}"] = array.numpy()
        data, out = Path(workdir) / "inputs.npz", Path(workdir) / "stock.npz"
        np.savez(
            data,
            images=images.numpy(),
            boxes=dev["boxes"],
            scores=dev["scores"],
            **{f"option_{key}": np.array(value) for key, value in options.items()},
        )
        log.info("running model.pt and the postprocess under torch %s", version)
        subprocess.run(
            [str(python), str(Path(__file__).with_name("stock_torch_run.py")), str(model_path),
             str(SELECTION_FILE), str(data), str(out)],
            check=True,
        )  # fmt: skip
        stock = dict(np.load(out))
    result = {
        "development_torch": torch.__version__,
        "stock_torch": str(stock.pop("torch_version")),
        "images": len(images),
        **compare(dev, stock),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        log.info("%-40s %s", key, value)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
