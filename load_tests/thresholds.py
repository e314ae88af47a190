"""Pass/fail criteria applied to a finished run; the verdict becomes Locust's exit code."""

from __future__ import annotations

# Defaults for a serving deployment (the Helm chart's in-cluster run). `make load` on a CPU
# passes its own p95 limit: a CPU forward pass alone takes ~0.4 s per image.
DEFAULT_MAX_FAILURE_RATIO = 0.01
DEFAULT_MAX_P95_MS = 5000.0


def violations(
    *,
    requests: int,
    failures: int,
    p95_ms: float,
    max_failure_ratio: float = DEFAULT_MAX_FAILURE_RATIO,
    max_p95_ms: float = DEFAULT_MAX_P95_MS,  # 0 disables the latency check
) -> list[str]:
    """One readable line per violated criterion; empty when the run passes."""
    if requests == 0:
        return ["no request was made"]
    problems = []
    # Locust counts failed requests in num_requests too (its fail_ratio is failures / requests).
    if failures / requests > max_failure_ratio:
        problems.append(
            f"failure ratio {failures / requests:.2%} > {max_failure_ratio:.2%} ({failures} of {requests})"
        )
    if max_p95_ms and p95_ms > max_p95_ms:
        problems.append(f"p95 latency {p95_ms:.0f} ms > {max_p95_ms:.0f} ms")
    return problems
