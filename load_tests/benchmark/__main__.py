"""``python -m load_tests.benchmark`` (``make bench``): see the package docstring."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch
import tritonclient.grpc as grpcclient

from load_tests.benchmark import (
    cpu_share,
    cpu_sweep,
    dispatch_count,
    engines,
    inprocess,
    plot,
    report,
    serving,
    triton_stats,
    wire_sizes,
)
from load_tests.benchmark.formatting import fmt, percent, to_json
from load_tests.payloads import SampleImages
from load_tests.perf import analyzer, inputs
from load_tests.perf import report as perf_report
from ssd300_serving.embedded_server import EmbeddedServer, stop_servers_on_sigterm
from tools.external_tools import ToolInstallError, install_perf_analyzer
from tools.markdown_sections import update_section

log = logging.getLogger("load_tests.benchmark")
REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.benchmark", description="In-process and Triton benchmark of SSD300."
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=REPO_ROOT / "model_repository",
        help="served as is if its model.pt exists",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=REPO_ROOT / "reports" / "bench",
        help="results folder (default: %(default)s)",
    )
    parser.add_argument(
        "--markdown-copy",
        type=Path,
        default=REPO_ROOT / "load_tests" / "BENCHMARK.md",
        help="committed copy of the report",
    )
    parser.add_argument(
        "--no-copy", action="store_true", help="leave the committed BENCHMARK.md alone (trial runs)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument(
        "--modes", nargs="+", choices=list(analyzer.BY_NAME), default=list(analyzer.BY_NAME), help="scenarios"
    )
    analyzer.add_arguments(parser)
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="only rewrite the Markdown and plot from an earlier run's results.json",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of each in-process figure")
    parser.add_argument(
        "--no-sweep", action="store_true", help="skip the sweep of ssd300's CPU batching/instance settings"
    )
    parser.add_argument("--sweep-concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument(
        "--sweep-passes", type=int, default=cpu_sweep.PASSES, help="passes over the sweep's concurrencies"
    )
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="skip the ONNX Runtime rows (in-process and served) beside the TorchScript ones",
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.10,
        help="before each measurement, wait until other processes use less than this CPU share",
    )
    parser.add_argument(
        "--max-wait-s",
        type=float,
        default=120.0,
        help="total time the run may spend waiting for that (default: %(default)s)",
    )
    return parser.parse_args(argv)


def served_onnx_points(copy: Path, samples, quiet, args, runner: analyzer.Runner):
    """The gRPC tensor rows again, with the embedded server running the ONNX engine."""
    server = EmbeddedServer.on_free_ports(copy, log_path=args.reports / "tritonserver-onnx.log")
    log.info("starting tritonserver with the ONNX engine")
    points = []
    with server:
        triton_stats.warm_up(server.grpc_url, samples, max_batch=max(args.concurrency))
        for concurrency in args.concurrency:
            quiet.wait()
            point = runner.point(server, "grpc", concurrency)
            log_point("onnx grpc", point)
            points.append(point)
    return points


def log_point(label: str, point: analyzer.PerfPoint) -> None:
    log.info(
        "%-10s c=%d  %s img/s  p50 %s ms  p95 %s ms  batch %s  other processes' CPU %s%s",
        label,
        point.concurrency,
        fmt(point.images_per_s),
        fmt((point.latency_ms or {}).get("p50"), 0),
        fmt((point.latency_ms or {}).get("p95"), 0),
        fmt((point.network or {}).get("average_batch")),
        percent(point.foreign_cpu_share),
        f"  ERROR {point.error}" if point.error else "",
    )


def phase_runner(runner: analyzer.Runner, name: str) -> analyzer.Runner:
    """The same runner writing perf_analyzer's files to a folder of their own."""
    folder = runner.reports / name
    folder.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(runner, reports=folder)


def write_reports(results: dict, args: argparse.Namespace) -> None:
    text = report.markdown(results)
    (args.reports / "BENCHMARK.md").write_text(text)
    plot.plot(results, args.reports / "benchmark.png")
    if not args.no_copy:
        # `make perf` owns a section of the same file: keep it.
        args.markdown_copy.write_text(text + perf_report.kept_section(args.markdown_copy))
        update_section(REPO_ROOT / "README.md", "benchmark", report.readme_summary(results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_servers_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.render:  # the same run's figures, worded anew: nothing is measured
        args.reports.mkdir(parents=True, exist_ok=True)
        write_reports(report.from_json(args.render.read_text()), args)
        return 0
    try:
        binary = install_perf_analyzer()
    except ToolInstallError as error:
        log.error("cannot install perf_analyzer, which measures the served points: %s", error)
        return 1
    torch.set_num_threads(os.cpu_count() or 1)  # as the served model does (intra_op_threads 0)
    args.reports.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    samples = SampleImages()
    images = torch.from_numpy(samples.pixels)  # the sample photos and their mirror images: batch 8
    runner = analyzer.Runner(
        binary,
        inputs.write_input_data(samples, args.reports / "perf_inputs"),
        analyzer.settings_from(args),
        args.reports / "perf",
        args.point_timeout_s,
    )

    log.info("calibrated random network (seed %d)", serving.RANDOM_SEED)
    network, metadata = serving.random_network()
    quiet = cpu_share.QuietWaiter(threshold=args.quiet_below, budget_s=args.max_wait_s)
    quiet.wait()
    log.info("postprocess vs reference at batch %d", len(images))
    results = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": report.machine(),
        "settings": {key: value for key, value in vars(args).items() if not isinstance(value, Path)},
        "inprocess": {
            "weights": f"random, calibrated (seed {serving.RANDOM_SEED})",
            "batch_size": len(images),
        },
    }
    cpu_before = cpu_share.snapshot()
    results["inprocess"]["postprocess"] = inprocess.compare_postprocess(network, images, repeats=args.repeats)
    log.info("dispatched operations per postprocess call at batch %s", dispatch_count.BATCH_SIZES)
    selection = inprocess.load_selection_module()
    results["inprocess"]["dispatch"] = dispatch_count.measure(
        selection, inprocess.served_selection_options(selection), dispatch_count.realistic_outputs(network)
    )
    log.info("in-process forward and reference pipeline")
    results["inprocess"]["forward"] = inprocess.forward_throughput(
        network, images, batch_sizes=(1, 4, len(images)), repeats=args.repeats
    )
    results["inprocess"]["reference_pipeline"] = inprocess.reference_pipeline_throughput(
        network, images, repeats=args.repeats
    )
    results["inprocess"]["foreign_cpu_share"] = cpu_share.foreign_share(cpu_before, cpu_share.snapshot())
    if not args.no_onnx:
        quiet.wait()
        log.info("in-process engines: TorchScript and ONNX Runtime, back to back")
        with tempfile.TemporaryDirectory(prefix="ssd300-bench-onnx-") as workdir:
            results["engines"] = {
                "inprocess": engines.compare_inprocess(
                    network,
                    images,
                    batch_sizes=(1, 4, len(images)),
                    repeats=args.repeats,
                    workdir=Path(workdir),
                )
            }

    with ExitStack() as stack:
        repository = serving.served_repository(args.repository, network, metadata, stack)
        server = serving.start(repository, args.reports / "tritonserver.log", stack)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            results["server"] = serving.server_facts(client)
        log.info("warming up: batch sizes 1..%d", max(args.concurrency))
        triton_stats.warm_up(server.grpc_url, samples, max_batch=max(args.concurrency))
        results["bytes"] = wire_sizes.measure(server.grpc_url, server.http_url, samples)
        results["triton"] = []
        main_runner = phase_runner(runner, "torchscript")
        for mode in args.modes:
            for concurrency in args.concurrency:
                quiet.wait()
                point = main_runner.point(server, mode, concurrency)
                log_point(mode, point)
                results["triton"].append(point)
        by_engine = {"torchscript": repository}
        if not args.no_onnx:
            server.stop()  # the ONNX server gets the machine to itself, as the TorchScript one had
            log.info("exporting model.onnx from the served model.pt's weights")
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssd300-bench-onnx-")))
            by_engine["onnx"] = engines.onnx_repository(repository, workdir)
            results["engines"]["triton"] = served_onnx_points(
                by_engine["onnx"], samples, quiet, args, phase_runner(runner, "onnx")
            )

        if not args.no_sweep:
            results["cpu_sweep"] = {"served": cpu_sweep.served_settings(repository).setting, "entries": []}
            for index, candidate in enumerate(cpu_sweep.CANDIDATES):
                if candidate.engine not in by_engine:
                    continue
                log.info("sweep: serving ssd300 with %s", candidate.name)
                results["cpu_sweep"]["entries"].append(
                    cpu_sweep.measure(
                        by_engine[candidate.engine],
                        candidate,
                        runner=phase_runner(runner, f"sweep{index}"),
                        samples=samples,
                        concurrencies=args.sweep_concurrency,
                        quiet=quiet,
                        log_path=args.reports / "tritonserver-sweep.log",
                        passes=args.sweep_passes,
                    )
                )

    results["duration_s"] = time.monotonic() - began
    results["waited_for_quiet_s"] = quiet.waited_s
    (args.reports / "results.json").write_text(to_json(results))
    write_reports(results, args)
    log.info(
        "wrote %s (results.json, BENCHMARK.md, benchmark.png) in %.0f s", args.reports, results["duration_s"]
    )
    failed = [p for p in results["triton"] + results.get("engines", {}).get("triton", []) if p.error]
    return 1 if failed or not results["inprocess"]["postprocess"]["identical"] else 0


if __name__ == "__main__":
    sys.exit(main())
