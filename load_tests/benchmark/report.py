"""Benchmark results as JSON and a Markdown report: the targets and, where one is missed, this
run's figures of where the time went (the plot is plot.py). Every sentence of the report is
built from measured numbers; none is fixed prose about a run."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from load_tests.benchmark import cpu_sweep, dispatch_count, engines
from load_tests.benchmark.formatting import fmt, percent
from load_tests.perf.analyzer import TITLES, WINDOW_ROUNDS, PerfPoint
from ssd300_common.contract import MAX_DETECTIONS

# Targets for 2 CPU cores, from the issue (benchmark figures, not tests).
TARGET_E2E_VS_FORWARD = 0.90  # Triton at concurrency 4 / in-process forward-only
TARGET_E2E_VS_REFERENCE = 1.6  # Triton at concurrency 4 / in-process forward + reference decode
TARGET_AVERAGE_BATCH = 4.0  # ssd300's average executed batch at concurrency 8
TARGET_POSTPROCESS_SPEEDUP = 50.0  # select_detections vs the per-class reference decode
# A throughput below this fraction of a path's best, at its highest concurrency, gets a note.
SCALING_DROP = 0.9
# Other processes' CPU share worth mentioning next to a missed target.
NOTABLE_FOREIGN_CPU = 0.05
IMAGE_BYTES = 300 * 300 * 3  # one uint8 input image
MODE_TITLES = TITLES  # the report's name for perf_analyzer's scenario titles


def machine() -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        memory_kb = 0
    return {
        "cpu_model": cpu_model,
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "tritonclient": metadata.version("tritonclient"),
    }


def from_json(text: str) -> dict:
    """Results as written by to_json, back in the shapes markdown() and plot() take."""
    results = json.loads(text)
    results["triton"] = [PerfPoint(**point) for point in results["triton"]]
    for entry in results.get("cpu_sweep", {}).get("entries", []):
        entry["points"] = [PerfPoint(**point) for point in entry["points"]]
        entry["passes"] = [[PerfPoint(**point) for point in run] for run in entry.get("passes", [])]
    if "engines" in results:
        results["engines"]["triton"] = [PerfPoint(**point) for point in results["engines"].get("triton", [])]
    results["inprocess"]["forward"] = {
        int(size): figures for size, figures in results["inprocess"]["forward"].items()
    }
    if "dispatch" in results["inprocess"]:
        results["inprocess"]["dispatch"] = {
            name: {int(size): figures for size, figures in by_size.items()}
            for name, by_size in results["inprocess"]["dispatch"].items()
        }
    return results


def _point(results: dict, mode: str, concurrency: int):
    """The point of ``mode`` at ``concurrency``, if it was measured (perf_analyzer gave figures)."""
    return next(
        (
            p
            for p in results["triton"]
            if p.scenario == mode and p.concurrency == concurrency and p.images_per_s is not None
        ),
        None,
    )


Row = tuple[str, str, str, bool, str]  # (target, required, measured, met, where the time went)


def _ratio_row(name: str, required: float, digits: int, served: float, base: float, why: str) -> Row:
    """A "Triton / in-process" throughput target."""
    return (
        name,
        f"≥ {required:.{digits}f}×",
        f"{served / base:.2f}× ({served:.2f} vs {base:.2f} img/s)",
        served / base >= required,
        why,
    )


def target_rows(results: dict) -> list[Row]:
    """The issue's four targets; the last field holds the figures of this run that explain a
    miss (only numbers measured here and comparisons computed from them)."""
    forward = results["inprocess"]["forward"]
    batch = results["inprocess"]["reference_pipeline"]["batch_size"]
    forward_full = forward[batch]["images_per_s"]
    reference = results["inprocess"]["reference_pipeline"]["images_per_s"]
    post = results["inprocess"]["postprocess"]
    at4, at8 = _point(results, "grpc", 4), _point(results, "grpc", 8)
    rows = []
    if at4:
        served = at4.images_per_s
        why = _serving_gap(results, at4, forward)
        # On a CPU, batching can make each image slower; hold the server to the fastest batch too.
        best_batch = max(forward, key=lambda size: forward[size]["images_per_s"])
        best = forward[best_batch]["images_per_s"]
        rows += [
            _ratio_row(
                f"Triton gRPC c=4 vs in-process forward-only (batch {batch})",
                TARGET_E2E_VS_FORWARD,
                2,
                served,
                forward_full,
                why,
            ),
            _ratio_row(
                f"Triton gRPC c=4 vs the fastest in-process forward-only (batch {best_batch})",
                TARGET_E2E_VS_FORWARD,
                2,
                served,
                best,
                why,
            ),
            _ratio_row(
                f"Triton gRPC c=4 vs in-process reference pipeline (batch {batch})",
                TARGET_E2E_VS_REFERENCE,
                1,
                served,
                reference,
                why,
            ),
        ]
    if at8:
        average = at8.network["average_batch"]
        rows.append(
            (
                "average executed batch of ssd300 at c=8 (gRPC)",
                f"≥ {TARGET_AVERAGE_BATCH:.0f}",
                f"{average:.2f}",
                average >= TARGET_AVERAGE_BATCH,
                _batching_gap(results, at8),
            )
        )
    speedup = post["speedup"]
    rows += cpu_sweep.target_rows(results)
    rows += _dispatch_rows(results)
    rows.append(
        (
            f"postprocess speedup vs per-class reference (batch {post['batch_size']})",
            f"≥ {TARGET_POSTPROCESS_SPEEDUP:.0f}×",
            f"{speedup:.1f}×",
            speedup >= TARGET_POSTPROCESS_SPEEDUP,
            _postprocess_gap(post),
        )
    )
    return rows


def _per_image_ms(stats: dict) -> float:
    return stats["compute_ms_per_execution"] / max(stats["average_batch"], 1.0)


def _change(before: float, after: float) -> str:
    """ "+35%" / "−12%" / "unchanged": how ``after`` compares with ``before``."""
    if before <= 0:
        return "n/a"
    change = after / before - 1
    return "unchanged" if abs(change) < 0.005 else f"{change:+.0%}".replace("-", "−")


def _dispatch_rows(results: dict) -> list[tuple[str, str, str, bool, str]]:
    """The GPU postprocess's operations per call at batch 64 (counted on CPU), if measured."""
    dispatch = results["inprocess"].get("dispatch")
    met = None if dispatch is None else dispatch_count.target_met(dispatch)
    if met is None:
        return []
    gpu = dispatch["select_detections_gpu"][dispatch_count.TARGET_BATCH]
    sweep = dispatch["select_detections"].get(dispatch_count.TARGET_BATCH)
    why = (
        f"select_detections_gpu iterates until its NMS converges; this run needed "
        f"{gpu['syncs']} convergence check(s) of 8 steps each"
    )
    return [
        (
            f"GPU postprocess: aten ops per call at batch {dispatch_count.TARGET_BATCH} (views included)",
            f"≤ {dispatch_count.TARGET_OPS_AT_64:,}",
            f"{dispatch_count.total(gpu):,}"
            + ("" if sweep is None else f" (CPU sweep: {dispatch_count.total(sweep):,})"),
            met,
            why,
        )
    ]


def _serving_gap(results: dict, point, forward: dict) -> str:
    """Where the time went at one point, from Triton's own statistics over the window, next to
    the same mode at concurrency 1 (requests never overlap there)."""
    network, post = point.network, point.postprocess
    average = network["average_batch"] or 1.0
    nearest = min(forward, key=lambda size: abs(size - average))
    text = (
        f"at c={point.concurrency} ssd300 executed batches of {average:.1f} images in "
        f"{network['compute_ms_per_execution']:.0f} ms ({_per_image_ms(network):.0f} ms per image; "
        f"in-process batch {nearest}: {1000 / forward[nearest]['images_per_s']:.0f} ms per image) and "
        f"ssd300_postprocess took {post['compute_ms_per_execution']:.0f} ms per execution of "
        f"{post['average_batch']:.1f} images"
    )
    alone = _point(results, point.scenario, 1)
    if alone and alone is not point:
        text += (
            f" (at c=1: {_per_image_ms(alone.network):.0f} and {_per_image_ms(alone.postprocess):.0f} ms "
            f"per image; per-image compute at c={point.concurrency} vs c=1: ssd300 "
            f"{_change(_per_image_ms(alone.network), _per_image_ms(network))}, ssd300_postprocess "
            f"{_change(_per_image_ms(alone.postprocess), _per_image_ms(post))})"
        )
    busy_s = network["executions"] * network["compute_ms_per_execution"] / 1000
    text += (
        f"; over perf_analyzer's {point.duration_s:.0f} s at this point ssd300 computed for "
        f"{busy_s:.1f} s ({busy_s / point.duration_s:.0%} of it); requests queued "
        f"{network['queue_ms_per_request']:.0f} ms on average before ssd300"
    )
    if (point.foreign_cpu_share or 0) >= NOTABLE_FOREIGN_CPU:
        text += f"; other processes took {point.foreign_cpu_share:.0%} of the CPU meanwhile"
    return text


def _batching_gap(results: dict, point) -> str:
    """The batcher's figures at one point: executions, queueing, and how the longest wait the
    server allows for a batch to fill compares with one execution."""
    network = point.network
    text = (
        f"at c={point.concurrency} ssd300 ran {network['executions']} executions for "
        f"{network['inferences']} images; requests waited {network['queue_ms_per_request']:.0f} ms "
        f"in its queue on average and one execution computed for "
        f"{network['compute_ms_per_execution']:.0f} ms"
    )
    delay_ms = results["server"].get("max_queue_delay_ms")
    if delay_ms is not None and network["compute_ms_per_execution"] > 0:
        share = delay_ms / network["compute_ms_per_execution"]
        text += (
            f"; the batcher waits at most {delay_ms:g} ms for a batch to fill "
            f"(max_queue_delay), {share:.1%} of one execution"
        )
    instances = results["server"].get("instances")
    if instances is not None:
        text += f"; {instances} instance(s) of ssd300"
    return text


def _postprocess_gap(post: dict) -> str:
    nms = "" if post.get("nms_share") is None else f"; {post['nms_share']:.0%} of it is the greedy NMS step"
    return (
        f"select_detections takes {post['select_ms_per_image']:.2f} ms per image at batch "
        f"{post['batch_size']} against {post['reference_ms_per_image']:.0f} ms for the reference{nms}; "
        f"up to {post['options']['candidates_per_class']} candidates per class, "
        f"{_span(post['detections_per_image'])} detections per image"
    )


def scaling_notes(results: dict) -> list[str]:
    """A line per path whose throughput falls at its highest concurrency, with the statistics
    of the same points: both models' compute per image, and how it changed."""
    notes = []
    for mode, title in MODE_TITLES.items():
        points = sorted(
            (p for p in results["triton"] if p.scenario == mode and p.images_per_s is not None),
            key=lambda p: p.concurrency,
        )
        if len(points) < 2:
            continue
        best, last = max(points, key=lambda p: p.images_per_s), points[-1]
        if last is best or last.images_per_s >= SCALING_DROP * best.images_per_s:
            continue
        first = points[0]
        levels = f"c={first.concurrency}/{best.concurrency}/{last.concurrency}"

        def trend(model: str, first=first, best=best, last=last) -> str:
            steps = [_per_image_ms(getattr(p, model)) for p in (first, best, last)]
            return (
                " → ".join(f"{step:.0f}" for step in steps)
                + f" ms ({_change(steps[0], steps[-1])} from c={first.concurrency} to c={last.concurrency})"
            )

        notes.append(
            f"{title}: {best.images_per_s:.2f} img/s at c={best.concurrency} but "
            f"{last.images_per_s:.2f} at c={last.concurrency} (p95 {last.latency_ms['p95']:.0f} ms). "
            f"Compute per image at {levels}: ssd300 {trend('network')}, "
            f"ssd300_postprocess {trend('postprocess')}."
        )
    return notes


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}–{high}"


def load_description(settings: dict) -> str:
    """How perf_analyzer measured each point, from the run's settings."""
    window = (
        f"windows of {settings['requests_per_window']} requests ({WINDOW_ROUNDS} × the concurrency "
        "where that is more)"
        if settings.get("requests_per_window")
        else f"{settings['window_ms'] / 1000:g} s windows"
    )
    return (
        f"perf_analyzer 2.51 (closed loop, one image per request), {window}, each point reported "
        f"once three consecutive windows agree within {settings['stability_percent']}% "
        f"(at most {settings['max_trials']} windows)"
    )


def markdown(results: dict) -> str:
    info, server = results["machine"], results["server"]
    post, forward = results["inprocess"]["postprocess"], results["inprocess"]["forward"]
    pipeline = results["inprocess"]["reference_pipeline"]
    lines = [
        "# SSD300 on Triton: benchmark",
        "",
        f"Written by `make bench` (`python -m load_tests.benchmark`) on {results['date']}. One run on "
        "one machine; every figure below comes from that run. CPU timings on a shared machine are "
        "noisy: read differences under ~10 % as noise.",
        "",
        f"- Machine: {info['cpu_model']}, {info['cpu_cores']} cores, {info['memory_gib']} GiB RAM; "
        f"{info['os']}",
        f"- Software: Python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads "
        f"in-process), tritonserver {server['version']} (embedded, CPU configs), tritonclient "
        f"{info['tritonclient']}",
        f"- Weights: served model.pt = {server['weights']}; in-process = {results['inprocess']['weights']}",
        f"- ssd300 CPU config: {server['network_config']}",
        f"- Load: {load_description(results['settings'])}",
        f"- Run: {results['duration_s'] / 60:.1f} min, of which {results['waited_for_quiet_s']:.0f} s "
        "waiting for other processes to leave the CPU below "
        f"{results['settings']['quiet_below']:.0%} before a measurement",
        "",
        "## Targets",
        "",
        "| target | required | measured | met |",
        "|---|---|---|---|",
    ]
    rows = target_rows(results)
    lines += [
        f"| {name} | {required} | {measured} | {'yes' if met else '**no**'} |"
        for name, required, measured, met, _ in rows
    ]
    missed = [(name, why) for name, _, _, met, why in rows if not met]
    if missed:
        lines += ["", "Missed targets: where the time went (Triton's statistics from this run):", ""]
        lines += [f"- {name}: {why}." for name, why in missed]

    lines += [
        "",
        f"## Postprocess (batch {post['batch_size']}, {_span(post['detections_per_image'])} detections "
        "per image)",
        "",
        "| implementation | ms per image | speedup |",
        "|---|---|---|",
        "| reference decode (per image, per class, Python NMS loop) | "
        f"{post['reference_ms_per_image']:.1f} | 1× |",
        "| `select_detections` (as served: boxes and softmax already from the graph) | "
        f"{post['select_ms_per_image']:.2f} | {post['speedup']:.1f}× |",
        "| box decode + softmax + `select_detections` | "
        f"{post['decode_and_select_ms_per_image']:.2f} | {post['speedup_with_decode']:.1f}× |",
        "",
        (
            ""
            if post.get("nms_share") is None
            else f"The greedy NMS step is {post['nms_share']:.0%} of `select_detections`' time. "
        )
        + "Identical detections (as sets; scores within 1e-5): "
        + ("**yes**, every image." if post["identical"] else "**NO**: " + "; ".join(post["mismatches"])),
        "",
        *_dispatch_section(results),
        "## In-process (eager torch, no server)",
        "",
        "| pipeline | batch | images/s |",
        "|---|---|---|",
    ]
    lines += [
        "| forward only (SSD300Detector: normalise, network, box decode, softmax) | "
        f"{size} | {r['images_per_s']:.2f} |"
        for size, r in forward.items()
    ]
    lines += [
        f"| forward + per-class reference decode | {pipeline['batch_size']} | "
        f"{pipeline['images_per_s']:.2f} |",
        "",
        f"Other processes took {percent(results['inprocess'].get('foreign_cpu_share'))} of the "
        "machine's CPU during the in-process measurements.",
        "",
        "## Triton end to end",
        "",
        "Throughput and latency (per request, client side) are perf_analyzer's, over its stable "
        "windows; requests = those windows' count; batch = Δinference_count / Δexecution_count of "
        "`ssd300` and ms/exec = compute time per execution, from Triton's statistics over the whole "
        "perf_analyzer run of the point; other CPU = share of the machine's CPU taken by processes "
        "outside the benchmark and its server meanwhile. perf_analyzer's CSV and command line of "
        "each point are in `reports/bench/`.",
        "",
        "| path | concurrency | images/s | p50 ms | p95 ms | requests | avg batch | ssd300 ms/exec | "
        "postprocess ms/exec | errors | other CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["triton"]:
        latency, network, post = p.latency_ms or {}, p.network or {}, p.postprocess or {}
        lines.append(
            f"| {MODE_TITLES[p.scenario]} | {p.concurrency} | {fmt(p.images_per_s)} | "
            f"{fmt(latency.get('p50'), 0)} | {fmt(latency.get('p95'), 0)} | {p.requests or 'n/a'} | "
            f"{fmt(network.get('average_batch'))} | {fmt(network.get('compute_ms_per_execution'), 0)} | "
            f"{fmt(post.get('compute_ms_per_execution'), 0)} | {p.error or 'none'} | "
            f"{percent(p.foreign_cpu_share)} |"
        )
    notes = scaling_notes(results)
    if notes:
        lines += ["", "Where throughput falls with concurrency (Triton's statistics of the same points):", ""]
        lines += [f"- {note}" for note in notes]
    lines += ["", *cpu_sweep.markdown(results)]
    if "engines" in results:
        grpc_points = [p for p in results["triton"] if p.scenario == "grpc"]
        lines += ["", *engines.markdown(results["engines"], grpc_points)]
    lines += [
        "",
        "## Bytes per request and response (one image)",
        "",
        "Tensor bytes are the tensors' contents; message bytes were measured on the real messages: "
        "the serialized gRPC protobuf, or the HTTP body (JSON header + binary data). Transport framing "
        "(HTTP headers, HTTP/2 frames) is not included.",
        "",
        "| path | request tensors | request message | response tensors | response message |",
        "|---|---|---|---|---|",
    ]
    for mode, sizes in results["bytes"].items():
        lines.append(
            f"| {MODE_TITLES[mode]} | {sizes['request_tensor_bytes']:,} | "
            f"{sizes['request_message_bytes']:,} | {sizes['response_tensor_bytes']:,} | "
            f"{sizes['response_message_bytes']:,} |"
        )
    lines += [
        "",
        f"With shared memory the {IMAGE_BYTES:,} input bytes are read by the server from the "
        "registered region, not sent.",
        "",
    ]
    lines += ["Plot: `reports/bench/benchmark.png` (not committed).", ""]
    return "\n".join(lines)


def _dispatch_section(results: dict) -> list[str]:
    """Operations one postprocess call dispatches (``python -m load_tests.benchmark.dispatch_count``)."""
    dispatch = results["inprocess"].get("dispatch")
    if dispatch is None:
        return []
    return [
        "## Postprocess operations per call",
        "",
        "aten operations one call dispatches, counted on CPU tensors with a `TorchDispatchMode` on the "
        "calibrated network's outputs for distinct images (the sample photos turned, mirrored and zoomed). "
        "On a GPU each non-view operation is a kernel launch and each sync a stall. `select_detections` "
        "serves CPU instances, `select_detections_gpu` GPU instances; both give identical detections. "
        "The CPU time of `select_detections_gpu` is not what it costs on a GPU: its dense IoU matrices "
        "suit a GPU, not 2 CPU cores.",
        "",
        *dispatch_count.table(dispatch),
        "",
    ]


def readme_summary(results: dict) -> str:
    """The README's benchmark block: where and when, the targets, and end-to-end throughput."""
    info, server = results["machine"], results["server"]
    lines = [
        f"Measured by `make bench` on {results['date']}: {info['cpu_model']}, {info['cpu_cores']} cores, "
        f"no GPU; tritonserver {server['version']} (embedded, CPU configs), torch {info['torch']}, "
        f"{server['weights']} weights (the forward pass costs the same with any weights; the "
        "postprocess grows with the number of candidates: this run's images gave "
        f"{_span(results['inprocess']['postprocess']['detections_per_image'])} detections each, "
        f"of at most {MAX_DETECTIONS}). Full report: [load_tests/BENCHMARK.md](load_tests/BENCHMARK.md).",
        "",
        "| target | required | measured | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {required} | {measured} | {'yes' if met else '**no**'} |"
        for name, required, measured, met, _ in target_rows(results)
    ]
    concurrencies = sorted({p.concurrency for p in results["triton"]})
    lines += [
        "",
        "Triton end to end, images/s (p95 latency), one image per request:",
        "",
        "| path | " + " | ".join(f"concurrency {c}" for c in concurrencies) + " |",
        "|---|" + "---|" * len(concurrencies),
    ]
    for mode in dict.fromkeys(p.scenario for p in results["triton"]):
        cells = {
            p.concurrency: f"{fmt(p.images_per_s)} ({fmt((p.latency_ms or {}).get('p95'), 0)} ms)"
            for p in results["triton"]
            if p.scenario == mode
        }
        row = " | ".join(cells.get(c, "") for c in concurrencies)
        lines.append(f"| {MODE_TITLES[mode]} | {row} |")
    if "engines" in results:
        lines += [
            "",
            *engines.readme_lines(results["engines"], [p for p in results["triton"] if p.scenario == "grpc"]),
        ]
    return "\n".join(lines) + "\n"
