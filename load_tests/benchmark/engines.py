"""TorchScript (torch) against ONNX Runtime, in process and served, in one benchmark run.

In process, the two engines run the same weights on the same batches back to back, batch size by
batch size and alternating which goes first, so a neighbour's load hits both alike; the other
processes' CPU share over the comparison is reported with it. Served, the embedded server runs a
copy of the benchmarked repository whose build chose ENGINE=onnx, exported from the same
model.pt weights, under the same load as the TorchScript rows.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import warnings
from pathlib import Path

import onnxruntime
import torch

from load_tests.benchmark import cpu_share
from load_tests.benchmark.formatting import fmt, percent
from load_tests.benchmark.inprocess import timed
from ssd300_build.detector import fp32_network_of
from ssd300_build.export import trace_detector, write_model
from ssd300_build.model import SSD300
from ssd300_build.onnx_export import ONNX_FILE, export_onnx

log = logging.getLogger(__name__)
ENGINE_TITLES = {"torchscript": "TorchScript (torch)", "onnx": "ONNX Runtime"}


def onnx_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """Session options as the CPU runner (model_repository/ssd300/1/model.py) sets them."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_inprocess(
    network: SSD300, images: torch.Tensor, *, batch_sizes: tuple[int, ...], repeats: int, workdir: Path
) -> dict:
    """Images/s of model.pt (traced) and model.onnx (ONNX Runtime) per batch size, same threads."""
    threads = torch.get_num_threads()
    traced = trace_detector(network)
    path = export_onnx(network, workdir / ONNX_FILE, json.dumps({"weights": "benchmark"}))
    session = onnx_session(path, threads)
    engines = {
        "torchscript": lambda batch: traced(batch),
        "onnx": lambda batch: session.run(None, {"images": batch.numpy()}),
    }
    rows = []
    before = cpu_share.snapshot()
    with torch.inference_mode():
        for index, size in enumerate(batch_sizes):
            batch = images[:size].contiguous()
            order = list(engines) if index % 2 == 0 else list(engines)[::-1]
            seconds = {
                # Two untimed calls: TorchScript's profiling executor optimises the graph on them.
                # B023: the lambda is called at once, inside the loop.
                name: timed(lambda: engines[name](batch), repeats=repeats, warmup=2)  # noqa: B023
                for name in order
            }
            torch_boxes, torch_scores = traced(batch)
            onnx_boxes, onnx_scores = session.run(None, {"images": batch.numpy()})
            row = {
                "batch_size": size,
                **{f"{name}_images_per_s": size / statistics.median(s) for name, s in seconds.items()},
                "max_abs_diff_scores": float((torch_scores - torch.from_numpy(onnx_scores)).abs().max()),
                "max_abs_diff_boxes": float((torch_boxes - torch.from_numpy(onnx_boxes)).abs().max()),
            }
            row["onnx_vs_torchscript"] = row["onnx_images_per_s"] / row["torchscript_images_per_s"]
            log.info(
                "batch %d: torchscript %.2f img/s, onnx runtime %.2f img/s (%.2fx)",
                size,
                row["torchscript_images_per_s"],
                row["onnx_images_per_s"],
                row["onnx_vs_torchscript"],
            )
            rows.append(row)
    return {
        "threads": threads,
        "onnxruntime": onnxruntime.__version__,
        "rows": rows,
        "foreign_cpu_share": cpu_share.foreign_share(before, cpu_share.snapshot()),
    }


def onnx_repository(repository: Path, workdir: Path) -> Path:
    """A copy of ``repository`` built with ENGINE=onnx from its own model.pt's weights."""
    copy = workdir / "model_repository"
    shutil.copytree(repository, copy, ignore=shutil.ignore_patterns("__pycache__", ONNX_FILE))
    metadata = json.loads((copy / "ssd300" / "1" / "weights.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(copy / "ssd300" / "1" / "model.pt"), map_location="cpu")
    build = {k: v for k, v in metadata.items() if k not in ("engine", "precision", "torch_version")}
    write_model(fp32_network_of(scripted), copy, build, engine="onnx")
    return copy


def faster_engine(results: dict) -> str:
    """The engine with the higher in-process throughput at most batch sizes."""
    rows = results["inprocess"]["rows"]
    onnx_wins = sum(row["onnx_vs_torchscript"] > 1 for row in rows)
    return "onnx" if onnx_wins * 2 > len(rows) else "torchscript"


def markdown(results: dict, torchscript_points: list) -> list[str]:
    """The report's engine section; ``torchscript_points`` are the gRPC rows of the main run."""
    inprocess = results["inprocess"]
    lines = [
        "## Engines: TorchScript and ONNX Runtime",
        "",
        f"In process, same weights and batches, back to back ({inprocess['threads']} threads each; "
        f"ONNX Runtime {inprocess['onnxruntime']}; other processes used "
        f"{percent(inprocess['foreign_cpu_share'])} of the CPU meanwhile). Images/s:",
        "",
        "| batch | TorchScript (torch) | ONNX Runtime | ONNX Runtime / TorchScript "
        "| max abs Δ score | max abs Δ box |",
        "|---|---|---|---|---|---|",
    ]
    for row in inprocess["rows"]:
        lines.append(
            f"| {row['batch_size']} | {row['torchscript_images_per_s']:.2f} "
            f"| {row['onnx_images_per_s']:.2f} | {row['onnx_vs_torchscript']:.2f}× "
            f"| {row['max_abs_diff_scores']:.1e} | {row['max_abs_diff_boxes']:.1e} |"
        )
    lines += [
        "",
        "Served (embedded server, gRPC uint8 tensor, one image per request), images/s, p95 latency "
        "and other processes' CPU share meanwhile (perf_analyzer, as above):",
        "",
        "| engine | concurrency | images/s | p95 ms | average ssd300 batch "
        "| ssd300 compute ms/batch | other CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, points in (("torchscript", torchscript_points), ("onnx", results.get("triton", []))):
        for p in points:
            network = p.network or {}
            lines.append(
                f"| {ENGINE_TITLES[name]} | {p.concurrency} | {fmt(p.images_per_s)} "
                f"| {fmt((p.latency_ms or {}).get('p95'), 0)} | {fmt(network.get('average_batch'))} "
                f"| {fmt(network.get('compute_ms_per_execution'), 0)} | {percent(p.foreign_cpu_share)} |"
            )
    lines += ["", f"Faster here in process: **{ENGINE_TITLES[faster_engine(results)]}**.", ""]
    return lines


def readme_lines(results: dict, torchscript_points: list) -> list[str]:
    """The README's engine lines: in-process ratio per batch and served images/s per engine."""
    inprocess = results["inprocess"]
    ratios = ", ".join(
        f"batch {row['batch_size']}: {row['onnx_images_per_s']:.2f} vs "
        f"{row['torchscript_images_per_s']:.2f} img/s ({row['onnx_vs_torchscript']:.2f}×)"
        for row in inprocess["rows"]
    )
    served = {p.concurrency: p for p in results.get("triton", [])}
    pairs = ", ".join(
        f"c={p.concurrency}: {fmt(served[p.concurrency].images_per_s)} vs {fmt(p.images_per_s)}"
        for p in torchscript_points
        if p.concurrency in served
    )
    return [
        f"Engines (ONNX Runtime {inprocess['onnxruntime']} vs TorchScript, same weights): in process "
        f"{ratios}; served over gRPC, images/s {pairs}. "
        f"Faster here: **{ENGINE_TITLES[faster_engine(results)]}**.",
    ]
