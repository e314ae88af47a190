"""The perf_analyzer section of load_tests/BENCHMARK.md, its plot, and results.json."""

from __future__ import annotations

import json
from pathlib import Path

from load_tests.benchmark.formatting import fmt, percent
from load_tests.benchmark.plot import draw_points
from load_tests.benchmark.report import load_description
from load_tests.perf.analyzer import TITLES, PerfPoint

SECTION = "perf_analyzer"
PLOT_NAME = "perf_analyzer.png"
REPO_ROOT = Path(__file__).resolve().parents[2]


def from_json(text: str) -> dict:
    results = json.loads(text)
    results["points"] = [PerfPoint(**p) for p in results["points"]]
    return results


def _relative_command(command: str) -> str:
    return command.replace(f"{REPO_ROOT}/", "")


def markdown(results: dict, *, reports: Path) -> str:
    settings, machine, server = results["settings"], results["machine"], results["server"]
    lines = [
        "## perf_analyzer (Triton's load generator)",
        "",
        f"Written by `make perf` (`python -m load_tests.perf`) on {results['date']}, "
        f"{machine['cpu_model']}, {machine['cpu_cores']} cores, no GPU; tritonserver {server['version']} "
        f"(embedded, CPU configs, {server['weights']} weights); perf_analyzer 2.51.0 from the tritonclient "
        f"2.51.0 wheel. {load_description(settings)}. "
        f"Run time {results['duration_s'] / 60:.1f} min, of which "
        f"{results.get('waited_for_quiet_s', 0):.0f} s waiting for other processes to leave the CPU "
        f"(below {settings.get('quiet_below', 0.1):.0%}) before a point. Latency is "
        "client-side; requests = the requests perf_analyzer counted for the figures; server "
        "queue and compute are Triton's figures for the model called (an ensemble: "
        "its steps added up), per request; batch = Δinference_count / Δexecution_count of `ssd300` over "
        "the whole perf_analyzer run; other CPU = share of the machine's CPU used by processes outside "
        "this run and its server. perf_analyzer's own CSVs (`--verbose-csv`) are in `reports/perf/`.",
        "",
        "| path | concurrency | images/s | requests | p50 ms | p95 ms | p99 ms | server queue ms "
        "| server compute ms | avg batch | other CPU | CSV |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["points"]:
        if p.error:
            lines.append(
                f"| {TITLES[p.scenario]} | {p.concurrency} | failed: {p.error} | | | | | | | | "
                f"{percent(p.foreign_cpu_share)} | |"
            )
            continue
        ms = [*(p.latency_ms[k] for k in ("p50", "p95", "p99")), p.server_ms["queue"], p.server_ms["compute"]]
        lines.append(
            f"| {TITLES[p.scenario]} | {p.concurrency} | {fmt(p.images_per_s)} | {p.requests or 'n/a'} | "
            + " | ".join(f"{value:.0f}" for value in ms)
            + f" | {fmt((p.network or {}).get('average_batch'))} | {percent(p.foreign_cpu_share)} "
            + f"| `{p.csv}` |"
        )
    lines += [
        "",
        f"![perf_analyzer: throughput and latency against concurrency]({PLOT_NAME})",
        "",
        "The commands this run used (the ports were free ones; the input files are written by the run):",
        "",
        "```bash",
        *(_relative_command(c) for c in results["commands"].values()),
        "```",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section between its markers, or append it (``make bench`` rewrites the file
    and keeps an existing section, but a file from before this section has none)."""
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    text = path.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
    else:
        head, tail = text.rstrip("\n") + "\n\n", "\n"
    path.write_text(f"{head}{start}\n{section.strip()}\n{end}{tail}")


def kept_section(path: Path) -> str:
    """The section with its markers as ``path`` has it now ("" if none): for ``make bench``,
    which writes the rest of the file."""
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    text = path.read_text() if path.is_file() else ""
    if start not in text or end not in text:
        return ""
    return "\n" + start + text.split(start, 1)[1].split(end, 1)[0] + end + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, title in TITLES.items():
        draw_points(throughput, latency, [p for p in results["points"] if p.scenario == name], title)
    throughput.set(xlabel="concurrent requests", ylabel="images/s", title="Throughput", ylim=(0, None))
    latency.set(
        xlabel="concurrent requests",
        ylabel="ms per request",
        title="perf_analyzer latency (p50 solid, p95 dashed)",
        ylim=(0, None),
    )
    for axes in (throughput, latency):
        axes.set_xticks(sorted({p.concurrency for p in results["points"]}))
        axes.grid(alpha=0.3)
    throughput.legend(fontsize=7)
    latency.legend(fontsize=6, ncol=2)
    cores = results["machine"]["cpu_cores"]
    figure.suptitle(f"SSD300 on Triton, perf_analyzer 2.51, {cores} CPU cores, {results['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
