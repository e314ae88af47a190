"""The sweep of ssd300's CPU batching/instance settings (load_tests/benchmark/cpu_sweep.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from load_tests.benchmark import cpu_sweep

from .helpers.perf_points import perf_point

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"


def point(concurrency: int, images_per_s: float):
    return perf_point(concurrency, images_per_s, foreign_cpu_share=0.3)


def test_the_served_setting_is_one_the_sweep_measures():
    assert cpu_sweep.served_settings(REPOSITORY) in cpu_sweep.CANDIDATES


@pytest.mark.parametrize("candidate", cpu_sweep.CANDIDATES, ids=lambda c: c.name)
def test_a_candidate_changes_only_the_batching_and_instance_settings(tmp_path, candidate):
    view = cpu_sweep.with_settings(REPOSITORY, tmp_path, candidate)
    original = text_format.Parse(
        (REPOSITORY / cpu_sweep.NETWORK_CPU_CONFIG).read_text(), model_config_pb2.ModelConfig()
    )
    changed = text_format.Parse(
        (view / cpu_sweep.NETWORK_CPU_CONFIG).read_text(), model_config_pb2.ModelConfig()
    )
    assert cpu_sweep.settings_of(changed) == candidate
    for config in (original, changed):
        del config.instance_group[:]
        config.dynamic_batching.ClearField("preferred_batch_size")
        for key in ("intra_op_threads", "max_forward_batch"):
            if key in config.parameters:
                del config.parameters[key]
    assert changed == original
    # Every other model is the repository's own.
    assert (view / "ssd300_postprocess").resolve() == (REPOSITORY / "ssd300_postprocess").resolve()
    assert (view / "ssd300" / "1").resolve() == (REPOSITORY / "ssd300" / "1").resolve()


def test_rule_holds_only_when_8_and_16_clients_keep_95_percent_of_the_best():
    steady = [point(1, 2.0), point(4, 3.0), point(8, 2.9), point(16, 2.86)]
    best, shares, met = cpu_sweep.rule(steady)
    assert best == 3.0 and met
    assert shares == pytest.approx({8: 2.9 / 3.0, 16: 2.86 / 3.0})
    falling = [point(1, 2.0), point(4, 3.0), point(8, 2.9), point(16, 2.8)]
    assert not cpu_sweep.rule(falling)[2]
    assert not cpu_sweep.rule([point(1, 2.0), point(8, 2.0)])[2]  # c=16 not measured: not shown


def test_report_shows_the_sweep_and_the_rule_as_a_target():
    points = [point(1, 2.0), point(4, 3.0), point(8, 2.5), point(16, 2.9)]
    results = {
        "triton": points,
        "cpu_sweep": {
            "served": cpu_sweep.CANDIDATES[1].name,
            "entries": [{"name": c.name, "points": points} for c in cpu_sweep.CANDIDATES[:2]],
        },
    }
    (row,) = cpu_sweep.target_rows(results)
    assert row[3] is False and "c=8: 0.83×" in row[2]
    text = "\n".join(cpu_sweep.markdown(results))
    assert f"{cpu_sweep.CANDIDATES[1].name} **(served)**" in text
    assert "3.00 (200 ms, 2.0, 30%)" in text
