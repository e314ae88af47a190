"""The Locust load test: its endpoint and threshold rules, and short real runs of the locustfile
(Locust as a subprocess, as `make load` and the Helm chart run it)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from load_tests.endpoints import GRPC, HTTP, Endpoint, parse_endpoint, resolve_endpoints
from load_tests.thresholds import violations
from ssd300_common import contract
from ssd300_serving.embedded_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO_ROOT / "load_tests" / "locustfile.py"
SMOKE_SECONDS = 15


# --- endpoints: the host forms the Helm chart passes -------------------------------------------


@pytest.mark.parametrize(
    "host, expected",
    [
        ("ssd300.ml.svc:8001", Endpoint(GRPC, "ssd300.ml.svc:8001")),
        ("grpc://127.0.0.1:8001", Endpoint(GRPC, "127.0.0.1:8001")),
        ("http://ssd300.ml.svc:8000", Endpoint(HTTP, "ssd300.ml.svc:8000")),
        ("http://ssd300.ml.svc:8000/", Endpoint(HTTP, "ssd300.ml.svc:8000")),
        ("http://ssd300.ml.svc", Endpoint(HTTP, "ssd300.ml.svc:8000")),  # Triton's default port
        ("https://triton.example.com:443", Endpoint(HTTP, "triton.example.com:443", ssl=True)),
        ("grpcs://triton.example.com:443", Endpoint(GRPC, "triton.example.com:443", ssl=True)),
    ],
)
def test_the_host_form_selects_the_protocol(host, expected):
    assert parse_endpoint(host) == expected


@pytest.mark.parametrize(
    "host, message",
    [
        ("ftp://h:21", "expected a server address"),
        ("http://h:8000/v2", "expected a server address"),
        ("h:99999", "bad port"),
    ],
)
def test_malformed_hosts_are_refused_with_the_reason(host, message):
    with pytest.raises(ValueError, match=message):
        parse_endpoint(host)


def test_explicit_urls_add_the_other_protocol():
    endpoints = resolve_endpoints("127.0.0.1:8001", http_url="127.0.0.1:8000")
    assert endpoints == {GRPC: Endpoint(GRPC, "127.0.0.1:8001"), HTTP: Endpoint(HTTP, "127.0.0.1:8000")}


def test_a_url_of_the_wrong_protocol_is_refused():
    with pytest.raises(ValueError, match="is a http address, but the protocol is grpc"):
        resolve_endpoints(None, grpc_url="http://127.0.0.1:8000")


# --- thresholds ---------------------------------------------------------------------------------


def test_a_run_within_thresholds_passes():
    assert violations(requests=200, failures=2, p95_ms=499, max_failure_ratio=0.01, max_p95_ms=500) == []


def test_each_violated_threshold_is_reported():
    problems = violations(requests=100, failures=5, p95_ms=800, max_failure_ratio=0.01, max_p95_ms=500)
    assert problems == ["failure ratio 5.00% > 1.00% (5 of 100)", "p95 latency 800 ms > 500 ms"]


def test_a_zero_latency_limit_disables_the_latency_check():
    assert violations(requests=10, failures=0, p95_ms=1e6, max_failure_ratio=0.0, max_p95_ms=0) == []


def test_a_run_without_requests_fails():
    assert violations(requests=0, failures=0, p95_ms=0) == ["no request was made"]


# --- real runs ----------------------------------------------------------------------------------


def final_counts(reports: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(protocol, model) → (requests, failures), from Locust's JSON statistics: written once,
    after the users finished their last requests (the CSV is rewritten only once a second)."""
    entries = json.loads((reports / "final.json").read_text())
    return {(e["method"], e["name"]): (e["num_requests"], e["num_failures"]) for e in entries}


def csv_failures(reports: Path) -> int:
    with open(reports / "ssd300_stats.csv", newline="") as file:
        return next(int(row["Failure Count"]) for row in csv.DictReader(file) if row["Name"] == "Aggregated")


def network_counts(server) -> tuple[int, int, dict[int, int]]:
    """ssd300's (inferences, executions, {batch size: executions of that size}) so far."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics(contract.NETWORK_MODEL, as_json=True)["model_stats"][0]
    batches = stats.get("batch_stats", [])
    sizes = {int(b["batch_size"]): int(b["compute_infer"].get("count", 0)) for b in batches}
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0)), sizes


@pytest.fixture(scope="module")
def smoke_run(triton_server, tmp_path_factory):
    """`make load`'s command for 15 s against the session's server (which it finds answering,
    so it starts none): 6 users, gRPC and HTTP tensor users and both server-side-decode users;
    every request carries 2 images. No latency limit: CPU timings here depend on the machine."""
    reports = tmp_path_factory.mktemp("load")
    before = network_counts(triton_server)
    completed = subprocess.run(
        [
            sys.executable, "-m", "load_tests.run",
            "--http-url", triton_server.http_url, "--grpc-url", triton_server.grpc_url,
            "--run-time", f"{SMOKE_SECONDS}s", "--users", "6", "--max-p95-ms", "0", "--reports", str(reports),
            "--", "--batch-size", "2", "--json-file", str(reports / "final"),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=SMOKE_SECONDS + 60,
    )  # fmt: skip
    after = network_counts(triton_server)
    return completed, reports, before, after


@pytest.mark.server
def test_the_smoke_run_meets_its_thresholds_and_writes_its_reports(smoke_run):
    completed, reports, *_ = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "using the server at" in completed.stderr
    assert "thresholds met" in completed.stderr
    assert (reports / "ssd300.html").stat().st_size > 0


@pytest.mark.server
def test_every_user_kind_made_requests_and_none_failed(smoke_run):
    _, reports, *_ = smoke_run
    counts = final_counts(reports)
    assert set(counts) == {(p, m) for p in ("grpc", "http") for m in contract.PUBLIC_MODELS}
    assert all(requests > 0 and failures == 0 for requests, failures in counts.values()), counts
    assert csv_failures(reports) == 0


@pytest.mark.server
def test_concurrent_users_are_served_in_shared_batches(smoke_run):
    """Every image of every request reached ssd300, and requests were combined into batches."""
    _, reports, before, after = smoke_run
    (inferences_before, executions_before, sizes_before) = before
    (inferences_after, executions_after, sizes_after) = after
    counts = final_counts(reports)
    detector_requests = sum(counts[(p, contract.DETECTOR_MODEL)][0] for p in ("grpc", "http"))
    image_requests = sum(counts[(p, contract.IMAGE_MODEL)][0] for p in ("grpc", "http"))
    inferences, executions = inferences_after - inferences_before, executions_after - executions_before
    recorded = 2 * (detector_requests + image_requests)
    # Locust stops its users mid-request at the end of the run: such a request can still reach
    # ssd300 without being recorded, at most one per user (6 users, up to 2 images each).
    assert recorded <= inferences <= recorded + 6 * 2, (recorded, inferences)
    # Without dynamic batching each request is one execution of its own, so executions would
    # be at least the recorded requests (inferences exceed executions anyway: requests carry
    # 2 images).
    assert executions < detector_requests + image_requests, (executions, detector_requests, image_requests)
    # No request carries more than 2 images: a larger batch was made of several requests.
    combined = {size: sizes_after[size] - sizes_before.get(size, 0) for size in sizes_after if size > 2}
    assert sum(combined.values()) > 0, (sizes_before, sizes_after)


def test_a_run_against_no_server_fails_with_exit_code_1(tmp_path):
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--run-time", "3s",
        "--users", "2", "--spawn-rate", "2", "--host", f"127.0.0.1:{free_port()}", "--think-time-s", "0.2",
        "--request-timeout-s", "2", "--csv", str(tmp_path / "run"),
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "threshold violated: failure ratio 100.00%" in completed.stderr


# --- one import path: Locust loads the file by path, `python -m load_tests.run` as a package ----


def test_load_tests_modules_import_each_other_only_as_the_load_tests_package():
    """A bare ``from endpoints import …`` would load a second copy of the module under another
    name (its globals and classes duplicated); relative imports break in the locustfile."""
    import ast

    package = REPO_ROOT / "load_tests"
    siblings = {path.stem for path in package.glob("*.py")} | {"benchmark"}
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or node.module.split(".")[0] in siblings):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
                    for alias in node.names
                    if alias.name.split(".")[0] in siblings
                ]
    assert not offenders, f"import load_tests modules as load_tests.<name>: {offenders}"


def test_locust_loads_the_locustfile_from_any_working_directory(tmp_path):
    # The chart's pods and `locust -f /path/to/load_tests/locustfile.py` need not run in the
    # repository root; the user classes must load all the same.
    completed = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for user in ("GrpcDetectorUser", "HttpDetectorUser", "GrpcImageUser", "HttpImageUser"):
        assert user in completed.stdout
