"""The embedded server a benchmark measures: which repository it serves, starting it on free
ports, and the facts of its configuration that the reports print."""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import tritonclient.grpc as grpcclient

from ssd300_build.export import write_model
from ssd300_client import contract
from ssd300_serving.embedded_server import EmbeddedServer

log = logging.getLogger(__name__)
# The seed `make model WEIGHTS=random` uses, so in-process and served weights agree.
RANDOM_SEED = 0


def random_network():
    """(network, metadata): the calibrated random SSD300 of ``make model WEIGHTS=random``."""
    from ssd300_build.__main__ import _sample_photos
    from ssd300_build.sources import load_network

    return load_network("random", seed=RANDOM_SEED, calibration_photos=_sample_photos())


def served_repository(repository: Path, network, metadata: dict, stack: ExitStack) -> Path:
    """The repository as built, or a temporary copy holding a model.pt of ``network``."""
    if (repository / contract.NETWORK_MODEL / "1" / "model.pt").is_file():
        return repository
    log.info("%s has no model.pt: serving a temporary copy built with random weights", repository)
    copy = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssd300-bench-"))) / "model_repository"
    shutil.copytree(
        repository, copy, ignore=shutil.ignore_patterns("model.pt", "weights.json", "__pycache__")
    )
    write_model(network, copy, metadata)
    return copy


def repository_to_serve(repository: Path, stack: ExitStack) -> Path:
    """The built repository, or a temporary copy with the calibrated random weights."""
    if (repository / contract.NETWORK_MODEL / "1" / "model.pt").is_file():
        return repository
    return served_repository(repository, *random_network(), stack)


def start(repository: Path, log_path: Path, stack: ExitStack) -> EmbeddedServer:
    """An embedded server on free ports, stopped when ``stack`` closes."""
    server = EmbeddedServer.on_free_ports(repository, log_path=log_path)
    log.info("starting tritonserver on %s", repository)
    return stack.enter_context(server)


def server_facts(client: grpcclient.InferenceServerClient) -> dict:
    config = client.get_model_config(contract.NETWORK_MODEL, as_json=True)["config"]
    batching = config.get("dynamic_batching", {})
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", []))
    delay_ms = int(batching.get("max_queue_delay_microseconds", 0)) / 1000
    return {
        "version": client.get_server_metadata().version,
        "weights": config.get("parameters", {}).get("weights", {}).get("string_value", "unknown"),
        # as numbers too: the report compares them with the measured execution times
        "instances": instances,
        "max_queue_delay_ms": delay_ms,
        "network_config": (
            f"{instances} instance(s), dynamic batching preferred "
            f"{batching.get('preferred_batch_size', [])}, max queue delay "
            f"{delay_ms:g} ms, "
            f"max batch {config.get('max_batch_size')}, forward passes of at most "
            f"{config.get('parameters', {}).get('max_forward_batch', {}).get('string_value', '0')} images "
            "(0: any)"
        ),
    }
