"""perf_analyzer points with chosen figures, for the report tests (nothing is measured)."""

from __future__ import annotations

from load_tests.perf.analyzer import PerfPoint


def perf_point(
    concurrency: int,
    images_per_s: float,
    *,
    network: dict | None = None,
    postprocess: dict | None = None,
    p95_ms: float = 200.0,
    foreign_cpu_share: float = 0.0,
    duration_s: float = 20.0,
) -> PerfPoint:
    """A gRPC point; ``network``/``postprocess`` are Triton's statistics as statistics_delta gives them."""
    return PerfPoint(
        scenario="grpc",
        concurrency=concurrency,
        csv=f"grpc_c{concurrency}.csv",
        duration_s=duration_s,
        images_per_s=images_per_s,
        requests=50,
        latency_ms={"p50": p95_ms / 2, "p95": p95_ms, "p99": p95_ms * 1.1},
        network=network or {"average_batch": 2.0, "compute_ms_per_execution": 300.0, "executions": 5},
        postprocess=postprocess,
        foreign_cpu_share=foreign_cpu_share,
    )
