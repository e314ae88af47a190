"""Results as the reports write them: numbers (a figure not measured prints as "n/a") and the
results.json of a run (dataclasses as objects)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def to_json(results: dict) -> str:
    def default(value):
        if hasattr(value, "__dataclass_fields__"):
            return asdict(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    return json.dumps(results, indent=2, default=default, allow_nan=True)
