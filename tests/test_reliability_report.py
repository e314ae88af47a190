"""The reliability report renders what the suites recorded, and only that: a figure the run did
not produce reads "not measured", and the batching settings and notes come from the figures."""

from __future__ import annotations

import json

import pytest

from tools import reliability_report

OVERLOAD = {
    "factor": 4,
    "capacity_samples": 7,
    "after_samples": 3,
    "batching": {
        "max_batch_size": 48,
        "preferred_batch_sizes": [6],
        "max_queue_size": 20,
        "queue_timeout_s": 12.0,
    },
    "largest_batch": 20,
    "capacity_per_s": 5.0,
    "baseline_latency_s": 0.2,
    "rate_per_s": 20.0,
    "duration_s": 10.0,
    "sent": 200,
    "succeeded": 80,
    "refused": 119,
    "other_errors": 0,
    "slowest_success_s": 15.0,
    "slowest_refusal_s": 0.01,
    "drain_s": 14.0,
    "deadline_s": 60.0,
    "rss_idle_bytes": 2**30,
    "rss_peak_bytes": 2 * 2**30,
    "rss_bound_bytes": 5 * 2**30,
    "canary_during": "healthy: ok",
    "canary_latency_s": 3.0,
    "recovery_s": 15.0,
    "latency_after_s": 0.2,
}
CASE = {
    "kind": "truncated PNG",
    "side": "server",
    "via": "gRPC ssd300_image",
    "answer": "INVALID_ARGUMENT",
    "message": "[request id: <id_unknown>] encoded_image[0]: not a decodable image",
    "healthy_after": True,
}


@pytest.fixture
def render(tmp_path, capsys):
    """figures → (the report as written, what was printed)."""

    def run(figures: dict) -> str:
        source = tmp_path / "figures.json"
        source.write_text(json.dumps(figures))
        assert reliability_report.main(["--figures", str(source)]) == 0
        report = (tmp_path / reliability_report.REPORT_NAME).read_text()
        assert report == capsys.readouterr().out  # printed as written
        return report

    return run


def test_the_report_renders_recorded_figures_and_marks_missing_ones(render):
    report = render({"meta": {"commit": "abc1234"}, "overload": OVERLOAD, "bad_input": {"cases": [CASE]}})
    assert "| Overload | lost (no answer by the deadline) | 1 |" in report  # 200 − 80 − 119 − 0
    assert "| Failover (kill -9) | requests | not measured |" in report
    assert "| Security | restricted APIs | not measured |" in report
    assert (
        "| truncated PNG | gRPC ssd300_image | INVALID_ARGUMENT | encoded_image[0]: not a decodable image |"
        in report
    )


def test_sample_counts_and_batching_come_from_the_figures(render):
    report = render({"overload": OVERLOAD})
    assert "capacity measured (fastest of 7 sequential 1-image requests)" in report
    assert "latency after recovery (p50 of 3)" in report
    assert (
        "| Overload | ssd300 batching, as the server loaded it | max_batch_size 48, "
        "preferred_batch_size [6], queue of 20 requests, queue timeout 12.0 s |" in report
    )
    assert (
        "- Under overload the dynamic batcher ran ssd300 batches of up to 20 images, above the preferred "
        "size 6 (max_batch_size 48)" in report
    )


def test_the_batching_note_follows_the_measured_batch_size(render):
    within = render({"overload": {**OVERLOAD, "largest_batch": 6}})
    assert "batches of up to 6 images (preferred size 6, max_batch_size 48)." in within
    assert "bounded by max_batch_size" not in within


def test_figures_from_before_batching_was_recorded_read_not_measured(render):
    old = {key: value for key, value in OVERLOAD.items() if key not in ("batching", "largest_batch")}
    report = render({"overload": old})
    assert "| Overload | ssd300 batching, as the server loaded it | not measured |" in report
    assert "| Overload | largest ssd300 batch executed | not measured |" in report
    assert "## Notes" not in report


def test_missing_figures_are_an_error_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nothing.json"
    assert reliability_report.main(["--figures", str(missing)]) == 1
    assert f"{missing} does not exist: run `make reliability` first" in capsys.readouterr().err
