"""How much of the machine's CPU other processes took while a figure was measured.

The benchmark runs on shared machines: a figure taken while something else was computing is
not comparable with one taken on an idle machine. Linux only (/proc); elsewhere the share is
reported as unknown.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    at: float  # monotonic seconds
    busy_ticks: int  # the whole machine, all cores
    own_ticks: int  # this process and its descendants (the server and its model stubs)


def _process_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, user + system ticks)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _own_ticks(table: dict[int, tuple[int, int]]) -> int:
    own = {os.getpid()}
    changed = True
    while changed:  # descendants, whatever the order /proc lists them in
        before = len(own)
        own |= {pid for pid, (parent, _) in table.items() if parent in own}
        changed = len(own) != before
    return sum(ticks for pid, (_, ticks) in table.items() if pid in own)


def snapshot() -> CpuSnapshot | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    busy = sum(values[:8]) - idle  # user..steal; guest time is already inside user
    return CpuSnapshot(time.monotonic(), busy, _own_ticks(_process_table()))


def foreign_share(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """Share of all cores' time spent by processes outside our tree (0 = only us)."""
    if before is None or after is None or after.at <= before.at:
        return None
    foreign = (after.busy_ticks - before.busy_ticks) - (after.own_ticks - before.own_ticks)
    capacity = (after.at - before.at) * TICKS_PER_S * (os.cpu_count() or 1)
    return max(0.0, foreign / capacity)


class QuietWaiter:
    """Before each measurement, wait until other processes leave the CPU alone (their share
    over a short probe below ``threshold``), spending at most ``budget_s`` on waiting per run;
    once the budget is spent, measurements go ahead and their share is reported with them."""

    PROBE_S = 1.0

    def __init__(self, *, threshold: float, budget_s: float) -> None:
        self.threshold = threshold
        self.remaining_s = budget_s
        self.waited_s = 0.0

    def wait(self) -> float | None:
        """Returns the last probe's share (None where /proc is unavailable)."""
        while True:
            before = snapshot()
            time.sleep(self.PROBE_S)
            share = foreign_share(before, snapshot())
            if share is None or share < self.threshold or self.remaining_s <= 0:
                return share
            self.remaining_s -= self.PROBE_S
            self.waited_s += self.PROBE_S
