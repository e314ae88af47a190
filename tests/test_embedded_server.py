"""The embedded server's start: what it refuses before launching tritonserver, and Ctrl-C."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ssd300_serving.embedded_server import GENERATED_FILES, EmbeddedServer, ServerError, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("missing", GENERATED_FILES)
def test_a_repository_without_the_builds_output_names_make_model(tmp_path, missing):
    repository = tmp_path / "model_repository"
    shutil.copytree(
        REPO_ROOT / "model_repository", repository, ignore=shutil.ignore_patterns("model.pt", "imaging.py")
    )
    for generated in GENERATED_FILES:
        if generated != missing:
            (repository / generated).write_text("# stands in for the build's output\n")
    server = EmbeddedServer(
        repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with pytest.raises(ServerError, match=rf"{missing} is missing: build it with `make model`"):
        server.start()
    assert server.process is None  # refused before anything was launched
