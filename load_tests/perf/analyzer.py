"""Run perf_analyzer for one scenario at one concurrency and read its CSV: the one load
generator of the project (``make bench`` and ``make perf`` both measure with it).

One perf_analyzer process per point: it writes its CSV only when a whole run succeeds, so a
point that cannot be measured (no stable window on a busy machine) costs that point only.
perf_analyzer measures in windows (a number of requests in count_windows mode, or
``--measurement-interval`` ms) and reports the last three once throughput and average
latency vary by less than ``--stability-percentage`` across them.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient

from load_tests.benchmark import cpu_share
from load_tests.benchmark.triton_stats import model_statistics, statistics_delta
from ssd300_common.contract import DETECTOR_MODEL, IMAGE_MODEL, NETWORK_MODEL, POSTPROCESS_MODEL


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    model: str
    inputs: str  # which --input-data file (inputs.write_input_data's keys)
    shared_memory: str = "none"  # perf_analyzer --shared-memory
    protocol: str = "grpc"  # perf_analyzer -i


SCENARIOS = (
    Scenario("grpc", "gRPC, uint8 tensor", DETECTOR_MODEL, "detector"),
    Scenario("http", "HTTP, uint8 tensor (binary)", DETECTOR_MODEL, "detector", protocol="http"),
    Scenario("grpc_shm", "gRPC, uint8 tensor in system shared memory", DETECTOR_MODEL, "detector", "system"),
    Scenario("image_grpc", "gRPC, ssd300_image (JPEG bytes, server decodes)", IMAGE_MODEL, "image"),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
TITLES = {scenario.name: scenario.title for scenario in SCENARIOS}


@dataclass(frozen=True)
class Settings:
    window_ms: int
    stability_percent: int
    max_trials: int
    # Windows of this many requests instead of window_ms (perf_analyzer's count_windows mode):
    # a time window in which a busy machine answers nothing is an error to perf_analyzer.
    requests_per_window: int | None = None


# A count window holds at least this many rounds of the closed loop. With windows of 20 requests
# (5 rounds at c=4, 1.25 at c=16), whether a window ends on a large batch or a small one moved
# its figures by more than 20 % and perf_analyzer found no three stable windows in 8 (seen
# twice in one make bench, 2026-11-29: ssd300_image at c=8, the sweep's preferred [4] at c=4);
# hence 40 requests, and 4 rounds at high concurrency.
WINDOW_ROUNDS = 4


def window_requests(requests_per_window: int, concurrency: int) -> int:
    """Requests per count window: the configured number, or more at high concurrency."""
    return max(requests_per_window, WINDOW_ROUNDS * concurrency)


@dataclass
class PerfPoint:
    scenario: str
    concurrency: int
    csv: str  # perf_analyzer's own CSV, relative to the reports folder
    images_per_s: float | None = None  # one image per request
    requests: int | None = None  # in the reported windows (perf_analyzer's "Request count")
    latency_ms: dict[str, float] | None = None  # p50, p95, p99, avg: client side
    server_ms: dict[str, float] | None = None  # queue, compute (input+infer+output) of the model called
    # Triton's statistics of ssd300 and ssd300_postprocess over the whole perf_analyzer run
    # (triton_stats.statistics_delta): average executed batch, compute per execution, ...
    network: dict[str, float] | None = None
    postprocess: dict[str, float] | None = None
    foreign_cpu_share: float | None = None
    duration_s: float | None = None
    error: str | None = None


def command(
    binary: Path,
    scenario: Scenario,
    *,
    url: str,
    input_file: Path,
    concurrency: int,
    settings: Settings,
    csv_path: Path,
) -> list[str]:
    return [
        str(binary),
        *("-m", scenario.model, "-u", url, "-i", scenario.protocol),
        *("--input-data", str(input_file), "--shared-memory", scenario.shared_memory),
        *("--concurrency-range", f"{concurrency}:{concurrency}"),
        *(
            (
                "--measurement-mode",
                "count_windows",
                "--measurement-request-count",
                str(window_requests(settings.requests_per_window, concurrency)),
            )
            if settings.requests_per_window
            else ("--measurement-interval", str(settings.window_ms))
        ),
        *(
            "--stability-percentage",
            str(settings.stability_percent),
            "--max-trials",
            str(settings.max_trials),
        ),
        *("-f", str(csv_path), "--verbose-csv"),
    ]


def _us_to_ms(row: dict[str, str], column: str) -> float:
    return int(row[column]) / 1000


def read_csv(path: Path) -> dict[str, str]:
    """The row of a single-concurrency run."""
    with path.open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    return row


def figures_from_row(row: dict[str, str]) -> dict:
    return {
        "images_per_s": float(row["Inferences/Second"]),
        "latency_ms": {
            "p50": _us_to_ms(row, "p50 latency"),
            "p95": _us_to_ms(row, "p95 latency"),
            "p99": _us_to_ms(row, "p99 latency"),
            "avg": _us_to_ms(row, "Avg latency"),
        },
        "server_ms": {
            "queue": _us_to_ms(row, "Server Queue"),
            "compute": sum(
                _us_to_ms(row, c)
                for c in ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
            ),
        },
    }


def run_point(
    binary: Path,
    scenario: Scenario,
    *,
    grpc_url: str,
    http_url: str,
    input_file: Path,
    concurrency: int,
    settings: Settings,
    reports: Path,
    timeout_s: float,
) -> PerfPoint:
    """One perf_analyzer process at ``concurrency``; Triton's statistics are read over gRPC."""
    url = http_url if scenario.protocol == "http" else grpc_url
    csv_path = reports / f"{scenario.name}_c{concurrency}.csv"
    csv_path.unlink(missing_ok=True)
    point = PerfPoint(scenario.name, concurrency, csv_path.name)
    argv = command(
        binary,
        scenario,
        url=url,
        input_file=input_file,
        concurrency=concurrency,
        settings=settings,
        csv_path=csv_path,
    )
    (reports / f"{scenario.name}_c{concurrency}.cmd").write_text(" ".join(argv) + "\n")
    log_path = reports / f"{scenario.name}_c{concurrency}.log"
    with grpcclient.InferenceServerClient(grpc_url) as client:
        network_before = model_statistics(client, NETWORK_MODEL)
        postprocess_before = model_statistics(client, POSTPROCESS_MODEL)
        cpu_before = cpu_share.snapshot()
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
            output, returncode = result.stdout + result.stderr, result.returncode
        except subprocess.TimeoutExpired as expired:  # its streams are bytes, whatever text= says
            output = b"".join(s for s in (expired.stdout, expired.stderr) if s).decode(errors="replace")
            returncode = None
        cpu_after = cpu_share.snapshot()
        network_after = model_statistics(client, NETWORK_MODEL)
        postprocess_after = model_statistics(client, POSTPROCESS_MODEL)
    log_path.write_text(output)
    point.foreign_cpu_share = cpu_share.foreign_share(cpu_before, cpu_after)
    point.duration_s = cpu_after.at - cpu_before.at if cpu_before and cpu_after else None
    point.network = statistics_delta(network_before, network_after)
    point.postprocess = statistics_delta(postprocess_before, postprocess_after)
    if returncode is None:
        point.error = f"perf_analyzer ran past {timeout_s:.0f} s (log: {log_path.name})"
    elif returncode != 0 or not csv_path.is_file():
        last = [line for line in log_path.read_text().splitlines() if line.strip()][-1:] or ["no output"]
        point.error = f"perf_analyzer exit code {returncode}: {last[0]} (log: {log_path.name})"
    else:
        for key, value in figures_from_row(read_csv(csv_path)).items():
            setattr(point, key, value)
        counted = re.search(r"Client:\s+Request count: (\d+)", output)
        point.requests = int(counted.group(1)) if counted else None
    return point


@dataclass(frozen=True)
class Runner:
    """What every point of a run shares: ``runner.point(server, "grpc", 8)``."""

    binary: Path
    input_files: dict[str, Path]  # inputs.write_input_data's result
    settings: Settings
    reports: Path
    timeout_s: float

    def point(self, server, scenario: str, concurrency: int) -> PerfPoint:
        """``server``: anything with ``grpc_url`` and ``http_url`` (an EmbeddedServer)."""
        chosen = BY_NAME[scenario]
        return run_point(
            self.binary,
            chosen,
            grpc_url=server.grpc_url,
            http_url=server.http_url,
            input_file=self.input_files[chosen.inputs],
            concurrency=concurrency,
            settings=self.settings,
            reports=self.reports,
            timeout_s=self.timeout_s,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """perf_analyzer's measurement options, the same for ``make bench`` and ``make perf``."""
    parser.add_argument(
        "--requests-per-window",
        type=int,
        default=40,
        help="perf_analyzer count_windows: each window ends after this many requests, or "
        f"{WINDOW_ROUNDS} x the concurrency if more (0: time windows)",
    )
    parser.add_argument(
        "--window-ms", type=int, default=5000, help="perf_analyzer --measurement-interval (time windows)"
    )
    parser.add_argument(
        "--stability-percent", type=int, default=20, help="perf_analyzer --stability-percentage"
    )
    parser.add_argument("--max-trials", type=int, default=10, help="perf_analyzer --max-trials")
    parser.add_argument(
        "--point-timeout-s", type=float, default=900.0, help="stop a perf_analyzer point after this long"
    )


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(args.window_ms, args.stability_percent, args.max_trials, args.requests_per_window or None)
