"""Numbers as the reports print them; a figure that was not measured prints as "n/a"."""

from __future__ import annotations

import math


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"
