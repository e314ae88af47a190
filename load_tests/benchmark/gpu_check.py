"""``make gpu-check``: the first figures to take on a GPU, in one run of a few minutes.

Needs the venv, a built ``model.pt`` and a CUDA device (``--device cpu`` runs the same steps
tiny, so the test suite keeps this script working on machines without one). Writes
``gpu_check.json`` and ``gpu_check.md`` into ``--out``:

1. model.pt on the device against model.pt on the CPU: detections after the served
   postprocess, on the sample photos, compared as sets;
2. forward images/s of the network as served (uint8 in, boxes and scores out) per batch size,
   FP32 with TF32 off and on, and FP16 (the ``PRECISION=fp16`` network);
3. the served postprocess (``select_detections``, and ``select_detections_gpu`` when the module
   has it) in ms per call against torchvision's ``batched_nms`` doing the same selection;
4. the whole in-process pipeline (uint8 host batch → device → network → selection → host);
5. model.onnx through ONNX Runtime's CUDA and TensorRT providers, when installed, each row
   labelled by the provider the session really got (``session.get_providers()``): ONNX Runtime
   falls back to CUDA or the CPU, with only a warning, when a provider cannot start.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from load_tests.benchmark.inprocess import load_selection_module, served_selection_options
from ssd300_build.__main__ import _sample_photos
from ssd300_build.detector import SSD300Detector, fp32_network_of
from ssd300_build.model import SSD300
from ssd300_build.onnx_export import ONNX_FILE

log = logging.getLogger("load_tests.benchmark.gpu_check")
REPO_ROOT = Path(__file__).resolve().parents[2]
MODES = (("fp32", False), ("fp32", True), ("fp16", False))  # (precision, TF32)
BOX_TOLERANCE = 1e-3  # device vs CPU kernels (TF32 off): a few 1e-5 in practice
SCORE_TOLERANCE = 1e-3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m load_tests.benchmark.gpu_check", description=__doc__)
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "gpu_check")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--postprocess-batches", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--pipeline-batch", type=int, default=64)
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "fp16"), default=["fp32", "fp16"])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each figure")
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(call, device: torch.device, *, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_model_pt(repository: Path, device: torch.device) -> torch.jit.ScriptModule:
    path = repository / "ssd300" / "1" / "model.pt"
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing: build it with `make model`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location=device).eval()


def photo_batch(size: int) -> torch.Tensor:
    photos = _sample_photos()
    repeats = -(-size // len(photos))
    return photos.repeat(repeats, 1, 1, 1)[:size].contiguous()


def rows(outputs, image: int) -> list[tuple[int, float, torch.Tensor]]:
    boxes, scores, labels, counts = (t.cpu() for t in outputs)
    n = int(counts[image, 0])
    return [(int(labels[image, i]), float(scores[image, i]), boxes[image, i]) for i in range(n)]


def unmatched(expected, actual) -> int:
    """Rows of ``expected`` above the lists' cut with no counterpart in ``actual``."""
    cut = max([0.0, *(min(s for _, s, _ in r) for r in (expected, actual) if r)]) + 2 * SCORE_TOLERANCE
    missing = 0
    for label, score, box in (row for row in expected if row[1] > cut):
        if not any(
            other_label == label
            and abs(other_score - score) <= SCORE_TOLERANCE
            and float((other_box - box).abs().max()) <= BOX_TOLERANCE
            for other_label, other_score, other_box in actual
        ):
            missing += 1
    return missing


def served_selection(selection, device: torch.device):
    """The function an instance on ``device`` serves (the GPU variant on CUDA), when the module
    chooses by device; otherwise the one selection function it has."""
    choose = getattr(selection, "selection_for", None)
    return choose(torch.device(device)) if choose else selection.select_detections


def device_parity(scripted_cpu, scripted_device, selection, options, device) -> dict:
    images = _sample_photos()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        cpu = selection.select_detections(*scripted_cpu(images), **options)
        on_device = served_selection(selection, device)(*scripted_device(images.to(device)), **options)
    per_image = []
    for image in range(len(images)):
        expected, actual = rows(cpu, image), rows(on_device, image)
        per_image.append(
            {
                "detections": len(expected),
                "unmatched": unmatched(expected, actual) + unmatched(actual, expected),
            }
        )
    return {
        "images": len(images),
        "per_image": per_image,
        "equal": all(p["unmatched"] == 0 for p in per_image),
    }


def forward_throughput(network: SSD300, device, args) -> list[dict]:
    results = []
    images = photo_batch(max(args.batch_sizes)).to(device)
    for precision, tf32 in MODES:
        if precision not in args.precisions or (tf32 and device.type != "cuda"):
            continue
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        detector = SSD300Detector(network, precision).to(device).eval()
        for size in args.batch_sizes:
            batch = images[:size]
            with torch.inference_mode():
                seconds = median_seconds(
                    lambda: detector(batch),  # noqa: B023 (called at once)
                    device,
                    repeats=args.repeats,
                    warmup=args.warmup,
                )
            results.append(
                {"precision": precision, "tf32": tf32, "batch_size": size, "images_per_s": size / seconds}
            )
            log.info("forward %s tf32=%s batch %d: %.1f img/s", precision, tf32, size, size / seconds)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return results


def torchvision_selection(
    boxes, scores, *, score_threshold, candidates_per_class, iou_threshold, max_detections
):
    """The same selection with torchvision's batched_nms, one image at a time (the usual way)."""
    from torchvision.ops import batched_nms

    results = []
    classes = scores.shape[1]
    for image_boxes, image_scores in zip(boxes, scores):
        top_scores, top_anchors = image_scores.topk(min(candidates_per_class, image_scores.shape[1]), dim=1)
        labels = torch.arange(1, classes + 1, device=scores.device)[:, None].expand_as(top_anchors)
        keep = top_scores > score_threshold
        candidate_boxes = image_boxes[top_anchors[keep]]
        kept = batched_nms(candidate_boxes, top_scores[keep], labels[keep], iou_threshold)[:max_detections]
        results.append((candidate_boxes[kept], top_scores[keep][kept], labels[keep][kept]))
    return results


def postprocess_timing(scripted_device, selection, options, device, args) -> list[dict]:
    functions = {"select_detections": selection.select_detections}
    if hasattr(selection, "select_detections_gpu"):
        functions["select_detections_gpu"] = selection.select_detections_gpu
    functions["torchvision batched_nms"] = torchvision_selection
    results = []
    for size in args.postprocess_batches:
        with torch.inference_mode():
            boxes, scores = scripted_device(photo_batch(size).to(device))
            for name, function in functions.items():
                seconds = median_seconds(
                    lambda: function(boxes, scores, **options),  # noqa: B023 (called at once)
                    device,
                    repeats=args.repeats,
                    warmup=args.warmup,
                )
                results.append({"function": name, "batch_size": size, "ms_per_call": 1000 * seconds})
                log.info("postprocess %s batch %d: %.2f ms", name, size, 1000 * seconds)
    return results


def pipeline_throughput(scripted_device, selection, options, device, args) -> dict:
    images = photo_batch(args.pipeline_batch)
    if device.type == "cuda":
        images = images.pin_memory()

    def pipeline():
        boxes, scores = scripted_device(images.to(device, non_blocking=True))
        return [t.cpu() for t in served_selection(selection, device)(boxes, scores, **options)]

    with torch.inference_mode():
        seconds = median_seconds(pipeline, device, repeats=args.repeats, warmup=args.warmup)
    return {"batch_size": args.pipeline_batch, "images_per_s": args.pipeline_batch / seconds}


ONNX_FALLBACKS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def provider_chain(provider: str, options: dict) -> list:
    """The providers a session is created with: ``provider`` first, then the fallbacks once each."""
    return [(provider, options), *(p for p in ONNX_FALLBACKS if p != provider)]


def session_providers(requested: str, session) -> dict:
    """What an ONNX Runtime session runs on, against what it was asked for.

    ``session.get_providers()`` lists the providers the session registered, in priority order;
    one that failed to start (TensorRT libraries missing, say) is absent, so the first entry is
    the provider that really takes the graph (the ones after it take the nodes it cannot).
    """
    providers = list(session.get_providers())
    active = providers[0] if providers else "none"
    fell_back = active != requested
    label = f"{active} ({requested} requested: ONNX Runtime fell back)" if fell_back else active
    return {
        "requested": requested,
        "provider": active,
        "session_providers": providers,
        "fell_back": fell_back,
        "label": label,
    }


def onnx_runtime(repository: Path, device, args) -> dict:
    path = repository / "ssd300" / "1" / ONNX_FILE
    try:
        import onnxruntime
    except ImportError:
        return {"available": [], "note": "onnxruntime is not installed"}
    available = onnxruntime.get_available_providers()
    result: dict = {"available": available, "providers": []}
    if not path.is_file():
        result["note"] = f"{path} is missing: build it with `make model ENGINE=onnx`"
        return result
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if device.type != "cuda" or not wanted:
        result["note"] = (
            "no CUDA or TensorRT execution provider in this onnxruntime "
            "(the GPU build is the onnxruntime-gpu package)"
            if not wanted
            else "not run: --device is not CUDA"
        )
        return result
    size = max(args.batch_sizes)
    images = photo_batch(size).numpy()
    for provider in wanted:
        options = {"trt_fp16_enable": True} if provider == "TensorrtExecutionProvider" else {}
        session = onnxruntime.InferenceSession(str(path), providers=provider_chain(provider, options))
        providers = session_providers(provider, session)
        if providers["fell_back"]:
            log.warning("ONNX Runtime: %s", providers["label"])
        start = time.perf_counter()
        session.run(None, {"images": images})  # TensorRT builds its engine here
        first_s = time.perf_counter() - start

        def run(session=session):
            return session.run(None, {"images": images})

        seconds = median_seconds(run, device, repeats=args.repeats, warmup=1)
        result["providers"].append(
            {**providers, "batch_size": size, "images_per_s": size / seconds, "first_call_s": first_s}
        )
    return result


def onnx_markdown(onnx: dict) -> list[str]:
    """The ONNX Runtime rows of the report's table, and the notes under it."""
    rows, notes = [], []
    for row in onnx.get("providers", []):
        rows.append(
            f"| ONNX Runtime img/s | {row['label']} (first call {row['first_call_s']:.1f} s) | "
            f"{row['batch_size']} | {row['images_per_s']:.1f} |"
        )
        notes.append(
            f"ONNX Runtime, {row['requested']} requested: the session's providers were "
            f"{' > '.join(row['session_providers']) or 'none'}."
        )
    if onnx.get("note"):
        notes.append(
            f"ONNX Runtime: {onnx['note']} (providers here: {', '.join(onnx['available']) or 'none'})."
        )
    return rows + ([""] if notes else []) + notes


def markdown(results: dict) -> str:
    lines = [
        f"## GPU check — {results['device_name']} ({results['date']})",
        "",
        f"torch {results['torch']}, model.pt: {results['model']}.",
        "",
        "| check | setting | batch | result |",
        "|---|---|---:|---:|",
    ]
    parity = results["parity"]
    verdict = "equal" if parity["equal"] else "DIFFER"
    unmatched_rows = sum(p["unmatched"] for p in parity["per_image"])
    lines.append(
        f"| model.pt {results['device']} vs CPU, detections | {parity['images']} sample photos | "
        f"{parity['images']} | {verdict} ({unmatched_rows} unmatched) |"
    )
    for row in results["forward"]:
        setting = row["precision"] + (
            ", TF32 on" if row["tf32"] else ", TF32 off" if row["precision"] == "fp32" else ""
        )
        lines.append(f"| forward img/s | {setting} | {row['batch_size']} | {row['images_per_s']:.1f} |")
    for row in results["postprocess"]:
        lines.append(
            f"| postprocess ms/call | {row['function']} | {row['batch_size']} | {row['ms_per_call']:.2f} |"
        )
    pipe = results["pipeline"]
    lines.append(
        f"| pipeline img/s | uint8 host batch → detections on host | {pipe['batch_size']} | "
        f"{pipe['images_per_s']:.1f} |"
    )
    lines += onnx_markdown(results["onnx"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "error: no CUDA device here (torch.cuda.is_available() is False); --device cpu dry-runs",
            file=sys.stderr,
        )
        return 2
    selection = load_selection_module()
    options = served_selection_options(selection)
    scripted_cpu = load_model_pt(args.repository, torch.device("cpu"))
    scripted_device = load_model_pt(args.repository, device)
    metadata = json.loads((args.repository / "ssd300" / "1" / "weights.json").read_text())
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "CPU",
        "torch": torch.__version__,
        "model": f"{metadata.get('weights')} weights, {metadata.get('precision', 'fp32')}",
        "parity": device_parity(scripted_cpu, scripted_device, selection, options, device),
        "forward": forward_throughput(fp32_network_of(scripted_cpu), device, args),
        "postprocess": postprocess_timing(scripted_device, selection, options, device, args),
        "pipeline": pipeline_throughput(scripted_device, selection, options, device, args),
        "onnx": onnx_runtime(args.repository, device, args),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if results["parity"]["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
