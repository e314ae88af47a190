"""perf_analyzer (Triton's own load generator, 2.51) against the test session's server, through
the runner of ``make perf`` and ``make bench`` (load_tests/perf/analyzer.py).

The binary comes out of the tritonclient 2.51.0 wheel (load_tests/external_tools.py). Each scenario
runs briefly, in windows of two requests: the point is that the command lines, the
``--input-data`` files, the CSV parsing and Triton's statistics work, and that every request
perf_analyzer sends is one the server answers, not the figures (``make perf`` measures).
"""

from __future__ import annotations

import base64
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
SHORT = analyzer.Settings(requests_per_window=2, stability_percent=1000, max_trials=6)


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
    # What one ssd300_image request carries: the file and its 4-byte length (68,056 bytes for
    # the first sample on 2026-11-30; the JPEG is the only payload).
    assert length == len(samples.encoded[0]) and raw[4:] == samples.encoded[0] and len(raw) == length + 4


def test_detector_input_data_is_one_uint8_image_of_270_000_bytes_per_entry():
    samples = SampleImages()
    data = inputs.detector_input_data(samples.pixels)["data"]
    assert len(data) == len(samples.pixels)
    raw = base64.b64decode(data[-1][contract.IMAGES_INPUT]["b64"])
    assert len(raw) == 300 * 300 * 3 == 270_000  # one request's tensor bytes
    np.testing.assert_array_equal(np.frombuffer(raw, dtype=np.uint8).reshape(300, 300, 3), samples.pixels[-1])


def model_counts(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    """(successful, failed) requests of ``model`` so far."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    return int(stats.get("success", {}).get("count", 0)), int(stats.get("fail", {}).get("count", 0))


def foreign_regions(client: grpcclient.InferenceServerClient) -> set[str]:
    """System shared-memory regions on the server not made by this process's client library.

    Other tests' detectors share the session server, and a finaliser may release their
    ``ssd300_client_*`` regions while perf_analyzer runs; those are not perf_analyzer's.
    """
    regions = client.get_system_shared_memory_status(as_json=True).get("regions", {})
    return {name for name in regions if not name.startswith("ssd300_client_")}


@pytest.mark.parametrize("name", list(analyzer.SCENARIOS))
def test_perf_analyzer_runs_each_scenario_against_the_server(perf_analyzer, triton_server, tmp_path, name):
    scenario = analyzer.SCENARIOS[name]
    files = inputs.write_input_data(SampleImages(), tmp_path / "inputs")
    runner = analyzer.Runner(perf_analyzer, triton_server, tmp_path, SHORT, files)
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        before = model_counts(client, scenario.model)
        # The session server is shared: compare with what was registered before this run.
        regions_before = foreign_regions(client)
        point = runner.point(name, 1)
        after = model_counts(client, scenario.model)
        leftover_regions = foreign_regions(client)
    assert point.error is None, (tmp_path / f"{name}_c1.log").read_text()[-2000:]
    assert (tmp_path / f"{name}_c1.csv").is_file() and point.images_per_s > 0
    assert 0 < point.latency_ms["p50"] <= point.latency_ms["p95"] <= point.latency_ms["p99"]
    # One client, one image per request: ssd300 never had two images to batch.
    assert point.network["average_batch"] == 1.0 and point.network["compute_ms_per_execution"] > 0
    # At least three windows of two requests, every one answered (a payload the server could
    # not read, such as JPEG bytes without the length prefix, would fail here).
    assert after[0] - before[0] >= 6 and after[1] == before[1], (before, after)
    assert leftover_regions == regions_before, "perf_analyzer left shared-memory regions registered"


@pytest.mark.parametrize("concurrency, expected", [(1, "40"), (8, "40"), (16, "64")])
def test_count_windows_hold_several_rounds_of_the_closed_loop(concurrency, expected):
    server = type("Server", (), {"grpc_url": "127.0.0.1:8001", "http_url": "127.0.0.1:8000"})()
    runner = analyzer.Runner(
        Path("perf_analyzer"), server, Path("."), analyzer.Settings(), {"detector": Path("in")}
    )
    argv = runner.command("http", concurrency, Path("out.csv"))
    assert argv[argv.index("--measurement-request-count") + 1] == expected
    assert argv[argv.index("-i") + 1] == "http" and argv[argv.index("-u") + 1] == "127.0.0.1:8000"
    shm = runner.command("grpc_shm", concurrency, Path("out.csv"))
    assert shm[shm.index("--shared-memory") + 1] == "system" and shm[shm.index("-i") + 1] == "grpc"
    assert shm[shm.index("-u") + 1] == "127.0.0.1:8001"
