"""Shared fixtures: one model repository built with seeded random weights, one real tritonserver
(the embedded one) per test session on free loopback ports, private servers for the suites that
break theirs, and the reliability figures. Helpers shared by test modules are in tests/helpers/.

Every test that needs a tritonserver carries the ``server`` marker, and every test that needs the
SSD300 network carries ``model``: both are applied here from the fixtures a test uses (or written
on tests that start a server or build a network themselves), so
``pytest -m "not server and not model"`` runs the rest in seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from load_tests.external_tools import install_model_analyzer
from ssd300_build.calibration import sample_photos
from ssd300_build.export import write_model
from ssd300_build.sources import load_network
from ssd300_common import samples
from ssd300_serving.embedded_server import EmbeddedServer
from tools.reliability_report import FIGURES_ENV

from .helpers.figures import Figures
from .helpers.servers import PrivateServers

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 1234
# A test using any of these (directly or through another fixture) needs a running tritonserver,
# or at least the SSD300 network built with random weights (seconds to minutes of CPU).
SERVER_FIXTURES = frozenset({"triton_server", "private_servers"})
MODEL_FIXTURES = frozenset({"random_network"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.server)
        if fixtures & MODEL_FIXTURES:
            item.add_marker(pytest.mark.model)


MODEL_ANALYZER_INSTALL = pytest.StashKey[Future]()


def pytest_collection_finish(session):
    """Model Analyzer's own venv is about a minute of pip on a clean machine, mostly downloads:
    when the run includes its tests, install it in the background while the others run."""
    if any("model_analyzer" in getattr(item, "fixturenames", ()) for item in session.items):
        future: Future = Future()

        def install() -> None:
            try:
                future.set_result(install_model_analyzer())
            except BaseException as error:  # handed to the fixture, which reports it
                future.set_exception(error)

        # A daemon: an interrupted run must not wait for pip (a half install is redone next time).
        threading.Thread(target=install, name="model-analyzer-install", daemon=True).start()
        session.config.stash[MODEL_ANALYZER_INSTALL] = future


@pytest.fixture(scope="session")
def model_analyzer(pytestconfig) -> Path:
    """Model Analyzer's command (``.tools/model-analyzer``), as installed in the background."""
    future = pytestconfig.stash.get(MODEL_ANALYZER_INSTALL, None)
    try:
        return future.result(timeout=900) if future else install_model_analyzer()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"Model Analyzer cannot be installed here: {error}")


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    return samples.paths()


@pytest.fixture(scope="session")
def random_network():
    """SSD300 with calibrated random weights (docs/testing.md), eval mode; what the test server serves."""
    torch.manual_seed(SEED)
    network, metadata = load_network("random", seed=SEED, calibration_photos=sample_photos())
    return network, metadata


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory, random_network) -> Path:
    """A copy of model_repository/ with model.pt built from ``random_network``."""
    repository = tmp_path_factory.mktemp("repo") / "model_repository"
    shutil.copytree(
        REPO_ROOT / "model_repository",
        repository,
        ignore=shutil.ignore_patterns(
            "model.pt", "model.onnx", "weights.json", "python_env.tar.gz*", "__pycache__"
        ),
    )
    network, metadata = random_network
    write_model(network, repository, metadata)
    return repository


@pytest.fixture(scope="session")
def triton_server(built_repository, tmp_path_factory):
    """The embedded tritonserver serving ``built_repository``; ``.http_url``/``.grpc_url`` are host:port.
    Shared by every module: no test may break, lock or overload it."""
    log_path = tmp_path_factory.mktemp("server") / "tritonserver.log"
    server = EmbeddedServer.on_free_ports(
        built_repository,
        log_path=log_path,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def private_servers(built_repository, tmp_path_factory):
    """Servers of this module's own (see ``PrivateServers``), stopped when the module ends."""
    servers = PrivateServers(built_repository, tmp_path_factory.mktemp("private"))
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def reliability_figures(tmp_path_factory):
    """What the reliability suites measured. Written at the end of the session to
    ``$SSD300_RELIABILITY_FIGURES`` (``make reliability`` sets it), else to a temporary folder:
    a plain test run leaves the working tree as it found it."""
    record = Figures()
    yield record
    target = os.environ.get(FIGURES_ENV)
    record.write(Path(target) if target else tmp_path_factory.mktemp("reliability") / "figures.json")
