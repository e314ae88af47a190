"""``make gpu-check``: the first checks and figures to take on a GPU (docs/engines.md), in minutes.

Needs torch (2.5 to 2.14), torchvision, numpy and Pillow, with ``PYTHONPATH`` on common/, build/,
serving/ and the repository root, as on a lent GPU machine; with no built ``model.pt`` it traces
one from the build's random weights. Into ``--out``: ``gpu_check.json`` and ``.md`` with (1) the
parity of model.pt (TF32), a TF32-disallowed trace and the FP16 network on CUDA with FP32 on the
CPU, and of the GPU instance's selection with the CPU's; (2) forward images/s of each graph;
(3) both selection functions in ms per call; and ``outputs.npz`` (:func:`served_outputs`).
``--device cpu`` times on the CPU and reports the parity rows as not run.
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

import numpy as np
import torch

from load_tests.benchmark import gpu_models
from load_tests.benchmark.cuda_diagnosis import why_no_cuda
from ssd300_build.detector import SSD300Detector, fp32_network_of
from ssd300_common.contract import ENGINE_FILES, NETWORK_MODEL
from ssd300_serving.served_code import load_selection

log = logging.getLogger(__name__)
STRICT_TOLERANCE = 1e-3  # FP32 on both sides: summation order alone, a few 1e-5 expected
# Allowed distance, as a multiple of the emulated rounding's own: a GPU rounds and sums in
# another order than the emulation (tests/test_fp16.py holds FP16 to the same 4x on the CPU).
ROUNDING_MARGIN = 4.0
SECTIONS = {"parity": "parity", "forward": "forward img/s", "postprocess": "selection ms/call"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m load_tests.benchmark.gpu_check", description=__doc__)
    parser.add_argument("--repository", type=Path, default=gpu_models.REPO_ROOT / "model_repository")
    parser.add_argument("--out", type=Path, default=gpu_models.REPO_ROOT / "reports" / "gpu_check")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "fp16"), default=["fp32", "fp16"])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each figure")
    return parser.parse_args(argv)


def served_model(repository: Path) -> tuple[torch.jit.ScriptModule, str]:
    """model.pt of ``repository`` on the CPU, or one traced here as the build traces it."""
    path = repository / NETWORK_MODEL / "1" / ENGINE_FILES["torchscript"]
    if path.is_file():
        return torch.jit.load(str(path), map_location="cpu").eval(), str(path)
    log.info("no %s: tracing one from the build's random weights", path)
    served = gpu_models.trace(gpu_models.random_network()[0], allow_tf32=True)
    return served, "traced here from random weights (no model.pt built)"


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


def detection_parity(expected, actual, tolerance: float) -> dict:
    """Two selections' outputs (boxes, scores, labels, counts) compared image by image, both ways:
    each detection above the cut needs one in the other list with the same label, and score and
    box within ``tolerance``. A detection within ``tolerance`` of either list's lowest score may
    fall below it in the other list, and be cut: the cut is that lowest score + ``tolerance``."""
    compared = missing = 0
    for image in range(len(expected[3])):
        rows = [tuple(t[image, : int(out[3][image, 0])].cpu() for t in out[:3]) for out in (expected, actual)]
        cut = max([0.0, *(float(scores.min()) for _, scores, _ in rows if len(scores))]) + tolerance
        for (boxes, scores, labels), (other_boxes, other_scores, other_labels) in (rows, rows[::-1]):
            close = (
                (labels[:, None] == other_labels)
                & ((scores[:, None] - other_scores).abs() <= tolerance)
                & ((boxes[:, None] - other_boxes).abs().amax(dim=-1) <= tolerance)
            )
            missing += int(((scores > cut) & ~close.any(dim=1)).sum())
        compared += int((rows[0][1] > cut).sum())
    detections = int(expected[3].sum())
    return {
        "verdict": "equal" if missing == 0 else "DIFFER",
        "unmatched": missing,
        "compared": compared,
        "detail": f"{compared} of {detections} compared, {missing} unmatched; tolerance {tolerance:.1e}",
    }


def parity(graphs_, network, selection, settings, device) -> list[dict]:
    """Device against CPU for each graph, then the device's selection against the CPU's."""
    images, serve = gpu_models.photos(), selection.selection_for(torch.device("cuda"))
    checks = [f"{label} on CUDA vs FP32 on CPU" for label in graphs_]
    checks.append(f"served selection on CUDA ({serve.__name__}) vs select_detections on CPU")
    if device.type != "cuda":
        reason = "--device cpu" + ("" if torch.cuda.is_available() else f"; {why_no_cuda()}")
        return [{"setting": check, "verdict": "not run", "detail": reason} for check in checks]
    floors = {rounding: gpu_models.rounding_floor(network, rounding, images) for rounding in ("tf32", "fp16")}
    rows = []
    with torch.inference_mode():
        cpu_outputs = SSD300Detector(network).eval()(images)  # FP32: TF32 is a GPU setting
        expected = selection.select_detections(*cpu_outputs, **settings)
        for check, (module, rounding) in zip(checks, graphs_.values()):
            floor = floors.get(rounding, {})
            tolerance = max(STRICT_TOLERANCE, ROUNDING_MARGIN * max(floor.values(), default=0.0))
            actual = serve(*on_device(module, device)(images.to(device)), **settings)
            rows.append({"setting": check, **detection_parity(expected, actual, tolerance), "floor": floor})
            rows[-1]["detail"] += "".join(f", {key} floor {value:.1e}" for key, value in floor.items())
        on_gpu = serve(*(t.to(device) for t in cpu_outputs), **settings)
    equal = all(torch.equal(a.cpu(), b) for a, b in zip(on_gpu, expected))
    detail = f"{int(expected[3].sum())} detections, exactly"
    return [*rows, {"setting": checks[-1], "verdict": "equal" if equal else "DIFFER", "detail": detail}]


def figure(setting: str, batch: int, call, device: torch.device, args, *, per_image: bool) -> dict:
    """A timed row: the median of ``args.repeats`` calls, as images/s or as ms per call."""
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup + args.repeats):
            start = time.perf_counter()
            call()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times[args.warmup :])
    value = batch / seconds if per_image else 1000 * seconds
    log.info("%s, batch %d: %.2f", setting, batch, value)
    return {"setting": setting, "batch": batch, "value": value}


def timings(graphs_, served, selection, settings, device, args) -> dict[str, list[dict]]:
    """Forward images/s of each graph, then each selection function's ms per call."""
    images, forward, postprocess = gpu_models.photos(max(args.batch_sizes)).to(device), [], []
    for label, (module, _) in graphs_.items():
        module = on_device(module, device)
        for size in args.batch_sizes:
            call = lambda: module(images[:size])  # noqa: B023, E731 (called at once)
            forward.append(figure(label, size, call, device, args, per_image=True))
    for size in args.batch_sizes:
        with torch.inference_mode():
            outputs = served(gpu_models.photos(size).to(device))
        for function in (selection.select_detections, selection.select_detections_gpu):
            call = lambda: function(*outputs, **settings)  # noqa: B023, E731 (called at once)
            postprocess.append(figure(function.__name__, size, call, device, args, per_image=False))
    return {"forward": forward, "postprocess": postprocess}


def served_outputs(served, selection, settings) -> dict:
    """model.pt's boxes and scores on the sample photos, and both selections of them, as arrays:
    ``outputs.npz``, which `make stock-torch` compares across torch releases."""
    with torch.inference_mode():
        outputs = served(gpu_models.photos())
        arrays = dict(zip(("boxes", "scores"), outputs))
        for function in (selection.select_detections, selection.select_detections_gpu):
            arrays.update(
                {f"{function.__name__}_{i}": t for i, t in enumerate(function(*outputs, **settings))}
            )
    return {key: value.numpy() for key, value in arrays.items()}


def markdown(results: dict) -> str:
    lines = [
        f"## GPU check — {results['device_name']} ({results['date']})",
        "",
        f"torch {results['torch']} (CUDA {results['torch_cuda']}), model.pt: {results['model']}.",
        "",
        "| check | setting | batch | result |",
        "|---|---|---:|---:|",
    ]
    for section, title in SECTIONS.items():
        for row in results[section]:
            cell = f"{row['value']:.2f}" if "value" in row else f"{row['verdict']} ({row['detail']})"
            lines.append(f"| {title} | {row['setting']} | {row.get('batch', results['photos'])} | {cell} |")
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
    selection = load_selection()
    settings = gpu_models.served_settings(selection)
    served, description = served_model(args.repository)
    network = fp32_network_of(served)
    graphs_ = graphs(served, network, args.precisions)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device_name": name,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "model": description,
        "photos": len(gpu_models.photos()),
        "parity": parity(graphs_, network, selection, settings, device),
        **timings(graphs_, on_device(served, device), selection, settings, device, args),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(results))
    np.savez(args.out / "outputs.npz", **served_outputs(served, selection, settings))
    print(markdown(results))
    return 1 if any(row["verdict"] == "DIFFER" for row in results["parity"]) else 0


if __name__ == "__main__":
    sys.exit(main())
