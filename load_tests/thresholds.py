"""Pass/fail criteria applied to a finished run; the verdict becomes Locust's exit code."""

from __future__ import annotations

from dataclasses import dataclass

# Defaults for a serving deployment (the Helm chart's in-cluster run). `make load` on a CPU
# passes its own p95 limit: a CPU forward pass alone takes ~0.4 s per image.
DEFAULT_MAX_FAILURE_RATIO = 0.01
DEFAULT_MAX_P95_MS = 5000.0


@dataclass(frozen=True)
class Thresholds:
    max_failure_ratio: float = DEFAULT_MAX_FAILURE_RATIO
    max_p95_ms: float = DEFAULT_MAX_P95_MS  # 0 disables the latency check

    def violations(self, *, requests: int, failures: int, p95_ms: float) -> list[str]:
        """One readable line per violated criterion; empty when the run passes."""
        if requests == 0:
            return ["no request was made"]
        problems = []
        # Locust counts failed requests in num_requests too (its fail_ratio is failures / requests).
        failure_ratio = failures / requests
        if failure_ratio > self.max_failure_ratio:
            problems.append(
                f"failure ratio {failure_ratio:.2%} > {self.max_failure_ratio:.2%} ({failures} of {requests})"
            )
        if self.max_p95_ms and p95_ms > self.max_p95_ms:
            problems.append(f"p95 latency {p95_ms:.0f} ms > {self.max_p95_ms:.0f} ms")
        return problems
