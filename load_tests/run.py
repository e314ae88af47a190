"""``make load``: a bounded headless Locust run against the server, starting one if none answers.

    python -m load_tests.run [--run-time 60s] [--users 8] [-- extra locust options]

Reports (CSV and HTML) go to reports/load/. The exit code is Locust's: 0 when the thresholds
held, 1 otherwise. A server this command starts (the embedded tritonserver on the given ports,
serving --repository) is stopped at the end; one that already answers is used as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
from pathlib import Path

from load_tests.endpoints import GRPC, HTTP, parse_endpoint
from ssd300_client.endpoints import is_loopback, split_host_port
from ssd300_serving.embedded_server import EmbeddedServer, free_port
from ssd300_serving.health import check

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
# On CPUs: 20 s flags a broken server, not a busy machine (docs/decisions.md); 5 s is for GPUs.
CPU_MAX_P95_MS = 20_000
# In-flight requests get this long to finish after --run-time, so none ends as a failure.
STOP_TIMEOUT_S = 30

log = logging.getLogger("load_tests.run")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m load_tests.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-url", default="127.0.0.1:8000", help="server HTTP endpoint (%(default)s)")
    parser.add_argument("--grpc-url", default="127.0.0.1:8001", help="server gRPC endpoint (%(default)s)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="served if needed")
    parser.add_argument("--run-time", default="60s", help="Locust --run-time (%(default)s)")
    parser.add_argument("--users", type=int, default=8, help="concurrent users (%(default)s)")
    parser.add_argument("--spawn-rate", type=float, default=0, help="users per second (default: all at once)")
    parser.add_argument("--max-p95-ms", type=float, default=CPU_MAX_P95_MS, help="p95 limit (%(default)s)")
    parser.add_argument("--max-failure-ratio", type=float, default=0.0, help="limit (%(default)s)")
    parser.add_argument("--reports", type=Path, default=Path("reports/load"), help="for CSV and HTML")
    args, extra = parser.parse_known_args(argv)
    return args, [item for item in extra if item != "--"]


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    http, grpc = parse_endpoint(args.http_url, protocol=HTTP), parse_endpoint(args.grpc_url, protocol=GRPC)
    args.reports.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        healthy, reason = check(http.address, timeout_s=30)
        if healthy:
            log.info("using the server at %s", http.address)
        elif not is_loopback(http.address):
            log.error("no healthy server at %s (%s); one is started only on loopback", http.address, reason)
            return 2
        else:
            log.info("no healthy server at %s (%s): serving %s", http.address, reason, args.repository)
            server = EmbeddedServer(
                args.repository,
                http_port=split_host_port(http.address)[1],
                grpc_port=split_host_port(grpc.address)[1],
                metrics_port=free_port(),
                log_path=args.reports / "tritonserver.log",
            )
            stack.enter_context(server)
        prefix = args.reports / "ssd300"
        completed = subprocess.run(
            [
                sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                "--users", str(args.users), "--spawn-rate", str(args.spawn_rate or args.users),
                "--run-time", args.run_time, "--stop-timeout", str(STOP_TIMEOUT_S),
                "--host", grpc.address, "--http-url", f"http://{http.address}",
                "--max-p95-ms", str(args.max_p95_ms), "--max-failure-ratio", str(args.max_failure_ratio),
                "--csv", str(prefix), "--html", f"{prefix}.html", *extra,
            ]
        )  # fmt: skip
    log.info("reports: %s_stats.csv, %s.html", prefix, prefix)
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
