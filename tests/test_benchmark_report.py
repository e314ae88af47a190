"""The reports of ``make bench`` and ``make perf`` (load_tests/perf/report.py and the bench's
in-process lines) say what the run measured: every figure from the results, a failed point or
a mismatch shown as such, and each command's section of BENCHMARK.md replaced in place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from load_tests.benchmark.__main__ import inprocess_lines
from load_tests.perf import report
from load_tests.perf.analyzer import PerfPoint

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def results() -> dict:
    machine = {"cpu_model": "Test CPU", "cores": 2, "memory_gib": 8.0, "load_average": 0.4}
    stats = {"average_batch": 3.5, "queue_ms_per_request": 12.0, "compute_ms_per_execution": 640.0}
    latency = {"p50": 900.0, "p95": 1200.0, "p99": 1300.0}
    return {
        "date": "2026-01-01 00:00 UTC",
        "duration_s": 540.0,
        "machine": machine,
        "machine_after": {**machine, "load_average": 2.6},
        "settings": {"requests_per_window": 40, "stability_percent": 20, "max_trials": 10},
        "server": {"version": "2.51.0", "weights": "random", "engine": "onnx"},
        "points": [
            PerfPoint("grpc", 4, 4.25, latency, stats),
            PerfPoint("image_grpc", 16, network=stats, error="Failed to obtain stable measurement"),
        ],
    }


def test_the_served_section_gives_the_run_its_machine_and_every_point(results):
    text = "\n".join(report.served_section(results, "## make bench", "make bench", "reports/bench/"))
    assert "on 2026-01-01 00:00 UTC; Test CPU, 2 cores, 8.0 GiB, no GPU" in text
    assert "load average (1 min) 0.4 at the start and 2.6 at the end of the run, which took 9.0 min" in text
    assert "ssd300 runs onnx with random weights" in text and "windows of 40 requests" in text
    assert "| gRPC, uint8 tensor | 4 | 4.25 | 900 | 1200 | 1300 | 3.50 | 12 | 640 |" in text
    failed = "| 16 | failed: Failed to obtain stable measurement |  |  |  | 3.50 | 12 | 640 |"
    assert "| gRPC, ssd300_image (JPEG bytes, server decodes) " + failed in text


def test_inprocess_lines_show_the_figures_and_a_mismatch_as_no():
    post = {
        "batch_size": 8,
        "detections_per_image": [200, 180],
        "select_ms_per_image": 5.0,
        "reference_ms_per_image": 375.0,
        "speedup": 75.0,
        "mismatches": [],
    }
    engines = [{"batch_size": 1, "torchscript": 4.0, "onnx": 5.0, "max_score_diff": 3.5e-5}]
    text = "\n".join(inprocess_lines(post, engines))
    assert "(180–200 detections per image)" in text and "375.0 ms: 75.0× faster" in text
    assert "**yes**, every image" in text and "| 1 | 4.00 | 5.00 | 1.25× | 3.5e-05 |" in text
    post["detections_per_image"] = [200, 200]
    post["mismatches"] = ["image 3: 2 of 200 detections differ"]
    text = "\n".join(inprocess_lines(post, engines))
    assert "**NO**: image 3: 2 of 200 detections differ" in text and "(200 detections per image)" in text


def test_each_command_replaces_its_own_section_and_keeps_the_other(tmp_path):
    path = tmp_path / "BENCHMARK.md"
    path.write_text("# SSD300 on Triton: benchmark\n")
    report.write_section(path, "bench", "bench, first run")
    report.write_section(path, "perf_analyzer", "perf, first run")
    report.write_section(path, "bench", "bench, second run")
    text = path.read_text()
    assert text.startswith("# SSD300 on Triton: benchmark\n")
    assert "bench, second run" in text and "perf, first run" in text and "bench, first run" not in text
    assert text.index("bench, second run") < text.index("perf, first run")
    assert text.count("<!-- bench:start -->") == 1 and text.count("<!-- perf_analyzer:end -->") == 1


@pytest.mark.slow  # a random build, ONNX export, a server and one perf_analyzer point: minutes
def test_make_bench_runs_end_to_end_at_its_smallest_settings(tmp_path):
    """`make bench`'s command with one client and one scenario: the in-process figures, a
    served point and its section of the Markdown, all from this run."""
    markdown, reports = tmp_path / "BENCHMARK.md", tmp_path / "bench"
    command = [sys.executable, "-m", "load_tests.benchmark", "--reports", str(reports)]
    command += ["--markdown", str(markdown), "--concurrency", "1", "--scenarios", "grpc", "--repeats", "1"]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((reports / "results.json").read_text())
    (point,) = results["points"]
    assert point["error"] is None and point["images_per_s"] > 0 and point["network"]["average_batch"] >= 1
    assert results["postprocess"]["mismatches"] == [] and results["postprocess"]["speedup"] > 0
    assert [row["batch_size"] for row in results["engines"]] == [1, 4, 8]
    text = markdown.read_text()
    assert "<!-- bench:start -->" in text and f"{point['images_per_s']:.2f}" in text
