"""The embedded server a benchmark measures: which repository it serves, starting it on free
ports, and the facts of its configuration that the reports print."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import tritonclient.grpc as grpcclient

from ssd300_build.export import write_model
from ssd300_common import contract
from ssd300_serving.embedded_server import EmbeddedServer
from ssd300_serving.provenance import read_provenance

log = logging.getLogger(__name__)
# The seed `make model WEIGHTS=random` uses, so in-process and served weights agree.
RANDOM_SEED = 0


def random_network():
    """(network, metadata): the calibrated random SSD300 of ``make model WEIGHTS=random``."""
    from ssd300_build.calibration import sample_photos
    from ssd300_build.sources import load_network

    return load_network("random", seed=RANDOM_SEED, calibration_photos=sample_photos())


def link_tree(source: Path, target: Path, *, real: tuple[str, ...] = ()) -> None:
    """``target``: a folder of links to ``source``'s entries. The relative paths in ``real``
    (``"ssd300/1"``) become folders of links themselves, so a file inside can be replaced
    without touching ``source``."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name == "__pycache__":
            continue
        inner = tuple(path.partition("/")[2] for path in real if path.partition("/")[0] == item.name)
        if inner:
            link_tree(item, target / item.name, real=tuple(path for path in inner if path))
        else:
            (target / item.name).symlink_to(item.resolve())


def _temporary_folder(stack: ExitStack) -> Path:
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssd300-bench-")))


def served_repository(repository: Path, network, metadata: dict, stack: ExitStack) -> Path:
    """The repository as built, served by the TorchScript engine, or a temporary copy holding a
    model.pt of ``network``.

    The main run's rows are TorchScript's (ONNX Runtime is measured beside them), whichever engine
    ``make model`` chose: a build with ENGINE=onnx is served through a view whose weights.json
    names torchscript. An FP16 model.pt is not what CPUs serve: the copy replaces it."""
    provenance = read_provenance(repository)
    if (repository / contract.NETWORK_MODEL / "1" / "model.pt").is_file() and provenance:
        if provenance.get("precision", "fp32") == "fp32":
            if provenance.get("engine", "torchscript") == "torchscript":
                return repository
            log.info("%s was built with ENGINE=%s: serving its model.pt", repository, provenance["engine"])
            view = _temporary_folder(stack) / "model_repository"
            link_tree(repository, view, real=(f"{contract.NETWORK_MODEL}/1",))
            weights = view / contract.NETWORK_MODEL / "1" / "weights.json"
            weights.unlink()
            weights.write_text(json.dumps({**provenance, "engine": "torchscript"}, indent=2) + "\n")
            return view
        log.info("%s holds an FP16 model.pt (for GPUs)", repository)
    log.info("serving a temporary copy of %s built with random weights", repository)
    copy = _temporary_folder(stack) / "model_repository"
    generated = ("model.pt", "model.onnx", "weights.json", "__pycache__")
    shutil.copytree(repository, copy, ignore=shutil.ignore_patterns(*generated))
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
