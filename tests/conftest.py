"""Shared fixtures: one model repository built with seeded random weights, and one real
tritonserver (the embedded one) per test session, on free loopback ports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ssd300_build.__main__ import _sample_photos
from ssd300_build.export import write_model
from ssd300_build.sources import load_network
from ssd300_client import samples
from ssd300_serving.embedded_server import EmbeddedServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 1234


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    return samples.paths()


@pytest.fixture(scope="session")
def random_network():
    """SSD300 with calibrated random weights (docs/testing.md), eval mode; what the test server serves."""
    torch.manual_seed(SEED)
    network, metadata = load_network("random", seed=SEED, calibration_photos=_sample_photos())
    return network, metadata


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory, random_network) -> Path:
    """A copy of model_repository/ with model.pt built from ``random_network``."""
    repository = tmp_path_factory.mktemp("repo") / "model_repository"
    shutil.copytree(
        REPO_ROOT / "model_repository",
        repository,
        ignore=shutil.ignore_patterns(
            "model.pt", "weights.json", "imaging.py", "python_env.tar.gz*", "__pycache__"
        ),
    )
    network, metadata = random_network
    write_model(network, repository, metadata)
    return repository


@pytest.fixture(scope="session")
def triton_server(built_repository, tmp_path_factory):
    """The embedded tritonserver serving ``built_repository``; ``.http_url``/``.grpc_url`` are host:port."""
    log_path = tmp_path_factory.mktemp("server") / "tritonserver.log"
    server = EmbeddedServer(
        built_repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_path=log_path,
    )
    with server:
        yield server
