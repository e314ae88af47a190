"""The benchmark report says only what the run measured: a missed target is followed by this
run's figures, and every comparison in the text follows the numbers it compares."""

from __future__ import annotations

import copy

import pytest

from load_tests.benchmark import report
from load_tests.perf.analyzer import PerfPoint

from .helpers.perf_points import perf_point


def stats(average_batch: float, compute_ms: float, executions: int = 10, queue_ms: float = 40.0) -> dict:
    return {
        "average_batch": average_batch,
        "compute_ms_per_execution": compute_ms,
        "executions": executions,
        "inferences": round(executions * average_batch),
        "queue_ms_per_request": queue_ms,
    }


def point(concurrency: int, images_per_s: float, network: dict, postprocess: dict):
    return perf_point(concurrency, images_per_s, network=network, postprocess=postprocess, p95_ms=900.0)


@pytest.fixture
def results() -> dict:
    """A run that misses every target: 1-image batches at c=1, per-image cost up at c=4/8."""
    return {
        "date": "2026-01-01 00:00 UTC",
        "duration_s": 600.0,
        "waited_for_quiet_s": 0.0,
        "settings": {
            "requests_per_window": 20,
            "window_ms": 5000,
            "stability_percent": 20,
            "max_trials": 8,
            "quiet_below": 0.2,
        },
        "machine": {
            "cpu_model": "test CPU",
            "cpu_cores": 2,
            "memory_gib": 8.0,
            "os": "Linux",
            "python": "3.11",
            "torch": "2.x",
            "torch_threads": 2,
            "tritonclient": "2.x",
        },
        "server": {
            "version": "2.51.0",
            "weights": "random",
            "instances": 1,
            "max_queue_delay_ms": 5.0,
            "network_config": "1 instance(s), dynamic batching preferred [8], max queue delay 5 ms",
        },
        "inprocess": {
            "weights": "random",
            "forward": {1: {"images_per_s": 4.0}, 8: {"images_per_s": 5.0}},
            "reference_pipeline": {"batch_size": 8, "images_per_s": 3.0},
            "postprocess": {
                "batch_size": 8,
                "options": {"candidates_per_class": 200},
                "detections_per_image": [200, 200],
                "select_ms_per_image": 10.0,
                "decode_and_select_ms_per_image": 12.0,
                "reference_ms_per_image": 200.0,
                "nms_share": 0.5,
                "speedup": 20.0,
                "speedup_with_decode": 16.7,
                "identical": True,
                "mismatches": [],
            },
        },
        "triton": [
            point(1, 3.0, stats(1.0, 250.0), stats(1.0, 20.0)),
            point(4, 3.5, stats(2.0, 600.0), stats(2.0, 50.0)),
            point(8, 3.0, stats(2.5, 1000.0), stats(2.5, 75.0)),
        ],
        "bytes": {},
    }


def missed(results: dict) -> dict[str, str]:
    return {name: why for name, _, _, met, why in report.target_rows(results) if not met}


def test_every_missed_target_is_explained_by_this_runs_numbers(results):
    why = missed(results)
    assert len(why) == 5
    serving = why["Triton gRPC c=4 vs in-process forward-only (batch 8)"]
    # 600 ms per execution of 2 images = 300 ms per image, against 250 at c=1: +20%.
    assert "batches of 2.0 images in 600 ms (300 ms per image" in serving
    assert "at c=1: 250 and 20 ms per image" in serving
    assert "ssd300 +20%, ssd300_postprocess +25%" in serving
    # 10 executions × 600 ms = 6 s of the point's 20 s perf_analyzer run.
    assert "perf_analyzer's 20 s at this point ssd300 computed for 6.0 s (30% of it)" in serving
    batching = why["average executed batch of ssd300 at c=8 (gRPC)"]
    assert "ran 10 executions for 25 images" in batching
    assert "waits at most 5 ms for a batch to fill (max_queue_delay), 0.5% of one execution" in batching
    postprocess = why["postprocess speedup vs per-class reference (batch 8)"]
    assert "10.00 ms per image at batch 8 against 200 ms" in postprocess
    assert "50% of it is the greedy NMS step" in postprocess


def test_comparisons_follow_the_numbers_not_a_fixed_story(results):
    cheaper = copy.deepcopy(results)
    # At c=4 each image now costs less than at c=1: the text must say so, not "rises".
    cheaper["triton"][1] = point(4, 3.5, stats(2.0, 400.0), stats(2.0, 30.0))
    serving = missed(cheaper)["Triton gRPC c=4 vs in-process forward-only (batch 8)"]
    assert "ssd300 −20%, ssd300_postprocess −25%" in serving
    text = report.markdown(results)
    for fixed_story in ("alternating groups", "far shorter than one batch", "share the same cores"):
        assert fixed_story not in text


def test_a_throughput_drop_is_described_with_the_measured_trend(results):
    (note,) = report.scaling_notes(results)
    assert note.startswith("gRPC, uint8 tensor: 3.50 img/s at c=4 but 3.00 at c=8")
    assert "ssd300 250 → 300 → 400 ms (+60% from c=1 to c=8)" in note


def test_the_report_and_readme_summary_render_from_the_results(results):
    text = report.markdown(results)
    assert "Missed targets: where the time went (Triton's statistics from this run):" in text
    summary = report.readme_summary(results)
    assert "this run's images gave 200 detections each, of at most 200" in summary


def test_a_point_perf_analyzer_could_not_measure_is_shown_with_its_error(results):
    failed = PerfPoint(
        scenario="grpc", concurrency=16, csv="grpc_c16.csv", error="perf_analyzer exit code 99"
    )
    results["triton"].append(failed)
    text = report.markdown(results)
    assert (
        "| gRPC, uint8 tensor | 16 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | perf_analyzer exit code 99 |"
        in text
    )
    assert "perf_analyzer 2.51 (closed loop, one image per request), windows of 20 requests" in text
    assert "16: n/a (n/a ms)" not in report.readme_summary(results)  # cells are "n/a (n/a ms)"
    assert "n/a (n/a ms)" in report.readme_summary(results)
    # a point that failed counts as no throughput: the c=8/c=16 rule is not met
    rows = {name: met for name, _, _, met, _ in report.target_rows(results)}
    assert rows["gRPC throughput at c=8 and c=16 vs the best at any concurrency"] is False
