"""``make gpu-check``: the first checks and figures to take on a GPU, in one run of a few minutes.

Runs with torch, torchvision, numpy and Pillow only (``PYTHONPATH`` on client/, build/,
serving/ and the repository root), as on a lent GPU machine without this project's venv; with
no built ``model.pt`` it traces one from the build's random weights. Writes ``gpu_check.json``
and ``gpu_check.md`` into ``--out``:

1. parity, detections after the served selection on the sample photos, device against CPU:
   model.pt (traced with TF32 allowed, export.CUDNN_FLAGS) within what TF32 justifies (a
   multiple of the distance TF32 rounding, emulated on the CPU, puts between outputs); a graph
   traced here with TF32 disallowed within 1e-3 (strict FP32); the FP16 network within a
   multiple of what rounding its input to FP16 alone changes; the selection a GPU instance
   serves against the CPU one on the same inputs, exactly;
2. forward images/s per batch size of each of those graphs, each row naming the one it times
   (model.pt's TF32 is a constant of its convolutions: global flags do not turn it off);
3. the served selection in ms per call against torchvision's ``batched_nms`` doing the same;
4. the whole in-process pipeline (uint8 host batch → device → model.pt → selection → host);
5. model.onnx through ONNX Runtime's CUDA and TensorRT providers, when installed, each row
   labelled by the provider the session really got (``session.get_providers()``).

``--device cpu`` runs 2-5 on the CPU and reports the parity rows as not run (the test suite
keeps the script working that way); ``--device cuda`` without a usable GPU says why.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from load_tests.benchmark import gpu_models
from load_tests.benchmark.cuda_diagnosis import why_no_cuda
from load_tests.benchmark.onnx_providers import onnx_markdown, onnx_runtime
from ssd300_build.detector import SSD300Detector, fp32_network_of
from ssd300_serving.provenance import ENGINE_FILES

log = logging.getLogger("load_tests.benchmark.gpu_check")
STRICT_TOLERANCE = 1e-3  # FP32 on both sides: summation order alone, a few 1e-5 expected
# Allowed distance, as a multiple of the emulated rounding's own: a GPU rounds and sums in
# another order than the emulation (tests/test_fp16.py holds FP16 to the same 4x on the CPU).
ROUNDING_MARGIN = 4.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m load_tests.benchmark.gpu_check", description=__doc__)
    parser.add_argument("--repository", type=Path, default=gpu_models.REPO_ROOT / "model_repository")
    parser.add_argument("--out", type=Path, default=gpu_models.REPO_ROOT / "reports" / "gpu_check")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--postprocess-batches", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--pipeline-batch", type=int, default=64)
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "fp16"), default=["fp32", "fp16"])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each figure")
    return parser.parse_args(argv)


def median_seconds(call, device: torch.device, *, repeats: int, warmup: int) -> float:
    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        call()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def served_model(repository: Path) -> tuple[torch.jit.ScriptModule, str]:
    """model.pt of ``repository`` on the CPU, or one traced here as the build traces it."""
    path = repository / "ssd300" / "1" / ENGINE_FILES["torchscript"]
    if path.is_file():
        metadata_path = path.with_name("weights.json")
        metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
        weights, precision = metadata.get("weights", "unknown"), metadata.get("precision", "fp32")
        return torch.jit.load(
            str(path), map_location="cpu"
        ).eval(), f"{path} ({weights} weights, {precision})"
    log.info("no %s: tracing one from the build's random weights", path)
    network, _ = gpu_models.random_network()
    return gpu_models.trace(network, allow_tf32=True), "traced here from random weights (no model.pt built)"


def on_device(module: torch.jit.ScriptModule, device: torch.device) -> torch.jit.ScriptModule:
    """A copy of a traced module on ``device``, through torch.jit.save/load as model.pt travels."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer, map_location=device).eval()


def graphs(served, network, precisions) -> dict[str, tuple[torch.jit.ScriptModule, str | None]]:
    """The traced graphs to check and time, by a label that says what each one is, with the
    rounding their GPU convolutions add to FP32's: "tf32", "fp16" or None."""
    allowed, total = gpu_models.tf32_convolutions(served)
    half = any(p.dtype == torch.float16 for p in served.parameters())
    rounding = "fp16" if half else "tf32" if allowed else None
    result = {f"model.pt (as served; TF32 allowed in {allowed}/{total} convolutions)": (served, rounding)}
    if "fp32" in precisions:
        strict = gpu_models.trace(network, allow_tf32=False)
        allowed, total = gpu_models.tf32_convolutions(strict)
        result[f"FP32 trace, TF32 disallowed ({allowed}/{total} convolutions allow it)"] = (strict, None)
    if "fp16" in precisions:
        half_trace = gpu_models.trace(network, "fp16", allow_tf32=True)
        result["FP16 trace (the PRECISION=fp16 network)"] = (half_trace, "fp16")
    return result


def detection_rows(outputs, image: int) -> list[tuple[int, float, torch.Tensor]]:
    boxes, scores, labels, counts = (t.cpu() for t in outputs)
    return [
        (int(labels[image, i]), float(scores[image, i]), boxes[image, i])
        for i in range(int(counts[image, 0]))
    ]


def unmatched(expected, actual, tolerance: float) -> tuple[int, int]:
    """(rows of ``expected`` above the cut, those with no counterpart in ``actual``: same label,
    score and box within ``tolerance``). A row within ``tolerance`` of either list's lowest score
    may be below it in the other list, and cut from it; rows above that must be in both."""
    cut = max([0.0, *(min(s for _, s, _ in r) for r in (expected, actual) if r)]) + tolerance
    compared = [row for row in expected if row[1] > cut]
    missing = sum(
        not any(
            label == other_label
            and abs(score - other_score) <= tolerance
            and float((box - other_box).abs().max()) <= tolerance
            for other_label, other_score, other_box in actual
        )
        for label, score, box in compared
    )
    return len(compared), missing


def detection_parity(expected, actual, tolerance: float) -> dict:
    """Two selections' outputs compared image by image, both ways."""
    pairs = [(detection_rows(expected, i), detection_rows(actual, i)) for i in range(len(expected[3]))]
    counts = [unmatched(e, a, tolerance) for e, a in pairs] + [unmatched(a, e, tolerance) for e, a in pairs]
    missing = sum(m for _, m in counts)
    return {
        "tolerance": tolerance,
        "detections": sum(len(e) for e, _ in pairs),
        "compared": sum(c for c, _ in counts[: len(pairs)]),
        "unmatched": missing,
        "verdict": "equal" if missing == 0 else "DIFFER",
    }


def parity(graphs_, network, selection, settings, device) -> list[dict]:
    """Device against CPU for each graph, then the device's selection against the CPU's."""
    images = gpu_models.photos()
    serve = selection.selection_for(device)
    floors = {
        "tf32": gpu_models.rounding_floor(network, gpu_models.tf32_emulated(network), images),
        "fp16": gpu_models.rounding_floor(network, gpu_models.half_input_emulated(network), images),
    }
    with torch.inference_mode():
        cpu_outputs = SSD300Detector(network).eval()(images)  # FP32: TF32 is a GPU setting
        expected = selection.select_detections(*cpu_outputs, **settings)
        rows = []
        for label, (module, rounding) in graphs_.items():
            floor = floors.get(rounding)
            tolerance = (
                max(STRICT_TOLERANCE, ROUNDING_MARGIN * max(floor.values())) if floor else STRICT_TOLERANCE
            )
            actual = serve(*on_device(module, device)(images.to(device)), **settings)
            row = detection_parity(expected, actual, tolerance)
            rows.append({"check": f"{label} on {device} vs FP32 on CPU", **row, "floor": floor})
        device_selection = serve(*(t.to(device) for t in cpu_outputs), **settings)
    exact = all(torch.equal(a.cpu(), b) for a, b in zip(device_selection, expected))
    rows.append(
        {
            "check": f"served selection ({serve.__name__}) on {device} vs select_detections on CPU",
            "tolerance": 0.0,
            "detections": int(expected[3].sum()),
            "verdict": "equal" if exact else "DIFFER",
        }
    )
    return rows


def parity_not_run(graphs_) -> list[dict]:
    """The parity rows of a run on the CPU, saying why they did not run."""
    reason = "--device cpu" + ("" if torch.cuda.is_available() else f"; {why_no_cuda()}")
    checks = [f"{label} on CUDA vs FP32 on CPU" for label in graphs_] + ["served selection on CUDA vs CPU"]
    return [{"check": check, "verdict": "not run", "reason": reason} for check in checks]


def forward_throughput(graphs_, device, args) -> list[dict]:
    images = gpu_models.photos(max(args.batch_sizes)).to(device)
    results = []
    for label, (module, _) in graphs_.items():
        module = on_device(module, device)
        for size in args.batch_sizes:
            with torch.inference_mode():
                seconds = median_seconds(
                    lambda: module(images[:size]),  # noqa: B023 (called at once)
                    device,
                    repeats=args.repeats,
                    warmup=args.warmup,
                )
            results.append({"module": label, "batch_size": size, "images_per_s": size / seconds})
            log.info("forward %s, batch %d: %.1f img/s", label, size, size / seconds)
    return results


def torchvision_selection(
    boxes, scores, *, score_threshold, candidates_per_class, iou_threshold, max_detections
):
    """The same selection with torchvision's batched_nms, one image at a time (the usual way).
    Boxes may be shared by the classes ([A, 4] per image) or per class ([C, A, 4])."""
    from torchvision.ops import batched_nms

    results = []
    classes = scores.shape[1]
    for image_boxes, image_scores in zip(boxes, scores):
        top_scores, top_anchors = image_scores.topk(min(candidates_per_class, image_scores.shape[1]), dim=1)
        class_boxes = image_boxes.expand(classes, *image_boxes.shape[-2:])
        top_boxes = class_boxes.gather(1, top_anchors[..., None].expand(-1, -1, 4))
        labels = torch.arange(1, classes + 1, device=scores.device)[:, None].expand_as(top_anchors)
        keep = top_scores > score_threshold
        kept = batched_nms(top_boxes[keep], top_scores[keep], labels[keep], iou_threshold)[:max_detections]
        results.append((top_boxes[keep][kept], top_scores[keep][kept], labels[keep][kept]))
    return results


def postprocess_timing(served, selection, settings, device, args) -> list[dict]:
    functions = {
        "select_detections": selection.select_detections,
        "select_detections_gpu": selection.select_detections_gpu,
        "torchvision batched_nms": torchvision_selection,
    }
    results = []
    for size in args.postprocess_batches:
        with torch.inference_mode():
            outputs = served(gpu_models.photos(size).to(device))
            for name, function in functions.items():
                seconds = median_seconds(
                    lambda: function(*outputs, **settings),  # noqa: B023 (called at once)
                    device,
                    repeats=args.repeats,
                    warmup=args.warmup,
                )
                results.append({"function": name, "batch_size": size, "ms_per_call": 1000 * seconds})
                log.info("postprocess %s, batch %d: %.2f ms", name, size, 1000 * seconds)
    return results


def pipeline_throughput(served, selection, settings, device, args) -> dict:
    images = gpu_models.photos(args.pipeline_batch)
    images = images.pin_memory() if device.type == "cuda" else images
    serve = selection.selection_for(device)

    def pipeline():
        outputs = served(images.to(device, non_blocking=True))
        return [t.cpu() for t in serve(*outputs, **settings)]

    with torch.inference_mode():
        seconds = median_seconds(pipeline, device, repeats=args.repeats, warmup=args.warmup)
    return {"batch_size": args.pipeline_batch, "images_per_s": args.pipeline_batch / seconds}


def parity_cell(row: dict) -> str:
    if row["verdict"] == "not run":
        return f"not run ({row['reason']})"
    floor = row.get("floor")
    within = f"; rounding floor {floor['boxes']:.1e} boxes, {floor['scores']:.1e} scores" if floor else ""
    missing = f", {row['compared']} above the cut, {row['unmatched']} unmatched" if "unmatched" in row else ""
    tolerance = f"tolerance {row['tolerance']:.1e}{within}"
    return f"{row['verdict']} ({row['detections']} detections{missing}; {tolerance})"


def markdown(results: dict) -> str:
    lines = [
        f"## GPU check — {results['device_name']} ({results['date']})",
        "",
        f"torch {results['torch']} (CUDA {results['torch_cuda']}), model.pt: {results['model']}.",
        "",
        "| check | setting | batch | result |",
        "|---|---|---:|---:|",
    ]
    photos = len(gpu_models.sample_photo_paths())
    for row in results["parity"]:
        lines.append(f"| parity | {row['check']} | {photos} | {parity_cell(row)} |")
    for row in results["forward"]:
        lines.append(f"| forward img/s | {row['module']} | {row['batch_size']} | {row['images_per_s']:.1f} |")
    for row in results["postprocess"]:
        lines.append(
            f"| postprocess ms/call | {row['function']} | {row['batch_size']} | {row['ms_per_call']:.2f} |"
        )
    pipe = results["pipeline"]
    lines.append(
        f"| pipeline img/s | uint8 host batch → model.pt → selection → host | {pipe['batch_size']} | "
        f"{pipe['images_per_s']:.1f} |"
    )
    lines += onnx_markdown(results["onnx"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # torch.jit is what Triton's PyTorch backend runs: its deprecation notices do not apply here.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: no usable CUDA device: {why_no_cuda()}. (--device cpu dry-runs)", file=sys.stderr)
        return 2
    selection = gpu_models.selection_module()
    settings = gpu_models.served_settings(selection)
    served, description = served_model(args.repository)
    network = fp32_network_of(served)
    graphs_ = graphs(served, network, args.precisions)
    served_on_device = on_device(served, device)
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "CPU",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "model": description,
        "parity": parity(graphs_, network, selection, settings, device)
        if device.type == "cuda"
        else parity_not_run(graphs_),
        "forward": forward_throughput(graphs_, device, args),
        "postprocess": postprocess_timing(served_on_device, selection, settings, device, args),
        "pipeline": pipeline_throughput(served_on_device, selection, settings, device, args),
        "onnx": onnx_runtime(args.repository, device, args),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))
    return 1 if any(row["verdict"] == "DIFFER" for row in results["parity"]) else 0


if __name__ == "__main__":
    sys.exit(main())
