"""Overload (issue 7) on a private server: ~4x the measured capacity, open loop, through the
ensemble. Every request ends in an answer (served, or refused at once as busy), memory stays
bounded, the health canary calls a busy server healthy, and the server recovers afterwards."""

from __future__ import annotations

import io
import math
import statistics
import threading
import time
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ssd300_client import ServerBusyError, ServerUnavailableError
from ssd300_client.transport import translate_error
from ssd300_common.contract import DETECTOR_MODEL as DETECTOR
from ssd300_common.contract import IMAGES_DATATYPE, IMAGES_INPUT, NETWORK_MODEL
from ssd300_serving import health

from .helpers.figures import mib, seconds
from .helpers.processes import process_tree_rss
from .helpers.triton_calls import brief, non_finite_values, outputs_of, still_serving, tensor

pytestmark = pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")

IMAGE_SHAPE = [1, 300, 300, 3]
# Offered load, and how long: at least OVERLOAD_FACTOR × the measured capacity, and at least
# OVERFLOW_FACTOR × what the server can hold (its queue plus one batch of max_batch_size being
# computed) within OVERLOAD_MAX_S. The second bound makes the queue overflow however slow the
# machine is: on a busy shared machine one request can take seconds, and 4× that capacity alone
# would not fill the queue before the sending stops.
OVERLOAD_FACTOR = 4
OVERFLOW_FACTOR = 2
OVERLOAD_MIN_S, OVERLOAD_MAX_S = 10.0, 30.0
# Capacity = 1 / the fastest of a few sequential requests: on a shared machine noise only ever
# slows a request down, so the fastest is the best estimate of what the server can do.
CAPACITY_SAMPLES = 5
# Latency after recovery: the median of this many sequential requests.
AFTER_SAMPLES = 3
# Every request must have its answer this long after the last one was sent: it may wait the
# queue timeout, then run in a batch as large as the queue, at up to twice the sequential time
# per image (large batches run slower per image on two cores), plus some slack.
DRAIN_SLACK_S = 10.0
# RSS may grow by this much: activations of one batch of at most max_batch_size images (the
# batcher fills batches from the queue; batch 32 measured +1.4 GiB on this machine), never with
# time or load.
RSS_HEADROOM_BYTES = 4 * 2**30
RECOVERY_DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def overloaded(private_servers, reliability_figures):
    server = private_servers.embedded("overloaded")
    private_servers.start()
    reliability_figures.server_version(server.http_url)
    return server


def served_batching(client: grpcclient.InferenceServerClient) -> dict:
    """ssd300's batching and queue policy as the server loaded them (the config it serves)."""
    config = client.get_model_config(NETWORK_MODEL, as_json=True)["config"]
    batching = config.get("dynamic_batching", {})
    policy = batching.get("default_queue_policy", {})
    return {
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "preferred_batch_sizes": [int(size) for size in batching.get("preferred_batch_size", [])],
        "max_queue_size": int(policy.get("max_queue_size", 0)),
        "queue_timeout_s": int(policy.get("default_timeout_microseconds", 0)) / 1e6,
    }


def pixels_request() -> list:
    image = np.random.default_rng(3).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
    return [tensor(IMAGES_INPUT, image, IMAGES_DATATYPE)]


def timed_inference(client: grpcclient.InferenceServerClient, timeout_s: float = 120) -> float:
    started = time.monotonic()
    client.infer(DETECTOR, pixels_request(), client_timeout=timeout_s)
    return time.monotonic() - started


def batch_sizes(client: grpcclient.InferenceServerClient, model: str) -> dict[int, int]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def test_the_client_reads_a_queue_refusal_as_busy_and_a_stopping_server_as_unavailable():
    # The messages tritonserver 2.51 sends (observed below and in the SIGTERM test).
    unavailable = "StatusCode.UNAVAILABLE"
    full = InferenceServerException(
        f"in ensemble '{DETECTOR}', Exceeds maximum queue size", status=unavailable
    )
    late = InferenceServerException(f"in ensemble '{DETECTOR}', Request timeout expired", status=unavailable)
    stopping = InferenceServerException(
        "Server is stopping, scheduler for model has stopped", status=unavailable
    )
    for error in (full, late):
        assert isinstance(translate_error(error, where="h:1 (grpc)", model=DETECTOR), ServerBusyError)
    translated = translate_error(stopping, where="h:1 (grpc)", model=DETECTOR)
    assert type(translated) is ServerUnavailableError  # an outage: fail over, not "busy"


def test_the_canary_counts_a_refusing_busy_server_as_healthy(monkeypatch):
    # A liveness probe must never restart a server for being busy (HTTP 503 from the queue policy).
    def busy(request, timeout):
        body = io.BytesIO(b'{"error":"Exceeds maximum queue size"}')
        raise health.urllib.error.HTTPError(request.full_url, 503, "Service Unavailable", {}, body)

    monkeypatch.setattr(health.urllib.request, "urlopen", busy)
    healthy, reason = health.check("127.0.0.1:1")
    assert healthy and reason.startswith("busy")


# A load test (16-30 s at several times capacity, then the queue timeout to drain, ~1 min with
# its server): `make reliability` runs it, `make test` leaves it out.
@pytest.mark.slow
def test_overload_ends_every_request_in_an_answer_and_the_server_recovers(overloaded, reliability_figures):
    """At least 4× capacity, open loop (requests leave at a fixed rate whatever the answers), through the
    ensemble: each request succeeds or is refused with UNAVAILABLE, none is lost, memory stays
    bounded, and afterwards the server answers at its usual speed."""
    server = overloaded
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        timed_inference(client)  # warm-up
        baseline = min(timed_inference(client) for _ in range(CAPACITY_SAMPLES))
        capacity = 1 / baseline
        batching = served_batching(client)
        queue_size, queue_timeout_s = batching["max_queue_size"], batching["queue_timeout_s"]
        assert queue_size > 0, "ssd300's queue is unbounded: overload would queue forever, not refuse"
        overflow = OVERFLOW_FACTOR * (queue_size + batching["max_batch_size"])
        rate = max(OVERLOAD_FACTOR * capacity, overflow / OVERLOAD_MAX_S)
        # rate ≥ overflow / OVERLOAD_MAX_S, so the duration stays within OVERLOAD_MAX_S
        duration = max(OVERLOAD_MIN_S, overflow / rate)
        count = math.ceil(rate * duration)  # ≥ overflow
        drain_deadline_s = queue_timeout_s + 2 * queue_size * baseline + DRAIN_SLACK_S
        batches_before = batch_sizes(client, NETWORK_MODEL)
        rss_idle = process_tree_rss(server.process.pid)

        rss_samples, stop_sampling = [rss_idle], threading.Event()

        def sample_rss():
            while not stop_sampling.wait(0.25):
                rss_samples.append(process_tree_rss(server.process.pid))

        canary: dict = {}

        def check_canary():  # halfway through, while the queue is full
            time.sleep(duration / 2)
            started = time.monotonic()
            canary["answer"] = health.check(server.http_url, timeout_s=60)
            canary["latency_s"] = time.monotonic() - started

        outcomes: dict[int, tuple[str, float, str]] = {}
        sent_at: dict[int, float] = {}
        lock = threading.Lock()

        def on_answer(index: int):
            def callback(result, error):  # tritonclient passes both by keyword
                latency = time.monotonic() - sent_at[index]
                if error is None:
                    kind = "ok" if non_finite_values(outputs_of(result)) == 0 else "non-finite"
                    detail = ""
                else:
                    translated = translate_error(error, where=server.grpc_url, model=DETECTOR)
                    kind, detail = (
                        ("busy" if isinstance(translated, ServerBusyError) else "other"),
                        str(error),
                    )
                with lock:
                    outcomes[index] = (kind, latency, detail)

            return callback

        helpers = [threading.Thread(target=sample_rss), threading.Thread(target=check_canary)]
        for helper in helpers:
            helper.start()
        started = time.monotonic()
        for index in range(count):
            pause = started + index / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent_at[index] = time.monotonic()
            client.async_infer(
                DETECTOR, pixels_request(), on_answer(index), client_timeout=drain_deadline_s + 60
            )
        last_sent = time.monotonic()
        while len(outcomes) < count and time.monotonic() < last_sent + drain_deadline_s:
            time.sleep(0.1)
        drained = time.monotonic()
        stop_sampling.set()
        for helper in helpers:
            helper.join()

        # Recovery: the first single request answered about as fast as before the overload.
        fast_enough = max(3 * baseline, baseline + 1.0)
        recovery_s = None
        while time.monotonic() < drained + RECOVERY_DEADLINE_S:
            if timed_inference(client, timeout_s=RECOVERY_DEADLINE_S) <= fast_enough:
                recovery_s = time.monotonic() - last_sent
                break
            time.sleep(0.5)
        latency_after = statistics.median(timed_inference(client) for _ in range(AFTER_SAMPLES))
        batches = {
            size: n - batches_before.get(size, 0) for size, n in batch_sizes(client, NETWORK_MODEL).items()
        }

    kinds = [kind for kind, _, _ in outcomes.values()]
    canary_answer = canary.get("answer", (False, "no answer"))
    latencies = {
        kind: [latency for k, latency, _ in outcomes.values() if k == kind] for kind in ("ok", "busy")
    }
    largest_batch = max((size for size, n in batches.items() if n > 0), default=0)
    preferred = max(batching["preferred_batch_sizes"], default=0)
    lost = count - len(outcomes)
    row = partial(reliability_figures.row, "Overload")
    row(
        f"capacity measured (fastest of {CAPACITY_SAMPLES} sequential 1-image requests)",
        f"{capacity:.2f} images/s ({seconds(baseline)} per request)",
    )
    row("offered load", f"{rate / capacity:.1f}× capacity = {rate:.1f} requests/s for {seconds(duration)}")
    row(
        "ssd300 batching, as the server loaded it",
        f"max_batch_size {batching['max_batch_size']}, preferred_batch_size "
        f"{batching['preferred_batch_sizes'] or 'none'}, queue of {queue_size} requests, "
        f"queue timeout {seconds(queue_timeout_s)}",
    )
    row("requests sent", count)
    row("succeeded", f"{kinds.count('ok')} (slowest {seconds(max(latencies['ok'], default=0.0))})")
    row(
        "refused explicitly (UNAVAILABLE: queue full / queue timeout)",
        f"{kinds.count('busy')} (slowest refusal {seconds(max(latencies['busy'], default=0.0))})",
    )
    row("other errors", len(kinds) - kinds.count("ok") - kinds.count("busy"))
    row("lost (no answer by the deadline)", lost)
    row(
        "last answer after the last request",
        f"{seconds(drained - last_sent)} (deadline {seconds(drain_deadline_s)})",
    )
    row(
        "server memory (RSS, tritonserver + stubs)",
        f"{mib(rss_idle)} idle → {mib(max(rss_samples))} peak (bound {mib(rss_idle + RSS_HEADROOM_BYTES)})",
    )
    canary_text = ("healthy: " if canary_answer[0] else "UNHEALTHY: ") + brief(canary_answer[1])
    row("canary health check during overload", f"{canary_text} ({seconds(canary.get('latency_s', 0.0))})")
    row(
        "recovery: first request at baseline latency",
        f"{seconds(recovery_s)} after the last request"
        if recovery_s is not None
        else f"none within {RECOVERY_DEADLINE_S:.0f} s",
    )
    row("largest ssd300 batch executed", largest_batch)
    row(
        f"latency after recovery (p50 of {AFTER_SAMPLES})",
        f"{seconds(latency_after)} (baseline {seconds(baseline)})",
    )
    if largest_batch > preferred > 0:
        reliability_figures.note(
            f"Under overload the dynamic batcher ran ssd300 batches of up to {largest_batch} images, above "
            f"the preferred size {preferred} (max_batch_size {batching['max_batch_size']}): with a full "
            "queue, the batch size, and with it the latency and memory of one batch, is bounded by "
            "max_batch_size, not by the preferred size."
        )
    assert lost == 0, f"{lost} requests got no answer within {drain_deadline_s:.0f} s"
    unexpected = [detail or kind for kind, _, detail in outcomes.values() if kind not in ("ok", "busy")]
    assert unexpected == [], unexpected[:5]
    assert kinds.count("busy") > 0 and kinds.count("ok") > 0  # it was overloaded, and it kept working
    assert max(rss_samples) <= rss_idle + RSS_HEADROOM_BYTES
    assert canary_answer[0], canary_answer  # busy is healthy: no restart for load
    assert recovery_s is not None, (
        f"no request within {fast_enough:.2f} s in the {RECOVERY_DEADLINE_S} s after the overload"
    )
    assert latency_after <= fast_enough
    assert still_serving(server)
