"""The perf_analyzer section of load_tests/BENCHMARK.md, its plot, and results.json."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from load_tests.benchmark.report import percent
from load_tests.benchmark.triton_load import Point
from load_tests.perf.analyzer import SCENARIOS, PerfPoint

SECTION = "perf_analyzer"
PLOT_NAME = "perf_analyzer.png"
# The criterion: perf_analyzer and the project's generator agree within 15 % at the same point.
AGREEMENT = 0.15
# Below this many answers counted, a throughput is too coarse to compare at that tolerance.
FEW_ANSWERS = 30
TITLES = {s.name: s.title for s in SCENARIOS}
REPO_ROOT = Path(__file__).resolve().parents[2]


def fmt(value: float | None, digits: int = 2) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


def to_json(results: dict) -> str:
    def default(value):
        if hasattr(value, "__dataclass_fields__"):
            return asdict(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    return json.dumps(results, indent=2, default=default, allow_nan=True)


def from_json(text: str) -> dict:
    results = json.loads(text)
    results["points"] = [PerfPoint(**p) for p in results["points"]]
    results["cross_check"] = [Point(**p) for p in results["cross_check"]]
    return results


def pairs(results: dict) -> list[tuple[PerfPoint, Point]]:
    own = {(p.mode, p.concurrency): p for p in results["cross_check"]}
    return [
        (p, own[(p.scenario, p.concurrency)]) for p in results["points"] if (p.scenario, p.concurrency) in own
    ]


def agreement(perf: PerfPoint, own: Point) -> float | None:
    """perf_analyzer's throughput relative to the project's generator's (0.05 = 5 % higher)."""
    if perf.images_per_s is None or not own.images_per_s:
        return None
    return perf.images_per_s / own.images_per_s - 1


def _own_answers(own: Point) -> int:
    return round(own.images_per_s * own.window_s)


def _why(perf: PerfPoint, own: Point) -> str:
    """The figures that differ between the two runs of a point that disagrees."""
    if perf.error:
        return "perf_analyzer did not measure it (see the first table)"
    notes = []
    counts = (perf.requests or 0, _own_answers(own))
    if min(counts) < FEW_ANSWERS:
        notes.append(
            f"only {counts[0]} and {counts[1]} answers were counted: one answer more or less moves a "
            f"throughput by 1/{max(min(counts), 1)}"
        )
    batch_perf, batch_own = (perf.network or {}).get("average_batch"), own.network.get("average_batch")
    if batch_perf and batch_own and abs(batch_perf / batch_own - 1) > 0.1:
        notes.append(f"ssd300 ran batches of {batch_perf:.2f} vs {batch_own:.2f} on average")
    shares = [s for s in (perf.foreign_cpu_share, own.foreign_cpu_share) if s is not None]
    if shares and max(shares) - min(shares) > 0.05:
        perf_share, own_share = percent(perf.foreign_cpu_share), percent(own.foreign_cpu_share)
        notes.append(f"other processes took {perf_share} vs {own_share} of the CPU")
    return "; ".join(notes) or "neither batching nor other processes' CPU share differ"


def _span(checked: list[tuple[PerfPoint, Point]]) -> str:
    shortest, longest = min(own.window_s for _, own in checked), max(own.window_s for _, own in checked)
    return f"{shortest:.0f} s" if round(shortest) == round(longest) else f"{shortest:.0f}–{longest:.0f} s"


def _windows(settings: dict) -> str:
    if settings.get("requests_per_window"):
        return f"windows of {settings['requests_per_window']} requests (count_windows)"
    return f"{settings['window_ms'] / 1000:g} s windows"


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
        f"2.51.0 wheel. Closed loop, one image per request, gRPC; perf_analyzer measures in "
        f"{_windows(settings)} and reports the last three once throughput and "
        f"average latency vary by less than {settings['stability_percent']} % across them (at most "
        f"{settings['max_trials']} windows). Run time {results['duration_s'] / 60:.1f} min, of which "
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
    checked = pairs(results)
    shortest = settings["cross_check_window_s"]
    if checked:
        lines += [
            "",
            f"### Cross-check with the project's generator (agreement within {AGREEMENT:.0%})",
            "",
            "Right after each perf_analyzer point, the same server gets the same requests from "
            "`load_tests/benchmark/triton_load.py` (the generator `make bench` uses: one thread and "
            f"client per concurrent request, a 3 s warm-up, then a window of {_span(checked)}"
            + (
                f", longer than {shortest:g} s where perf_analyzer measured for longer"
                if any(own.window_s > shortest + 0.5 for _, own in checked)
                else ""
            )
            + "; images answered inside the window / window length). Pairs of figures are "
            "perf_analyzer / project generator.",
            "",
            "| path | concurrency | perf_analyzer images/s | project generator images/s | difference "
            "| answers counted | avg batch | other CPU | agree |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        disagreements = []
        for perf, own in checked:
            difference = agreement(perf, own)
            agrees = difference is not None and abs(difference) <= AGREEMENT
            if not agrees:
                disagreements.append(f"- {TITLES[perf.scenario]}, c={perf.concurrency}: {_why(perf, own)}.")
            batches = (
                f"{fmt((perf.network or {}).get('average_batch'))} / {fmt(own.network.get('average_batch'))}"
            )
            lines.append(
                f"| {TITLES[perf.scenario]} | {perf.concurrency} | {fmt(perf.images_per_s)} | "
                f"{own.images_per_s:.2f} | {'n/a' if difference is None else f'{difference:+.1%}'} | "
                f"{perf.requests or 'n/a'} / {_own_answers(own)} | {batches} | "
                f"{percent(perf.foreign_cpu_share)} / {percent(own.foreign_cpu_share)} | "
                f"{'yes' if agrees else '**no**'} |"
            )
        agreeing = len(checked) - len(disagreements)
        lines += ["", f"{agreeing} of {len(checked)} points agree within {AGREEMENT:.0%}."]
        if disagreements:
            lines += ["", "Where they do not, the two runs of the point differ in:", "", *disagreements]
    lines += [
        "",
        f"![perf_analyzer: throughput and latency against concurrency]({PLOT_NAME})",
        "",
        "The commands this run used (the gRPC port was a free one; the input files are written by the run):",
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
    own = {(p.mode, p.concurrency): p for p in results["cross_check"]}
    for name, title in TITLES.items():
        points = [p for p in results["points"] if p.scenario == name and not p.error]
        if not points:
            continue
        concurrency = [p.concurrency for p in points]
        line = throughput.plot(
            concurrency, [p.images_per_s for p in points], marker="o", label=f"{title} (perf_analyzer)"
        )[0]
        checked = [own[(name, c)] for c in concurrency if (name, c) in own]
        if checked:
            throughput.plot(
                [p.concurrency for p in checked],
                [p.images_per_s for p in checked],
                marker="x",
                linestyle="--",
                color=line.get_color(),
                label=f"{title} (project generator)",
            )
        latency.plot(concurrency, [p.latency_ms["p50"] for p in points], marker="o", color=line.get_color())
        latency.plot(
            concurrency,
            [p.latency_ms["p95"] for p in points],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=title,
        )
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
    latency.legend(fontsize=7)
    cores = results["machine"]["cpu_cores"]
    figure.suptitle(f"SSD300 on Triton, perf_analyzer 2.51, {cores} CPU cores, {results['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
