"""``python -m load_tests.perf`` (``make perf``): see the package docstring."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import tritonclient.grpc as grpcclient

from load_tests.benchmark import cpu_share, serving, triton_stats
from load_tests.benchmark import report as bench_report
from load_tests.benchmark.formatting import fmt, percent, to_json
from load_tests.payloads import SampleImages
from load_tests.perf import analyzer, inputs, report
from ssd300_serving.embedded_server import stop_servers_on_sigterm
from tools.external_tools import ToolInstallError, install_perf_analyzer

log = logging.getLogger("load_tests.perf")
REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.perf",
        description="perf_analyzer 2.51 against the embedded tritonserver: its CSVs, a table and a plot.",
    )
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--reports", type=Path, default=REPO_ROOT / "reports" / "perf")
    parser.add_argument("--markdown-copy", type=Path, default=REPO_ROOT / "load_tests" / "BENCHMARK.md")
    parser.add_argument("--no-copy", action="store_true", help="leave load_tests/BENCHMARK.md alone")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=[s.name for s in analyzer.SCENARIOS],
        default=[s.name for s in analyzer.SCENARIOS],
    )
    analyzer.add_arguments(parser)
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.10,
        help="before each point, wait until other processes use less than this CPU share",
    )
    parser.add_argument(
        "--max-wait-s", type=float, default=120.0, help="total time the run may spend waiting for that"
    )
    parser.add_argument(
        "--render", type=Path, metavar="RESULTS_JSON", help="only rewrite the report from a results.json"
    )
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, binary: Path) -> dict:
    samples = SampleImages()
    runner = analyzer.Runner(
        binary,
        inputs.write_input_data(samples, args.reports / "inputs"),
        analyzer.settings_from(args),
        args.reports,
        args.point_timeout_s,
    )
    results: dict = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": bench_report.machine(),
        "settings": {
            **asdict(runner.settings),
            "concurrency": args.concurrency,
            "quiet_below": args.quiet_below,
        },
        "points": [],
    }
    began = time.monotonic()
    with ExitStack() as stack:
        repository = serving.repository_to_serve(args.repository, stack)
        server = serving.start(repository, args.reports / "tritonserver.log", stack)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            results["server"] = serving.server_facts(client)
        log.info("warming up: batch sizes 1..%d", max(args.concurrency))
        triton_stats.warm_up(server.grpc_url, samples, max_batch=max(args.concurrency))
        # perf_analyzer's window count varies; a point that never stabilises stops at max_trials.
        quiet = cpu_share.QuietWaiter(threshold=args.quiet_below, budget_s=args.max_wait_s)
        for scenario in args.scenarios:
            for concurrency in args.concurrency:
                quiet.wait()
                point = runner.point(server, scenario, concurrency)
                results["points"].append(point)
                log.info(
                    "perf_analyzer %-10s c=%d  %s img/s  p95 %s ms  other processes' CPU %s%s",
                    scenario,
                    concurrency,
                    fmt(point.images_per_s),
                    fmt((point.latency_ms or {}).get("p95"), 0),
                    percent(point.foreign_cpu_share),
                    f"  ERROR {point.error}" if point.error else "",
                )
        results["waited_for_quiet_s"] = quiet.waited_s
    results["duration_s"] = time.monotonic() - began
    results["commands"] = {
        name: (args.reports / f"{name}_c{args.concurrency[-1]}.cmd").read_text().strip()
        for name in args.scenarios
    }
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_servers_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.reports.mkdir(parents=True, exist_ok=True)
    if args.render:
        results = report.from_json(args.render.read_text())
    else:
        try:
            binary = install_perf_analyzer()
        except ToolInstallError as error:
            log.error("cannot install perf_analyzer: %s", error)
            return 1
        results = measure(args, binary)
        (args.reports / "results.json").write_text(to_json(results))
    section = report.markdown(results, reports=args.reports)
    (args.reports / "PERF_ANALYZER.md").write_text(section)
    report.plot(results, args.reports / "perf_analyzer.png")
    if not args.no_copy:
        report.plot(results, args.markdown_copy.parent / report.PLOT_NAME)
        report.write_section(args.markdown_copy, section)
    log.info("wrote %s", args.reports)
    failed = [p for p in results["points"] if p.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
