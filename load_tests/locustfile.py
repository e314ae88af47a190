"""Locust load test for SSD300 on Triton: gRPC, HTTP and server-side-decode users.

    locust -f load_tests/locustfile.py --headless -u 8 -r 8 -t 60s --host 127.0.0.1:8001 \
        --http-url 127.0.0.1:8000 --csv reports/load/ssd300 --html reports/load/ssd300.html

``--host`` picks the protocol (``host:port`` = gRPC, ``http://host:port`` = HTTP, as the Helm
chart passes it); ``--grpc-url`` / ``--http-url`` add the other protocol. Users run on every
protocol that has an endpoint; ``--detector-weight`` / ``--image-weight`` set the mix between
tensor requests (``ssd300_detector``) and encoded-image requests (``ssd300_image``). Every
option below also reads an environment variable (the chart's ``loadTest.env``).

At the end the run is judged (failure ratio, p95 latency, thresholds.py); a violated threshold
makes the exit code 1, so a CI job or the chart's Job fails.
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
from load_tests.triton_user import TritonGrpcUser, TritonHttpUser  # isort: skip

from locust import events, task
from locust.runners import WorkerRunner

from load_tests.endpoints import resolve_endpoints
from load_tests.thresholds import DEFAULT_MAX_FAILURE_RATIO, DEFAULT_MAX_P95_MS, Thresholds

log = logging.getLogger("ssd300.load")


class GrpcDetectorUser(TritonGrpcUser):
    @task
    def detect(self):
        self.detect_pixels()


class HttpDetectorUser(TritonHttpUser):
    @task
    def detect(self):
        self.detect_pixels()


class GrpcImageUser(TritonGrpcUser):
    @task
    def detect(self):
        self.detect_encoded()


class HttpImageUser(TritonHttpUser):
    @task
    def detect(self):
        self.detect_encoded()


@events.init_command_line_parser.add_listener
def add_options(parser):
    group = parser.add_argument_group("SSD300", "Options of load_tests/locustfile.py")
    group.add_argument(
        "--grpc-url",
        env_var="SSD300_GRPC_URL",
        default="",
        help="gRPC endpoint [grpc[s]://]host:port (default: --host if it is one)",
    )
    group.add_argument(
        "--http-url",
        env_var="SSD300_HTTP_URL",
        default="",
        help="HTTP endpoint [http://]host:port (default: --host if it is one)",
    )
    group.add_argument(
        "--ca-cert",
        env_var="SSD300_CA_CERT",
        default="",
        help="TLS: CA bundle (PEM) that signed the server's certificate (grpcs:// or https:// URLs)",
    )
    group.add_argument(
        "--client-cert", env_var="SSD300_CLIENT_CERT", default="", help="TLS: client certificate (PEM)"
    )
    group.add_argument(
        "--client-key", env_var="SSD300_CLIENT_KEY", default="", help="TLS: the client certificate's key"
    )
    group.add_argument(
        "--detector-weight",
        env_var="SSD300_DETECTOR_WEIGHT",
        type=int,
        default=3,
        help="weight of ssd300_detector users (uint8 tensors in)",
    )
    group.add_argument(
        "--image-weight",
        env_var="SSD300_IMAGE_WEIGHT",
        type=int,
        default=1,
        help="weight of ssd300_image users (encoded files in)",
    )
    group.add_argument(
        "--batch-size",
        env_var="SSD300_BATCH_SIZE",
        type=int,
        default=1,
        help="images per ssd300_detector request",
    )
    group.add_argument(
        "--image-batch-size",
        env_var="SSD300_IMAGE_BATCH_SIZE",
        type=int,
        default=1,
        help="images per ssd300_image request",
    )
    group.add_argument(
        "--think-time-s",
        env_var="SSD300_THINK_TIME_S",
        type=float,
        default=0.0,
        help="pause between a user's requests",
    )
    group.add_argument(
        "--request-timeout-s",
        env_var="SSD300_REQUEST_TIMEOUT_S",
        type=float,
        default=60.0,
        help="client timeout per request",
    )
    group.add_argument(
        "--max-failure-ratio",
        env_var="SSD300_MAX_FAILURE_RATIO",
        type=float,
        default=DEFAULT_MAX_FAILURE_RATIO,
        help="fail the run above this",
    )
    group.add_argument(
        "--max-p95-ms",
        env_var="SSD300_MAX_P95_MS",
        type=float,
        default=DEFAULT_MAX_P95_MS,
        help="fail the run above this p95 (0: no limit)",
    )


def user_weights(options) -> dict[type, int]:
    return {
        GrpcDetectorUser: options.detector_weight,
        HttpDetectorUser: options.detector_weight,
        GrpcImageUser: options.image_weight,
        HttpImageUser: options.image_weight,
    }


@events.init.add_listener
def choose_users(environment, **_kwargs):
    """Weights from the options; users of a protocol without an endpoint are left out.

    Runs where users are dispatched (a local runner or the master): Locust has already dropped
    zero-weight classes when this event fires, so the list is filtered here.
    """
    if isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    for name in ("batch_size", "image_batch_size"):
        if getattr(options, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    endpoints = resolve_endpoints(environment.host, grpc_url=options.grpc_url, http_url=options.http_url)
    if not endpoints:
        raise ValueError(
            "no endpoint: pass --host (host:port for gRPC, http://host:port for HTTP) "
            "or --grpc-url/--http-url"
        )
    weights = user_weights(options)
    for user_class in environment.user_classes:
        user_class.weight = (
            weights.get(user_class, user_class.weight) if user_class.protocol in endpoints else 0
        )
    environment.user_classes[:] = [
        user_class for user_class in environment.user_classes if user_class.weight > 0
    ]
    if not environment.user_classes:
        raise ValueError("every user weight is 0 for the protocols given")
    mix = ", ".join(f"{user_class.__name__}={user_class.weight}" for user_class in environment.user_classes)
    log.info("endpoints %s; users %s", {p: e.address for p, e in endpoints.items()}, mix)


@events.quitting.add_listener
def judge_run(environment, **_kwargs):
    """The verdict on the whole run becomes the process exit code (workers leave it to the master)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    thresholds = Thresholds(max_failure_ratio=options.max_failure_ratio, max_p95_ms=options.max_p95_ms)
    total = environment.stats.total
    problems = thresholds.violations(
        requests=total.num_requests,
        failures=total.num_failures,
        p95_ms=total.get_response_time_percentile(0.95) or 0.0,
    )
    for problem in problems:
        log.error("threshold violated: %s", problem)
    if not problems:
        log.info(
            "thresholds met: failure ratio %.2f%%, p95 %.0f ms",
            100 * total.fail_ratio,
            total.get_response_time_percentile(0.95),
        )
    environment.process_exit_code = 1 if problems else 0
