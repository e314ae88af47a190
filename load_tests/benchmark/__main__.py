"""``python -m load_tests.benchmark`` (``make bench``) and, with ``--perf``, ``make perf``: one
command line, one runner, one report writer."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import onnxruntime
import torch

from load_tests.benchmark import gpu_models, inprocess, serving
from load_tests.external_tools import ToolInstallError, install_perf_analyzer
from load_tests.payloads import SampleImages
from load_tests.perf import analyzer, report
from ssd300_build.sources import DEFAULT_SEED
from ssd300_serving.embedded_server import stop_servers_on_sigterm
from ssd300_serving.provenance import read_provenance

log = logging.getLogger("load_tests.benchmark")
REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_SCENARIOS = ["grpc", "image_grpc"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    mode = argparse.ArgumentParser(add_help=False)
    mode.add_argument("--perf", action="store_true", help="make perf: every scenario, nothing in process")
    perf = mode.parse_known_args(argv)[0].perf
    parser = argparse.ArgumentParser(prog="python -m load_tests.benchmark", parents=[mode])
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--reports", type=Path, default=REPO_ROOT / "reports" / ("perf" if perf else "bench"))
    parser.add_argument("--markdown", type=Path, default=REPO_ROOT / "load_tests" / "BENCHMARK.md")
    parser.add_argument("--no-copy", action="store_true", help="leave load_tests/ alone (trial runs)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4] if perf else [1, 4, 8, 16])
    scenarios = list(analyzer.SCENARIOS) if perf else BENCH_SCENARIOS
    parser.add_argument("--scenarios", nargs="+", choices=list(analyzer.SCENARIOS), default=scenarios)
    parser.add_argument("--requests-per-window", type=int, default=analyzer.Settings.requests_per_window)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per in-process figure (bench)")
    return parser.parse_args(argv)


def inprocess_lines(post: dict, engines: list[dict]) -> list[str]:
    identical = "**NO**: " + "; ".join(post["mismatches"]) if post["mismatches"] else "**yes**, every image"
    low, high = min(post["detections_per_image"]), max(post["detections_per_image"])
    return [
        f"In process, on the calibrated random network (seed {DEFAULT_SEED}), "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, ONNX Runtime "
        f"{onnxruntime.__version__}. Postprocess at batch {post['batch_size']} "
        f"({low if low == high else f'{low}–{high}'} detections per image): the served `select_detections` "
        f"{post['select_ms_per_image']:.2f} ms per image, NVIDIA's per-class reference decode "
        f"{post['reference_ms_per_image']:.1f} ms: {post['speedup']:.1f}× faster. Identical detections "
        f"(as sets; scores within {inprocess.SCORE_TOLERANCE}): {identical}.",
        "",
        "The engines of one build, images/s (same weights and images, back to back):",
        "",
        "| batch | TorchScript (model.pt) | ONNX Runtime (model.onnx) | ratio | max abs Δ score |",
        "|---|---|---|---|---|",
        *(
            f"| {r['batch_size']} | {r['torchscript']:.2f} | {r['onnx']:.2f} | "
            f"{r['onnx'] / r['torchscript']:.2f}× | {r['max_score_diff']:.1e} |"
            for r in engines
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_servers_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        binary = install_perf_analyzer()
    except ToolInstallError as error:
        log.error("cannot install perf_analyzer, which measures the served points: %s", error)
        return 1
    args.reports.mkdir(parents=True, exist_ok=True)
    began, settings = time.monotonic(), analyzer.Settings(requests_per_window=args.requests_per_window)
    results = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}
    results.update(machine=report.machine(), settings=dataclasses.asdict(settings))
    with ExitStack() as stack:
        if args.perf:
            served = serving.repository_to_serve(args.repository, stack)
        else:
            log.info("model.pt and model.onnx of the calibrated random network; then in-process figures")
            network, metadata = gpu_models.random_network()
            built = serving.built_copy(args.repository, network, metadata, stack)
            images = torch.from_numpy(SampleImages().pixels[:8])  # the sample photos and their mirror images
            results["postprocess"] = inprocess.compare_postprocess(network, images, args.repeats)
            results["engines"] = inprocess.compare_engines(built, images, (1, 4, 8), args.repeats)
            # CPUs serve the build if it holds an FP32 network, else the random one.
            fp32 = (read_provenance(args.repository) or {}).get("precision") == "fp32"
            served = args.repository if fp32 else built
        results |= analyzer.measure(binary, served, args.reports, args.scenarios, args.concurrency, settings)
    results.update(machine_after=report.machine(), duration_s=time.monotonic() - began)
    (args.reports / "results.json").write_text(json.dumps(results, indent=2, default=dataclasses.asdict))
    command = "make perf" if args.perf else "make bench"
    heading = "## perf_analyzer (Triton's load generator)" if args.perf else "## make bench"
    lines = report.served_section(results, heading, command, f"reports/{args.reports.name}/")
    if args.perf:
        lines += ["", "![perf_analyzer: throughput and p95 latency against concurrency](perf_analyzer.png)"]
    else:
        lines += ["", *inprocess_lines(results["postprocess"], results["engines"])]
    text = "\n".join(lines) + "\n"
    (args.reports / "BENCHMARK.md").write_text(text)
    title = f"SSD300 on Triton, {command}, {results['machine']['cores']} CPU cores, {results['date']}"
    report.plot(results["points"], args.reports / "perf_analyzer.png", title)
    if not args.no_copy:
        report.write_section(args.markdown, "perf_analyzer" if args.perf else "bench", text)
        if args.perf:
            report.plot(results["points"], args.markdown.parent / "perf_analyzer.png", title)
    log.info("wrote %s", args.reports)
    failed = any(p.error for p in results["points"]) or results.get("postprocess", {}).get("mismatches")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
