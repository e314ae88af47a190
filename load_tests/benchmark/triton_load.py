"""Closed-loop load on a Triton server: N threads, each sending its next request as soon as
the previous answer arrives, for a fixed time per point.

Senders prepare everything (client, input tensor, shared-memory region) before the clock
starts, so a point times only the requests. Figures come from a measurement window after a
warm-up: throughput = images answered inside the window / window length; latency = requests
started inside the window; average executed batch = Δinference_count / Δexecution_count of
model ``ssd300`` over the window (Triton's statistics).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, shared_memory

from load_tests.benchmark import cpu_share
from ssd300_client.contract import (
    DETECTOR_MODEL,
    ENCODED_IMAGE_DATATYPE,
    ENCODED_IMAGE_INPUT,
    IMAGE_MODEL,
    IMAGES_DATATYPE,
    IMAGES_INPUT,
    NETWORK_MODEL,
    POSTPROCESS_MODEL,
)

# Modes: protocol and payload. "grpc_shm": the uint8 input travels through system shared
# memory registered with the server; only the request's metadata goes over gRPC.
MODES = ("grpc", "http", "grpc_shm", "image_grpc")
REQUEST_TIMEOUT_S = 120.0
SHM_RELEASE_TIMEOUT_S = 10.0


class Sender:
    """One thread's client; ``send()`` makes one request and returns how many images it carried."""

    def close(self) -> None:
        self.client.close()


class GrpcSender(Sender):
    def __init__(self, address: str, pixels: np.ndarray) -> None:
        self.client = grpcclient.InferenceServerClient(address)
        self.inputs = [grpcclient.InferInput(IMAGES_INPUT, list(pixels.shape), IMAGES_DATATYPE)]
        self.inputs[0].set_data_from_numpy(pixels)
        self.images = len(pixels)

    def send(self) -> int:
        self.client.infer(DETECTOR_MODEL, self.inputs, client_timeout=REQUEST_TIMEOUT_S)
        return self.images


class HttpSender(Sender):
    def __init__(self, address: str, pixels: np.ndarray) -> None:
        self.client = httpclient.InferenceServerClient(
            address, connection_timeout=REQUEST_TIMEOUT_S, network_timeout=REQUEST_TIMEOUT_S
        )
        self.inputs = [httpclient.InferInput(IMAGES_INPUT, list(pixels.shape), IMAGES_DATATYPE)]
        self.inputs[0].set_data_from_numpy(pixels, binary_data=True)
        self.images = len(pixels)

    def send(self) -> int:
        self.client.infer(DETECTOR_MODEL, self.inputs)
        return self.images


class GrpcSharedMemorySender(GrpcSender):
    """The input lives in a POSIX shared-memory region the server reads; outputs come over gRPC."""

    def __init__(self, address: str, pixels: np.ndarray, *, index: int) -> None:
        self.client = grpcclient.InferenceServerClient(address)
        self.region = f"ssd300_bench_{os.getpid()}_{index}"
        self.handle = shared_memory.create_shared_memory_region(self.region, f"/{self.region}", pixels.nbytes)
        shared_memory.set_shared_memory_region(self.handle, [pixels])
        self.client.register_system_shared_memory(self.region, f"/{self.region}", pixels.nbytes)
        self.inputs = [grpcclient.InferInput(IMAGES_INPUT, list(pixels.shape), IMAGES_DATATYPE)]
        self.inputs[0].set_shared_memory(self.region, pixels.nbytes)
        self.images = len(pixels)

    def close(self) -> None:
        unregister_when_released(self.client, self.region)
        shared_memory.destroy_shared_memory_region(self.handle)
        super().close()


def unregister_when_released(client: grpcclient.InferenceServerClient, region: str) -> None:
    """The server holds a region until it has released the last request that read it, which
    can be a moment after the response arrived ("currently in use")."""
    deadline = time.monotonic() + SHM_RELEASE_TIMEOUT_S
    while True:
        try:
            client.unregister_system_shared_memory(region)
            return
        except InferenceServerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class GrpcImageSender(GrpcSender):
    """Encoded files to ``ssd300_image``: the server decodes and resizes."""

    def __init__(self, address: str, encoded: np.ndarray) -> None:
        self.client = grpcclient.InferenceServerClient(address)
        self.inputs = [
            grpcclient.InferInput(ENCODED_IMAGE_INPUT, list(encoded.shape), ENCODED_IMAGE_DATATYPE)
        ]
        self.inputs[0].set_data_from_numpy(encoded)
        self.images = len(encoded)

    def send(self) -> int:
        self.client.infer(IMAGE_MODEL, self.inputs, client_timeout=REQUEST_TIMEOUT_S)
        return self.images


@dataclass
class Point:
    mode: str
    concurrency: int
    images_per_request: int
    window_s: float
    images_per_s: float
    requests: int  # started inside the window (the latency sample)
    errors: list[str]
    latency_ms: dict[str, float]  # p50, p95, mean
    network: dict[str, float]  # ssd300's statistics over the window
    postprocess: dict[str, float] = field(default_factory=dict)
    foreign_cpu_share: float | None = None  # other processes' share of the CPU in the window


def model_statistics(client: grpcclient.InferenceServerClient, model: str) -> dict[str, int]:
    """Cumulative counters. Triton keeps ``inference_stats`` per request (a batch's compute
    time is added once for each request in it) and ``batch_stats`` per execution."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    per_request = stats.get("inference_stats", {})
    executions = stats.get("batch_stats", [])
    return {
        "inferences": int(stats.get("inference_count", 0)),  # images (batch items)
        "executions": int(stats.get("execution_count", 0)),
        "requests": int(per_request.get("success", {}).get("count", 0)),
        "queue_ns": int(per_request.get("queue", {}).get("ns", 0)),
        "execution_compute_ns": sum(int(b.get("compute_infer", {}).get("ns", 0)) for b in executions),
    }


def statistics_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    change = {key: after[key] - before[key] for key in before}
    return {
        "inferences": change["inferences"],
        "executions": change["executions"],
        "average_batch": change["inferences"] / change["executions"] if change["executions"] else 0.0,
        "queue_ms_per_request": change["queue_ns"] / 1e6 / max(change["requests"], 1),
        "compute_ms_per_execution": change["execution_compute_ns"] / 1e6 / max(change["executions"], 1),
    }


def run_point(
    make_sender, *, mode: str, concurrency: int, grpc_address: str, warmup_s: float, window_s: float
) -> Point:
    """``make_sender(worker_index)`` builds one thread's sender; every thread runs until the window ends."""
    senders = [make_sender(index) for index in range(concurrency)]
    records: list[list[tuple[float, float, int]]] = [[] for _ in senders]
    errors: list[str] = []
    start = time.perf_counter()
    window_start, window_end = start + warmup_s, start + warmup_s + window_s

    def loop(sender: Sender, record: list) -> None:
        while (sent_at := time.perf_counter()) < window_end:
            try:
                images = sender.send()
            except Exception as exc:  # reported with the point; this thread stops sending
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            record.append((sent_at, time.perf_counter(), images))

    threads = [threading.Thread(target=loop, args=(s, r), daemon=True) for s, r in zip(senders, records)]
    with grpcclient.InferenceServerClient(grpc_address) as stats_client:
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, window_start - time.perf_counter()))
        network_before = model_statistics(stats_client, NETWORK_MODEL)
        postprocess_before = model_statistics(stats_client, POSTPROCESS_MODEL)
        cpu_before = cpu_share.snapshot()
        time.sleep(max(0.0, window_end - time.perf_counter()))
        cpu_after = cpu_share.snapshot()
        network_after = model_statistics(stats_client, NETWORK_MODEL)
        postprocess_after = model_statistics(stats_client, POSTPROCESS_MODEL)
        for thread in threads:
            thread.join()
    for sender in senders:
        sender.close()

    done = [entry for record in records for entry in record]
    answered_in_window = sum(images for _, finished, images in done if window_start <= finished < window_end)
    latencies = (
        np.array([finished - sent for sent, finished, _ in done if window_start <= sent < window_end]) * 1000
    )
    return Point(
        mode=mode,
        concurrency=concurrency,
        images_per_request=done[0][2] if done else 0,
        window_s=window_s,
        images_per_s=answered_in_window / window_s,
        requests=len(latencies),
        errors=errors,
        latency_ms={
            "p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
            "p95": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
            "mean": float(latencies.mean()) if len(latencies) else float("nan"),
        },
        network=statistics_delta(network_before, network_after),
        postprocess=statistics_delta(postprocess_before, postprocess_after),
        foreign_cpu_share=cpu_share.foreign_share(cpu_before, cpu_after),
    )


def warm_up(grpc_address: str, samples, *, max_batch: int, rounds: int = 2) -> None:
    """Run every batch size the points can produce before any is measured.

    model.pt is TorchScript: its profiling executor optimises the graph for the input shapes
    it has seen, so the first execution at each new batch size is slow (measured on 2 cores:
    2.4 s instead of 0.17 s at batch 1, 1.8 s instead of 0.32 s at batch 2).
    """
    with grpcclient.InferenceServerClient(grpc_address) as client:
        for _ in range(rounds):
            for size in range(1, max_batch + 1):
                tensor = grpcclient.InferInput(
                    IMAGES_INPUT, [size, *samples.pixels.shape[1:]], IMAGES_DATATYPE
                )
                tensor.set_data_from_numpy(samples.pixel_batch(size))
                client.infer(DETECTOR_MODEL, [tensor], client_timeout=REQUEST_TIMEOUT_S)
            encoded = grpcclient.InferInput(ENCODED_IMAGE_INPUT, [1, 1], ENCODED_IMAGE_DATATYPE)
            encoded.set_data_from_numpy(samples.encoded_batch(1))
            client.infer(IMAGE_MODEL, [encoded], client_timeout=REQUEST_TIMEOUT_S)


def sender_factory(mode: str, *, grpc_address: str, http_address: str, samples, images_per_request: int):
    """Each worker starts at a different photo, so concurrent requests carry different images."""
    pixels = samples.pixel_batch
    factories = {
        "grpc": lambda index: GrpcSender(grpc_address, pixels(images_per_request, index)),
        "http": lambda index: HttpSender(http_address, pixels(images_per_request, index)),
        "grpc_shm": lambda index: GrpcSharedMemorySender(
            grpc_address, pixels(images_per_request, index), index=index
        ),
        "image_grpc": lambda index: GrpcImageSender(
            grpc_address, samples.encoded_batch(images_per_request, index)
        ),
    }
    return factories[mode]
