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
        points = [p for p in results["triton"] if p.scenario == mode and p.images_per_s is not None]
        if not points:
            continue
        concurrency = [p.concurrency for p in points]
        line = throughput.plot(concurrency, [p.images_per_s for p in points], marker="o", label=title)[0]
        latency.plot(
            concurrency,
            [p.latency_ms["p50"] for p in points],
            marker="o",
            color=line.get_color(),
            label=f"{title} p50",
        )
        latency.plot(
            concurrency,
            [p.latency_ms["p95"] for p in points],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{title} p95",
        )
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
