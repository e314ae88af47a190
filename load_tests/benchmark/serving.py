"""The repository a run serves: the one built, or a temporary copy built from the calibrated
random network (the seed of ``make model WEIGHTS=random``, so in-process and served agree)."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

from load_tests.benchmark.gpu_models import random_network
from ssd300_build.export import write_model
from ssd300_common.contract import ENGINE_FILES, METADATA_FILE, NETWORK_MODEL

NOT_COPIED = (*ENGINE_FILES.values(), METADATA_FILE, "python_env.tar.gz*", "__pycache__")


def built_copy(repository: Path, network, metadata: dict, stack: ExitStack) -> Path:
    """A copy of ``repository`` built from ``network`` with the default engine (ONNX Runtime):
    model.pt and model.onnx of the same weights, removed when ``stack`` closes."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssd300-bench-")))
    shutil.copytree(repository, folder / "model_repository", ignore=shutil.ignore_patterns(*NOT_COPIED))
    write_model(network, folder / "model_repository", metadata, engine="onnx")
    return folder / "model_repository"


def repository_to_serve(repository: Path, stack: ExitStack) -> Path:
    """The built repository, or a temporary copy with the calibrated random weights."""
    if (repository / NETWORK_MODEL / "1" / ENGINE_FILES["torchscript"]).is_file():
        return repository
    return built_copy(repository, *random_network(), stack)
