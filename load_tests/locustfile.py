"""Locust load test for SSD300 on Triton: gRPC and HTTP users of ``ssd300_detector`` (uint8
tensors) and ``ssd300_image`` (encoded files, decoded by the server).

    locust -f load_tests/locustfile.py --headless -u 8 -r 8 -t 60s --host 127.0.0.1:8001 \
        --http-url 127.0.0.1:8000 --csv reports/load/ssd300 --html reports/load/ssd300.html

``--host`` picks the protocol as the Helm chart passes it (endpoints.py); users run on every
protocol that has an endpoint. At the end the run is judged (thresholds.py): a violated threshold
makes the exit code 1, so a CI job or the chart's Job fails. load_tests/README.md lists the options.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# Locust imports this file by its path, as the top-level module "locustfile", and puts only the
# working directory and this folder on sys.path. Its siblings are imported as the load_tests
# package, as everywhere else, so the folder holding load_tests/ must be importable too, from
# whatever directory Locust runs in (a checkout, the load-test image, a chart pod).
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

# First: initialises gRPC's gevent support before anything imports tritonclient.grpc.
from load_tests.triton_user import DETECTOR, IMAGE, TritonUser  # isort: skip

from locust import events
from locust.runners import WorkerRunner

from load_tests.endpoints import GRPC, HTTP, resolve_endpoints
from load_tests.thresholds import DEFAULT_MAX_FAILURE_RATIO, DEFAULT_MAX_P95_MS, violations

log = logging.getLogger("ssd300.load")


class GrpcDetectorUser(TritonUser):
    protocol, request = GRPC, DETECTOR


class HttpDetectorUser(TritonUser):
    protocol, request = HTTP, DETECTOR


class GrpcImageUser(TritonUser):
    protocol, request = GRPC, IMAGE


class HttpImageUser(TritonUser):
    protocol, request = HTTP, IMAGE


# (option, type, default, help); each also reads SSD300_<OPTION> (the chart's loadTest.env).
OPTIONS = (
    ("--grpc-url", str, "", "gRPC endpoint [grpc[s]://]host:port (default: --host if it is one)"),
    ("--http-url", str, "", "HTTP endpoint [http[s]://]host:port (default: --host if it is one)"),
    ("--ca-cert", str, "", "TLS: CA bundle (PEM) that signed the server's certificate"),
    ("--client-cert", str, "", "TLS: client certificate (PEM)"),
    ("--client-key", str, "", "TLS: the client certificate's key"),
    ("--detector-weight", int, 3, "weight of ssd300_detector users (uint8 tensors in)"),
    ("--image-weight", int, 1, "weight of ssd300_image users (encoded files in)"),
    ("--batch-size", int, 1, "images per request"),
    ("--think-time-s", float, 0.0, "pause between a user's requests"),
    ("--request-timeout-s", float, 60.0, "client timeout per request"),
    ("--max-failure-ratio", float, DEFAULT_MAX_FAILURE_RATIO, "fail the run above this"),
    ("--max-p95-ms", float, DEFAULT_MAX_P95_MS, "fail the run above this p95 (0: no limit)"),
)


@events.init_command_line_parser.add_listener
def add_options(parser):
    group = parser.add_argument_group("SSD300", "Options of load_tests/locustfile.py")
    for option, kind, default, text in OPTIONS:
        env_var = "SSD300_" + option[2:].replace("-", "_").upper()
        group.add_argument(option, env_var=env_var, type=kind, default=default, help=text)


@events.init.add_listener
def choose_users(environment, **_kwargs):
    """Weights from the options; users of a protocol without an endpoint are left out.

    Runs where users are dispatched (a local runner or the master): Locust has already dropped
    zero-weight classes when this event fires, so the list is filtered here.
    """
    if isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    if options.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    endpoints = resolve_endpoints(environment.host, grpc_url=options.grpc_url, http_url=options.http_url)
    if not endpoints:
        raise ValueError(
            "no endpoint: pass --host (host:port for gRPC, http://host:port for HTTP) "
            "or --grpc-url/--http-url"
        )
    weights = {DETECTOR: options.detector_weight, IMAGE: options.image_weight}
    for user in environment.user_classes:
        user.weight = weights[user.request] if user.protocol in endpoints else 0
    environment.user_classes[:] = [user for user in environment.user_classes if user.weight > 0]
    if not environment.user_classes:
        raise ValueError("every user weight is 0 for the protocols given")
    mix = ", ".join(f"{user.__name__}={user.weight}" for user in environment.user_classes)
    log.info("endpoints %s; users %s", {p: e.address for p, e in endpoints.items()}, mix)


@events.quitting.add_listener
def judge_run(environment, **_kwargs):
    """The verdict on the whole run becomes the process exit code (workers leave it to the master)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    options, total = environment.parsed_options, environment.stats.total
    p95_ms = total.get_response_time_percentile(0.95) or 0.0
    problems = violations(
        requests=total.num_requests,
        failures=total.num_failures,
        p95_ms=p95_ms,
        max_failure_ratio=options.max_failure_ratio,
        max_p95_ms=options.max_p95_ms,
    )
    for problem in problems:
        log.error("threshold violated: %s", problem)
    if not problems:
        log.info("thresholds met: failure ratio %.2f%%, p95 %.0f ms", 100 * total.fail_ratio, p95_ms)
    environment.process_exit_code = 1 if problems else 0
