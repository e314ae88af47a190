"""The sweep of ssd300's CPU batching/instance settings (load_tests/benchmark/cpu_sweep.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from load_tests.benchmark import cpu_sweep
from ssd300_common import contract

from .helpers.perf_points import perf_point

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"


def point(concurrency: int, images_per_s: float):
    return perf_point(concurrency, images_per_s, foreign_cpu_share=0.3)


def test_the_served_setting_is_one_the_sweep_measures_on_both_engines():
    served = cpu_sweep.served_settings(REPOSITORY).setting
    assert {c.engine for c in cpu_sweep.CANDIDATES if c.setting == served} == {"torchscript", "onnx"}


@pytest.mark.parametrize("candidate", cpu_sweep.CANDIDATES, ids=lambda c: c.name)
def test_a_candidate_changes_only_the_batching_and_instance_settings(tmp_path, candidate):
    before = (REPOSITORY / cpu_sweep.NETWORK_CPU_CONFIG).read_text()
    view = cpu_sweep.with_settings(REPOSITORY, tmp_path, candidate)
    original = text_format.Parse(
        (REPOSITORY / cpu_sweep.NETWORK_CPU_CONFIG).read_text(), model_config_pb2.ModelConfig()
    )
    changed = text_format.Parse(
        (view / cpu_sweep.NETWORK_CPU_CONFIG).read_text(), model_config_pb2.ModelConfig()
    )
    assert cpu_sweep.settings_of(changed).setting == candidate.setting
    for config in (original, changed):
        del config.instance_group[:]
        config.dynamic_batching.ClearField("preferred_batch_size")
        for key in ("intra_op_threads", "max_forward_batch"):
            if key in config.parameters:
                del config.parameters[key]
    assert changed == original
    # Every other model is the repository's own.
    postprocess = contract.POSTPROCESS_MODEL
    assert (view / postprocess).resolve() == (REPOSITORY / postprocess).resolve()
    network = contract.NETWORK_MODEL
    assert (view / network / "1").resolve() == (REPOSITORY / network / "1").resolve()
    # Written through the view, the repository's own config is left as it was.
    assert (REPOSITORY / cpu_sweep.NETWORK_CPU_CONFIG).read_text() == before


def test_rule_holds_only_when_8_and_16_clients_keep_95_percent_of_the_best():
    steady = [point(1, 2.0), point(4, 3.0), point(8, 2.9), point(16, 2.86)]
    best, shares, met = cpu_sweep.rule(steady)
    assert best == 3.0 and met
    assert shares == pytest.approx({8: 2.9 / 3.0, 16: 2.86 / 3.0})
    falling = [point(1, 2.0), point(4, 3.0), point(8, 2.9), point(16, 2.8)]
    assert not cpu_sweep.rule(falling)[2]
    assert not cpu_sweep.rule([point(1, 2.0), point(8, 2.0)])[2]  # c=16 not measured: not shown


def test_passes_alternate_direction_so_a_drift_weighs_on_every_concurrency_alike():
    assert cpu_sweep.pass_order([1, 4, 8, 16], 0) == [1, 4, 8, 16]
    assert cpu_sweep.pass_order([1, 4, 8, 16], 1) == [16, 8, 4, 1]
    assert cpu_sweep.pass_order([1, 4, 8, 16], 2) == [1, 4, 8, 16]


def test_passes_combine_into_means_keeping_the_worst_cpu_share_and_any_error():
    first = perf_point(8, 4.0, foreign_cpu_share=0.01, p95_ms=2000.0)
    second = perf_point(8, 4.4, foreign_cpu_share=0.07, p95_ms=2400.0)
    combined = cpu_sweep.combine([first, second])
    assert combined.images_per_s == pytest.approx(4.2)
    assert combined.latency_ms["p95"] == pytest.approx(2200.0)
    assert combined.foreign_cpu_share == pytest.approx(0.07)
    assert combined.duration_s == pytest.approx(first.duration_s + second.duration_s)
    assert combined.error is None
    failed = perf_point(8, 0.0)
    failed.images_per_s, failed.error = None, "perf_analyzer exit code 99"
    partly = cpu_sweep.combine([first, failed])
    assert partly.images_per_s == pytest.approx(4.0) and partly.error == "perf_analyzer exit code 99"
    assert cpu_sweep.combine([failed, failed]).images_per_s is None


def test_report_shows_the_sweep_its_ranges_and_the_rule_per_engine_as_targets():
    served = cpu_sweep.served_settings(REPOSITORY)
    passes = [
        [point(1, 2.0), point(4, 3.0), point(8, 2.4), point(16, 2.9)],
        [point(1, 2.0), point(4, 3.0), point(8, 2.6), point(16, 2.9)],
    ]
    combined = [cpu_sweep.combine(list(pair)) for pair in zip(*passes, strict=True)]
    entries = [
        {
            "name": c.name,
            "setting": c.setting,
            "engine": c.engine,
            "passes": passes,
            "points": combined,
        }
        for c in cpu_sweep.CANDIDATES
    ]
    results = {"triton": passes[0], "cpu_sweep": {"served": served.setting, "entries": entries}}
    rows = cpu_sweep.target_rows(results)
    assert [row[0] for row in rows] == [
        "gRPC throughput at c=8 and c=16 vs the best at any concurrency",
        "the same in the CPU sweep, served setting, TorchScript (mean of 2 passes)",
        "the same in the CPU sweep, served setting, ONNX Runtime (mean of 2 passes)",
    ]
    assert rows[0][3] is False and "c=8: 0.80×" in rows[0][2]
    assert rows[1][3] is False and "c=8: 0.83×" in rows[1][2]
    text = "\n".join(cpu_sweep.markdown(results))
    assert text.count("**(served)**") == 2
    assert f"ONNX Runtime: {served.setting} **(served)**" in text
    assert "2.50 [2.40–2.60] (200 ms, 2.0, 30%)" in text
    assert "in 2 pass(es)" in text
