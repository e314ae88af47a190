"""perf_analyzer, Triton's own load generator, against the embedded server: the one runner of
``make bench`` and ``make perf``.

One perf_analyzer process per point (scenario × concurrency): it writes its CSV only when the
whole run succeeds, so a point it cannot measure (no stable windows on a busy machine) costs
that point only. Around each process the server's statistics of ``ssd300`` are read, since
perf_analyzer reports neither the batches the dynamic batcher formed nor the network's time.
"""

from __future__ import annotations

import csv
import itertools
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient

from load_tests.payloads import SampleImages
from load_tests.perf.inputs import write_input_data
from ssd300_common.contract import DETECTOR_MODEL, IMAGE_MODEL, NETWORK_MODEL
from ssd300_serving.embedded_server import EmbeddedServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    title: str
    model: str
    inputs: str  # which --input-data file (write_input_data's keys)
    flags: str = "-i grpc"


SCENARIOS = {
    "grpc": Scenario("gRPC, uint8 tensor", DETECTOR_MODEL, "detector"),
    "http": Scenario("HTTP, uint8 tensor (binary)", DETECTOR_MODEL, "detector", "-i http"),
    "grpc_shm": Scenario(
        "gRPC, uint8 tensor in system shared memory",
        DETECTOR_MODEL,
        "detector",
        "-i grpc --shared-memory system",
    ),
    "image_grpc": Scenario("gRPC, ssd300_image (JPEG bytes, server decodes)", IMAGE_MODEL, "image"),
}
# A count window holds at least this many rounds of the closed loop (docs/decisions.md).
WINDOW_ROUNDS = 4
POINT_TIMEOUT_S = 900  # a point still running after this long is reported as failed


@dataclass(frozen=True)
class Settings:
    requests_per_window: int = 40  # perf_analyzer count_windows (or WINDOW_ROUNDS × concurrency)
    stability_percent: int = 20
    max_trials: int = 6  # bounds a point: at c=1, 6 windows are ~1 min at 4 images/s


@dataclass
class PerfPoint:
    scenario: str
    concurrency: int
    images_per_s: float | None = None  # one image per request
    latency_ms: dict[str, float] | None = None  # p50, p95, p99: client side
    network: dict[str, float] | None = None  # ssd300's statistics over the run (statistics_delta)
    error: str | None = None


def network_counters(client: grpcclient.InferenceServerClient) -> dict[str, int]:
    """ssd300's cumulative counters. Triton keeps queue time per request and compute time per
    execution (``batch_stats``), where a batch's compute counts once."""
    stats = client.get_inference_statistics(NETWORK_MODEL, as_json=True)["model_stats"][0]
    queue = stats.get("inference_stats", {})
    return {
        "inferences": int(stats.get("inference_count", 0)),  # images
        "executions": int(stats.get("execution_count", 0)),
        "requests": int(queue.get("success", {}).get("count", 0)),
        "queue_ns": int(queue.get("queue", {}).get("ns", 0)),
        "compute_ns": sum(int(b.get("compute_infer", {}).get("ns", 0)) for b in stats.get("batch_stats", [])),
    }


def statistics_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    change = {key: after[key] - before[key] for key in before}
    executions = max(change["executions"], 1)
    return {
        "average_batch": change["inferences"] / executions,
        "queue_ms_per_request": change["queue_ns"] / 1e6 / max(change["requests"], 1),
        "compute_ms_per_execution": change["compute_ns"] / 1e6 / executions,
    }


@dataclass
class Runner:
    """What the points of one run share: ``Runner(binary, server, folder).point("grpc", 8)``.
    perf_analyzer's command line, log and CSV of each point are left in ``folder``."""

    binary: Path
    server: EmbeddedServer  # or anything with grpc_url and http_url
    folder: Path
    settings: Settings
    input_files: dict[str, Path]  # write_input_data's

    def command(self, name: str, concurrency: int, csv_path: Path) -> list[str]:
        scenario, settings = SCENARIOS[name], self.settings
        url = self.server.http_url if scenario.flags == "-i http" else self.server.grpc_url
        window = max(settings.requests_per_window, WINDOW_ROUNDS * concurrency)
        return [
            str(self.binary),
            *("-m", scenario.model, "-u", url, *scenario.flags.split()),
            *("--input-data", str(self.input_files[scenario.inputs])),
            *("--concurrency-range", f"{concurrency}:{concurrency}"),
            *("--measurement-mode", "count_windows", "--measurement-request-count", str(window)),
            *("--stability-percentage", str(settings.stability_percent)),
            *("--max-trials", str(settings.max_trials), "-f", str(csv_path), "--verbose-csv"),
        ]

    def point(self, name: str, concurrency: int) -> PerfPoint:
        stem = self.folder / f"{name}_c{concurrency}"
        csv_path = stem.with_suffix(".csv")
        csv_path.unlink(missing_ok=True)
        argv = self.command(name, concurrency, csv_path)
        stem.with_suffix(".cmd").write_text(" ".join(argv) + "\n")
        point = PerfPoint(name, concurrency)
        with grpcclient.InferenceServerClient(self.server.grpc_url) as client:
            before = network_counters(client)
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=POINT_TIMEOUT_S)
                output, failed = done.stdout + done.stderr, done.returncode != 0
            except subprocess.TimeoutExpired:
                output, failed = f"perf_analyzer ran past {POINT_TIMEOUT_S} s", True
            point.network = statistics_delta(before, network_counters(client))
        stem.with_suffix(".log").write_text(output)
        if failed or not csv_path.is_file():
            point.error = ([line for line in output.splitlines() if line.strip()] or ["no output"])[-1]
            return point
        with csv_path.open(newline="") as handle:
            (row,) = list(csv.DictReader(handle))  # one concurrency: one row
        point.images_per_s = float(row["Inferences/Second"])
        point.latency_ms = {p: int(row[f"{p} latency"]) / 1000 for p in ("p50", "p95", "p99")}
        return point


def server_facts(server: EmbeddedServer) -> dict:
    """The server's version and how ssd300 is served, from the server itself."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        config = client.get_model_config(NETWORK_MODEL, as_json=True)["config"]
        version = client.get_server_metadata().version
    parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    return {"version": version, "weights": parameters.get("weights"), "engine": parameters.get("engine")}


def measure(binary: Path, repository: Path, reports: Path, scenarios, concurrencies, settings) -> dict:
    """Serve ``repository`` on free ports and measure every scenario at every concurrency:
    {"server": server_facts, "points": [PerfPoint, ...]}."""
    input_files, points = write_input_data(SampleImages(), reports / "inputs"), []
    # No warm-up of our own: the server's start sends a canary inference through every model.
    with EmbeddedServer.on_free_ports(repository, log_path=reports / "tritonserver.log") as server:
        facts, runner = server_facts(server), Runner(binary, server, reports, settings, input_files)
        for name, concurrency in itertools.product(scenarios, concurrencies):
            points.append(point := runner.point(name, concurrency))
            figures = point.error or f"{point.images_per_s:.2f} img/s, p95 {point.latency_ms['p95']:.0f} ms"
            log.info(
                "%s c=%d: %s, ssd300 batch %.2f", name, concurrency, figures, point.network["average_batch"]
            )
    return {"server": facts, "points": points}
