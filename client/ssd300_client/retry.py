"""When to try again: exponential backoff with jitter between rounds over the servers."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

# First pause 0.25 s, doubling, at most 4 s: with the default 3 retries a dead cluster is
# reported after about 1–2 s, while a server restarting under a load balancer gets a few seconds.
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.25
MAX_BACKOFF_S = 4.0


def backoff_delays_s(
    retries: int,
    *,
    base_s: float = DEFAULT_BACKOFF_S,
    max_s: float = MAX_BACKOFF_S,
    rng: random.Random | None = None,
) -> list[float]:
    """The pause before each round of attempts: 0 before the first, then for retry k (1-based)
    ``min(max_s, base_s · 2^(k−1))`` scaled by a random factor in [0.5, 1] so that clients
    failing together do not retry in lockstep ("equal jitter")."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    uniform = rng.random if rng is not None else random.random
    return [0.0] + [
        min(max_s, base_s * 2 ** (k - 1)) * (0.5 + 0.5 * uniform()) for k in range(1, retries + 1)
    ]


def rotation(items: Sequence, first: int) -> list:
    """``items`` starting at index ``first`` and wrapping round: the last good server goes first."""
    return list(items[first:]) + list(items[:first])


def pause(seconds: float) -> None:
    """The blocking client's pause between rounds: the seam tests replace (``time.sleep`` itself
    is shared by every thread in the process)."""
    time.sleep(seconds)


async def pause_async(seconds: float) -> None:
    """The asyncio client's pause between rounds."""
    await asyncio.sleep(seconds)
