"""The served postprocess's selection code, loaded outside Triton (benchmarks, checks, tests).

``detection_selection.py`` lives in the model repository beside the ``model.py`` that imports it,
because the Python backend puts that folder on the stub's path; it is not a package module. This is
the one place that loads it by file, as the stub does. Standard library only: the GPU check runs
it under a foreign torch with no tritonclient installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
SELECTION_FILE = Path("ssd300_postprocess") / "1" / "detection_selection.py"


def load_selection(repository: Path = REPOSITORY) -> ModuleType:
    """``detection_selection`` of ``repository``'s postprocess, as a fresh module."""
    path = repository / SELECTION_FILE
    spec = importlib.util.spec_from_file_location("detection_selection", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no selection module at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
