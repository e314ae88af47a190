"""Runs inside the interpreter of the stock container's torch (``tools/stock_torch.py`` starts
it): needs only torch and numpy, as the server's Python-backend stubs do.

Loads ``model.pt``, runs it on the given images, and runs both selection functions of the
served postprocess on its own outputs and on the outputs of the development torch, so the
caller can tell a difference of the network from one of the selection code.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch


def _selection(path: Path):
    spec = importlib.util.spec_from_file_location("detection_selection", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(model_path: str, selection_path: str, data_path: str, out_path: str) -> int:
    data = np.load(data_path)
    options = {key[len("option_") :]: data[key].item() for key in data.files if key.startswith("option_")}
    selection = _selection(Path(selection_path))
    model = torch.jit.load(model_path)
    with torch.inference_mode():
        boxes, scores = model(torch.from_numpy(data["images"]))
        results = {
            "torch_version": np.array(torch.__version__),
            "boxes": boxes.numpy(),
            "scores": scores.numpy(),
        }
        for source, (b, s) in {
            "own": (boxes, scores),
            "dev": (torch.from_numpy(data["boxes"]), torch.from_numpy(data["scores"])),
        }.items():
            for name in ("select_detections", "select_detections_gpu"):
                for index, array in enumerate(getattr(selection, name)(b, s, **options)):
                    results[f"{source}_{name}_{index}"] = array.numpy()
    np.savez(out_path, **results)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
