"""Faults (issue 7), each on servers of its own, started side by side for the module: a
SIGKILLed server under a failing-over ``Detector([a, b])``, a killed Python-backend stub (which
tritonserver 2.51 does not notice, and the canary does), SIGTERM on the `make serve` launcher
under load, and a server that hangs under ``ssd300-detect`` after its first answer. No test
touches another's server, so they may run in any order."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ssd300_client import Detector
from ssd300_common.contract import DETECTOR_MODEL as DETECTOR
from ssd300_common.contract import (
    IMAGE_MODEL,
    IMAGES_DATATYPE,
    IMAGES_INPUT,
    NETWORK_MODEL,
    POSTPROCESS_MODEL,
)
from ssd300_serving import health
from ssd300_serving.embedded_server import EXIT_TIMEOUT_S, EmbeddedServer

from .helpers.comparisons import assert_same_detections
from .helpers.figures import seconds, tally
from .helpers.processes import kill_hard, processes_mentioning, shm_prefix, stub_pid
from .helpers.servers import Launcher
from .helpers.triton_calls import brief, grpc_answer, http_answer_raw, tensor

pytestmark = pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")

ALL_MODELS = (
    NETWORK_MODEL,
    POSTPROCESS_MODEL,
    DETECTOR,
    IMAGE_MODEL,
    "ssd300_image_preprocess",
    "ssd300_image_postprocess",
)
IMAGE_SHAPE = [1, 300, 300, 3]
# Failover: requests through Detector([a, b]); server a is killed after KILL_AFTER answers.
FAILOVER_REQUESTS, FAILOVER_THREADS, KILL_AFTER = 24, 4, 6
# At most this many requests in flight at SIGTERM: fewer on a machine so slow that they could
# not all finish within a quarter of the exit timeout one after another.
SIGTERM_IN_FLIGHT = 8


@dataclass
class FaultServers:
    victim: EmbeddedServer  # killed -9 under a failing-over client; the session's server survives
    crashing: EmbeddedServer  # one of its Python stubs is killed
    launcher: Launcher  # the `make serve` launcher, stopped with SIGTERM under load
    stalled: EmbeddedServer  # frozen (SIGSTOP) under ssd300-detect after its first answer


@pytest.fixture(scope="module")
def faults(private_servers, reliability_figures) -> FaultServers:
    servers = FaultServers(
        victim=private_servers.embedded("victim"),
        crashing=private_servers.embedded("crashing"),
        launcher=private_servers.launcher("launcher"),
        stalled=private_servers.embedded("stalled"),
    )
    private_servers.start()
    reliability_figures.server_version(servers.victim.http_url)
    return servers


def pixels_request() -> list:
    image = np.random.default_rng(3).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
    return [tensor(IMAGES_INPUT, image, IMAGES_DATATYPE)]


def dead(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def successes(url: str, model: str) -> int:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats["inference_stats"].get("success", {}).get("count", 0))


def test_a_detector_with_two_servers_completes_every_request_when_one_is_killed(
    faults, triton_server, reliability_figures, sample_paths
):
    victim, survivor = faults.victim, triton_server
    photo = sample_paths[-1]
    # Over the socket, as any client on another machine.
    with Detector(survivor.grpc_url, shared_memory=False) as detector:
        reference = detector.detect(photo)
    served_before = successes(survivor.grpc_url, DETECTOR)

    def one_request(detector: Detector):
        started = time.monotonic()
        return detector.detect(photo), time.monotonic() - started, started

    # The victim is listed first, so it serves until it dies.
    with Detector([victim.grpc_url, survivor.grpc_url], shared_memory=False) as detector:
        with ThreadPoolExecutor(FAILOVER_THREADS) as pool:
            futures = [pool.submit(one_request, detector) for _ in range(FAILOVER_REQUESTS)]
            while sum(future.done() for future in futures) < KILL_AFTER:
                time.sleep(0.05)
            answered_before_kill = sum(future.done() for future in futures)
            in_flight = sum(future.running() for future in futures)
            dead_since = kill_hard(victim)
            done, pending = wait(futures, timeout=300)
    outcomes = [future.result() for future in futures if future in done]
    served_by_survivor = successes(survivor.grpc_url, DETECTOR) - served_before
    row = partial(reliability_figures.row, "Failover (kill -9)")
    row("requests through Detector([a, b])", FAILOVER_REQUESTS)
    row("server a killed (SIGKILL) after", f"{answered_before_kill} answers, {in_flight} in flight")
    row("completed with correct detections", f"{len(outcomes)}/{FAILOVER_REQUESTS}")
    row("answered by server b", served_by_survivor)
    row(
        "slowest request (includes the failover)",
        seconds(max((latency for _, latency, _ in outcomes), default=0.0)),
    )
    assert not pending and len(outcomes) == FAILOVER_REQUESTS
    for detections, _, _ in outcomes:
        assert_same_detections(detections, reference)
    # Requests that began after the victim was dead can only have been served by the survivor.
    # (Counting from `answered_before_kill` raced: the victim may answer more between that count
    # and the kill.)
    started_after_death = sum(started > dead_since for _, _, started in outcomes)
    assert started_after_death > 0
    assert served_by_survivor >= started_after_death
    assert processes_mentioning(shm_prefix(victim)) == []  # no stub of the killed server lingers


def test_a_killed_python_stub_keeps_readiness_green_but_fails_the_canary(faults, reliability_figures):
    """tritonserver 2.51 does not notice a dead stub: readiness and liveness stay 200 while every
    inference through that model fails. The canary check (the chart's readiness and liveness
    probes) catches it. Only this server's stub is killed: its workdir is in the command line."""
    server, model = faults.crashing, POSTPROCESS_MODEL
    stub = stub_pid(server, model)
    os.kill(stub, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not dead(stub):
        assert time.monotonic() < deadline, f"stub {stub} survived SIGKILL"
        time.sleep(0.05)
    # An inference first: readiness is read after the server has tried the dead stub and failed.
    answer, message, _ = grpc_answer(server.grpc_url, DETECTOR, pixels_request())
    paths = ["/v2/health/ready", "/v2/health/live", *(f"/v2/models/{name}/ready" for name in ALL_MODELS)]
    readiness = {path: int(http_answer_raw(server.http_url, "GET", path)[0]) for path in paths}
    canary = health.check(server.http_url, timeout_s=30)
    cli = subprocess.run(
        [sys.executable, "-m", "ssd300_serving.health", "--url", server.http_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    row = partial(reliability_figures.row, "Stub killed")
    row("stub", model)
    row(
        "readiness endpoints still answering 200 (server behaviour)",
        f"{sum(status == 200 for status in readiness.values())}/{len(readiness)}",
    )
    row("inference answer", brief(f"{answer}: {message}"))
    row(
        "canary health check (chart readiness/liveness)",
        ("healthy: " if canary[0] else "UNHEALTHY: ") + brief(canary[1]),
    )
    assert all(status == 200 for status in readiness.values()), readiness  # the server's blind spot
    assert answer == "INTERNAL" and f"Stub process '{model}_0_0' is not healthy" in message
    assert canary[0] is False and "is not healthy" in canary[1]
    assert cli.returncode == 1 and "UNHEALTHY" in cli.stderr


def test_sigterm_under_load_finishes_in_flight_requests_refuses_new_ones_and_exits_0(
    faults, reliability_figures
):
    """`make serve` stopped with SIGTERM while requests are in flight: those complete within the
    exit timeout, requests sent once draining has begun are refused at once (NOT_FOUND while the
    ensembles unload, UNAVAILABLE once the port is closed), and the launcher exits 0."""
    launcher = faults.launcher
    with grpcclient.InferenceServerClient(launcher.grpc_url) as client:
        warm_up_started = time.monotonic()
        client.infer(DETECTOR, pixels_request(), client_timeout=120)
        warm_up_s = time.monotonic() - warm_up_started
        inference_started = time.monotonic()
        client.infer(DETECTOR, pixels_request(), client_timeout=120)
        sent = max(
            2, min(SIGTERM_IN_FLIGHT, int(EXIT_TIMEOUT_S / 4 / (time.monotonic() - inference_started)))
        )
        finished: dict[int, tuple[str, float]] = {}

        def on_answer(index: int):
            def callback(result, error):
                finished[index] = (
                    "ok" if error is None else f"{error.status()}: {error.message()}",
                    time.monotonic(),
                )

            return callback

        for index in range(sent):
            client.async_infer(
                DETECTOR, pixels_request(), on_answer(index), client_timeout=2 * EXIT_TIMEOUT_S + 30
            )
        # Received and queued by the server: 8 requests sent this way showed in ssd300's pending
        # count within 20 ms here. Not polled: with all of them in one batch that count is 0
        # while they run, and nothing else the server reports tells them apart from finished.
        time.sleep(0.5)
        in_flight = sent - len(finished)
        terminated = time.monotonic()
        launcher.process.send_signal(signal.SIGTERM)

        # From the moment the ensemble stops being ready, every new request must be refused fast.
        while http_answer_raw(launcher.http_url, "GET", f"/v2/models/{DETECTOR}/ready")[0] == "200":
            assert time.monotonic() < terminated + 10, "draining did not begin within 10 s of SIGTERM"
            time.sleep(0.05)
        new_answers: list[tuple[str, float]] = []
        while launcher.process.poll() is None or len(new_answers) < 2:
            started = time.monotonic()
            with grpcclient.InferenceServerClient(launcher.grpc_url) as late_client:
                try:
                    late_client.infer(DETECTOR, pixels_request(), client_timeout=10)
                    answer = "OK"
                except InferenceServerException as error:
                    answer = (error.status() or "").replace("StatusCode.", "")
            new_answers.append((answer, time.monotonic() - started))
            assert time.monotonic() < terminated + 2 * EXIT_TIMEOUT_S + 20, "the launcher did not exit"
            time.sleep(0.25)
        exit_code = launcher.process.wait(timeout=10)
        exited = time.monotonic()

    completed = [index for index, (answer, _) in finished.items() if answer == "ok"]
    refused = sum(answer in ("NOT_FOUND", "UNAVAILABLE") for answer, _ in new_answers)
    stubs_left = processes_mentioning(launcher.shm_prefix)
    shm_left = list(Path("/dev/shm").glob(f"{launcher.shm_prefix}*"))
    row = partial(reliability_figures.row, "SIGTERM (launcher)")
    drain_s = max((at for _, at in finished.values()), default=terminated) - terminated
    row(
        "in flight at SIGTERM, completed",
        f"{len(completed)}/{sent} (last {seconds(drain_s)} after SIGTERM; "
        f"exit timeout {seconds(EXIT_TIMEOUT_S)})",
    )
    row(
        "new requests after draining began, refused cleanly",
        f"{refused}/{len(new_answers)}: {tally([answer for answer, _ in new_answers])} "
        f"(slowest {seconds(max((latency for _, latency in new_answers), default=0.0))})",
    )
    row("launcher exit code", f"{exit_code} after {seconds(exited - terminated)}")
    row("stub processes / shared-memory files left", f"{len(stubs_left)} / {len(shm_left)}")
    assert in_flight > 0  # the signal did arrive under load
    assert sorted(finished) == list(range(sent)), finished
    assert len(completed) == sent, finished
    assert all(at - terminated <= EXIT_TIMEOUT_S for _, at in finished.values())
    assert refused == len(new_answers), new_answers
    # Refused at once: faster than one inference (the warm-up) took in this run.
    assert all(latency < warm_up_s for _, latency in new_answers), (warm_up_s, new_answers)
    assert exit_code == 0, launcher.log()[-3000:]
    assert stubs_left == [] and shm_left == []


def test_the_cli_stops_with_exit_one_when_its_server_hangs_mid_run(faults, sample_paths, tmp_path, capsys):
    """The server answers the first image, then freezes (SIGSTOP: a hung process, its port still
    open): the next request times out, the run stops with exit 1 and "error:", and what was
    written before stays."""
    from ssd300_client import cli_run
    from ssd300_client.cli import main

    server = faults.stalled
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(6):
        shutil.copy(sample_paths[index % len(sample_paths)], photos / f"{index:012d}.jpg")
    # The deadline is set from this run's own latency, so that only the freeze can break it.
    with Detector(server.grpc_url, shared_memory=False) as detector:
        detector.detect(sample_paths[0])  # warm-up
        started = time.monotonic()
        detector.detect(sample_paths[0])
        timeout_s = max(2, math.ceil(5 * (time.monotonic() - started)))
    printed = []
    original = cli_run.format_detections

    def freeze_after_the_first(*args, **kwargs):  # the CLI prints each image as its answer arrives
        if not printed:
            os.killpg(server.process.pid, signal.SIGSTOP)
        printed.append(kwargs.get("name"))
        return original(*args, **kwargs)

    out = tmp_path / "out"
    options = [
        "--batch-size",
        "1",
        "--concurrency",
        "1",
        "--timeout",
        str(timeout_s),
        "--retries",
        "0",
        "--shared-memory",
        "off",
    ]
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cli_run, "format_detections", freeze_after_the_first)
            code = main([str(photos), "--url", server.grpc_url, "--out", str(out), "--print", *options])
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)
        kill_hard(server)
    err = capsys.readouterr().err
    assert code == 1, err
    assert re.search(r"^error: .*did not answer the request for 'ssd300_detector' in time", err, re.M), err
    # One image was answered before the freeze (two, if the next was answered as it began).
    assert 1 <= len(printed) < 6, printed
    assert len(list(out.iterdir())) == len(printed)  # annotated images written before the stop stay
