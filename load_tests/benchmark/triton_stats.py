"""Triton's own counters for a benchmark point, and the warm-up every measurement starts after.

The load itself comes from perf_analyzer (``load_tests.perf.analyzer``); these read what the
server did meanwhile: Δinference_count / Δexecution_count of a model is its average executed
batch, and the compute time per execution shows what batching cost or saved.
"""

from __future__ import annotations

import tritonclient.grpc as grpcclient

from ssd300_common.contract import (
    DETECTOR_MODEL,
    ENCODED_IMAGE_DATATYPE,
    ENCODED_IMAGE_INPUT,
    IMAGE_MODEL,
    IMAGES_DATATYPE,
    IMAGES_INPUT,
)

REQUEST_TIMEOUT_S = 120.0


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
