"""What ``make bench`` and ``make perf`` both write: the machine's facts, perf_analyzer's points
as a table and a plot, results.json, and their own sections of load_tests/BENCHMARK.md."""

from __future__ import annotations

import os
from pathlib import Path

from load_tests.perf.analyzer import SCENARIOS, WINDOW_ROUNDS, PerfPoint


def machine() -> dict:
    """CPU model, cores, memory and the 1-minute load average (the machine may be shared)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu_model": names[0] if names else "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "load_average": os.getloadavg()[0],
    }


def served_section(results: dict, heading: str, command: str, folder: str) -> list[str]:
    """A heading; where, when and what was served, in one paragraph; the table of the points."""
    start, end, server = results["machine"], results["machine_after"], results["server"]
    settings = results["settings"]
    facts = (
        f"Written by `{command}` on {results['date']}; {start['cpu_model']}, {start['cores']} cores, "
        f"{start['memory_gib']} GiB, no GPU; load average (1 min) {start['load_average']:.1f} at the start "
        f"and {end['load_average']:.1f} at the end of the run, which took {results['duration_s'] / 60:.1f} "
        "min (the machine may be shared: read differences under ~10 % as noise). tritonserver "
        f"{server['version']} (embedded, CPU configs): ssd300 runs {server['engine']} with "
        f"{server['weights']} weights. perf_analyzer 2.51, closed loop, one image per request, windows of "
        f"{settings['requests_per_window']} requests ({WINDOW_ROUNDS} × the concurrency where more), each "
        f"point reported once three windows agree within {settings['stability_percent']} % (at most "
        f"{settings['max_trials']} windows). Latency is client-side; the ssd300 columns are Triton's "
        "statistics over the point: images per execution, queue time per request, compute time per "
        f"execution. perf_analyzer's CSV, log and command line of each point are in `{folder}`."
    )
    return [heading, "", facts, "", *points_table(results["points"])]


def points_table(points: list[PerfPoint]) -> list[str]:
    lines = [
        "| path | clients | images/s | p50 ms | p95 ms | p99 ms | ssd300 batch | queue ms | compute ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        stats = p.network or {}
        figures = (
            [f"failed: {p.error}", "", "", ""]
            if p.error
            else [f"{p.images_per_s:.2f}", *(f"{p.latency_ms[key]:.0f}" for key in ("p50", "p95", "p99"))]
        )
        lines.append(
            f"| {SCENARIOS[p.scenario].title} | {p.concurrency} | {' | '.join(figures)} | "
            f"{stats.get('average_batch', 0):.2f} | {stats.get('queue_ms_per_request', 0):.0f} | "
            f"{stats.get('compute_ms_per_execution', 0):.0f} |"
        )
    return lines


def write_section(path: Path, name: str, text: str) -> None:
    """Replace the part of ``path`` between ``name``'s markers, or append it with its markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.is_file() else ""
    if start in old and end in old:
        head, rest = old.split(start, 1)
        tail = rest.split(end, 1)[1]
    else:
        head, tail = old.rstrip("\n") + "\n\n", "\n"
    path.write_text(f"{head}{start}\n{text.strip()}\n{end}{tail}")


def plot(points: list[PerfPoint], path: Path, title: str) -> None:
    """Throughput and p95 latency against concurrency, one line per path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    for name, scenario in {p.scenario: SCENARIOS[p.scenario] for p in points}.items():  # this run's paths
        measured = [p for p in points if p.scenario == name and not p.error]
        clients = [p.concurrency for p in measured]
        throughput.plot(clients, [p.images_per_s for p in measured], marker="o", label=scenario.title)
        latency.plot(clients, [p.latency_ms["p95"] for p in measured], marker="o", label=scenario.title)
    throughput.set(xlabel="concurrent clients", ylabel="images/s", ylim=(0, None), title="Throughput")
    latency.set(xlabel="concurrent clients", ylabel="ms", ylim=(0, None), title="p95 latency")
    throughput.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
