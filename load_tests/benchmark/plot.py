"""PNG plot of throughput and latency against concurrency, one line per path."""

from __future__ import annotations

from pathlib import Path

from load_tests.benchmark.report import MODE_TITLES


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mode, title in MODE_TITLES.items():
        draw_points(throughput, latency, [p for p in results["triton"] if p.scenario == mode], title)
    pipeline = results["inprocess"]["reference_pipeline"]
    forward = results["inprocess"]["forward"][pipeline["batch_size"]]
    throughput.axhline(
        forward["images_per_s"],
        color="black",
        linestyle=":",
        label=f"in-process forward only, batch {pipeline['batch_size']}",
    )
    throughput.axhline(
        pipeline["images_per_s"],
        color="grey",
        linestyle="-.",
        label=f"in-process + reference decode, batch {pipeline['batch_size']}",
    )
    throughput.set(xlabel="concurrent clients", ylabel="images/s", title="Throughput", ylim=(0, None))
    latency.set(
        xlabel="concurrent clients",
        ylabel="ms per request",
        title="Latency (p50 solid, p95 dashed)",
        ylim=(0, None),
    )
    for axes in (throughput, latency):
        axes.set_xticks(sorted({p.concurrency for p in results["triton"]}))
        axes.grid(alpha=0.3)
    throughput.legend(fontsize=7)
    latency.legend(fontsize=6, ncol=2)
    figure.suptitle(f"SSD300 on Triton, {results['machine']['cpu_cores']} CPU cores, {results['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def draw_points(throughput, latency, points: list, title: str) -> None:
    """One path's line on each axes: images/s, and p50 (solid) and p95 (dashed) latency."""
    points = [p for p in points if p.images_per_s is not None]  # a point perf_analyzer measured
    if not points:
        return
    concurrency = [p.concurrency for p in points]
    line = throughput.plot(concurrency, [p.images_per_s for p in points], marker="o", label=title)[0]
    for percentile, marker, style in (("p50", "o", "-"), ("p95", "x", "--")):
        latency.plot(
            concurrency,
            [p.latency_ms[percentile] for p in points],
            marker=marker,
            linestyle=style,
            color=line.get_color(),
            label=f"{title} {percentile}",
        )
