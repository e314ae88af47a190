"""perf_analyzer (Triton's own load generator, 2.51) against the test session's server.

The binary comes out of the tritonclient 2.51.0 wheel (load_tests/external_tools.py). Each scenario
of ``make perf`` runs briefly, in windows of a few requests: the point is that the command
lines, the ``--input-data`` files and the CSV parsing work, and that every request perf_analyzer
sends is one the server answers, not the figures (``make perf`` measures).
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from load_tests.external_tools import ToolInstallError, install_perf_analyzer
from load_tests.payloads import SampleImages
from load_tests.perf import analyzer, inputs
from ssd300_common import contract

# Windows of two requests, and a stability bound no window misses: on a shared machine two
# windows of two requests can differ several-fold, and this test checks the plumbing, not figures.
SHORT = analyzer.Settings(window_ms=0, stability_percent=1000, max_trials=6, requests_per_window=2)


@pytest.fixture(scope="session")
def perf_analyzer():
    try:
        return install_perf_analyzer()
    except ToolInstallError as error:
        pytest.skip(f"perf_analyzer cannot be installed here: {error}")


def test_image_input_data_is_length_prefixed_file_bytes():
    samples = SampleImages()
    data = inputs.image_input_data(samples.encoded)["data"]
    assert len(data) == len(samples.encoded)
    raw = base64.b64decode(data[0][contract.ENCODED_IMAGE_INPUT]["b64"])
    (length,) = struct.unpack("<I", raw[:4])
    assert length == len(samples.encoded[0]) and raw[4:] == samples.encoded[0]


def test_detector_input_data_is_one_uint8_image_per_entry():
    samples = SampleImages()
    data = inputs.detector_input_data(samples.pixels)["data"]
    assert len(data) == len(samples.pixels)
    pixels = np.frombuffer(base64.b64decode(data[-1][contract.IMAGES_INPUT]["b64"]), dtype=np.uint8)
    np.testing.assert_array_equal(pixels.reshape(300, 300, 3), samples.pixels[-1])


def model_counts(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(successful, failed) requests of ``model`` so far."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    return int(stats.get("success", {}).get("count", 0)), int(stats.get("fail", {}).get("count", 0))


@pytest.mark.server
@pytest.mark.parametrize("scenario", analyzer.SCENARIOS, ids=[s.name for s in analyzer.SCENARIOS])
def test_perf_analyzer_runs_each_scenario_against_the_server(
    perf_analyzer, triton_server, tmp_path, scenario
):
    input_file = inputs.write_input_data(SampleImages(), tmp_path)[scenario.inputs]
    json.loads(input_file.read_text())  # perf_analyzer reads it as JSON
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        before = model_counts(client, scenario.model)
        # The session server is shared: compare with what was registered before this run.
        regions_before = set(client.get_system_shared_memory_status(as_json=True).get("regions", {}))
        point = analyzer.run_point(
            perf_analyzer,
            scenario,
            grpc_url=triton_server.grpc_url,
            http_url=triton_server.http_url,
            input_file=input_file,
            concurrency=1,
            settings=SHORT,
            reports=tmp_path,
            timeout_s=300,
        )
        after = model_counts(client, scenario.model)
        regions_after = set(client.get_system_shared_memory_status(as_json=True).get("regions", {}))
        leftover_regions = regions_after - regions_before
    assert point.error is None, (tmp_path / f"{scenario.name}_c1.log").read_text()[-2000:]
    row = analyzer.read_csv(tmp_path / point.csv)
    assert row["Concurrency"] == "1" and point.images_per_s > 0
    assert point.latency_ms["p50"] > 0 and point.server_ms["compute"] > 0
    # At least three windows of two requests, every one answered (a payload the server could
    # not read, such as JPEG bytes without the length prefix, would fail here).
    assert after[0] - before[0] >= 6 and after[1] == before[1], (before, after)
    assert not leftover_regions, "perf_analyzer left shared-memory regions registered"


def test_report_section_survives_make_bench_rewriting_the_file(tmp_path):
    from load_tests.perf import report

    benchmark = tmp_path / "BENCHMARK.md"
    benchmark.write_text("# bench\n\nfigures\n")
    report.write_section(benchmark, "## perf_analyzer\n\nfirst\n")  # no markers yet: appended
    report.write_section(benchmark, "## perf_analyzer\n\nsecond\n")  # replaced in place
    assert benchmark.read_text().count("## perf_analyzer") == 1 and "second" in benchmark.read_text()
    # make bench writes its own report and appends what it kept
    benchmark.write_text("# bench\n\nnew figures\n" + report.kept_section(benchmark))
    text = benchmark.read_text()
    assert "new figures" in text and "second" in text and "first" not in text


@pytest.mark.parametrize("concurrency, expected", [(1, "40"), (8, "40"), (16, "64")])
def test_count_windows_hold_several_rounds_of_the_closed_loop(concurrency, expected):
    settings = analyzer.Settings(window_ms=5000, stability_percent=20, max_trials=10, requests_per_window=40)
    argv = analyzer.command(
        Path("perf_analyzer"),
        analyzer.BY_NAME["http"],
        url="127.0.0.1:8000",
        input_file=Path("inputs.json"),
        concurrency=concurrency,
        settings=settings,
        csv_path=Path("out.csv"),
    )
    assert argv[argv.index("--measurement-request-count") + 1] == expected
    assert argv[argv.index("-i") + 1] == "http"
