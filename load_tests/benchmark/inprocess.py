"""In-process figures: the served postprocess against NVIDIA's per-class reference decode, and
the two engines of one build (model.pt with torch, model.onnx with ONNX Runtime) back to back."""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import onnxruntime
import torch

from load_tests.benchmark.gpu_models import served_settings
from ssd300_build.detector import SSD300Detector
from ssd300_build.reference import decode_batch
from ssd300_common import contract
from ssd300_serving.served_code import load_selection

SCORE_TOLERANCE = 1e-5


def median_s(function, repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def detection_set(boxes, scores, labels) -> tuple[set, list[float]]:
    """Detections as a set of (label, box rounded to 1e-4), and their scores sorted."""
    rows = {(int(label), *(round(float(v), 4) for v in box)) for box, label in zip(boxes, labels)}
    return rows, sorted(float(s) for s in scores)


def compare_postprocess(network, images: torch.Tensor, repeats: int) -> dict:
    """``select_detections`` (what CPU instances serve, from the graph's ranked candidates) against
    the reference decode (from the network's raw outputs) on one batch: time and detections."""
    selection = load_selection()
    options = served_settings(selection)
    detector = SSD300Detector(network).eval()
    with torch.inference_mode():
        ploc, plabel = network(detector.normalize(images))
        candidates = detector(images)  # each class's ranked best, as ssd300 serves them
        select_s = median_s(lambda: selection.select_detections(*candidates, **options), 3 * repeats)
        reference = dict(
            criteria=options["iou_threshold"],
            max_output=options["max_detections"],
            score_threshold=options["score_threshold"],
        )
        reference_s = median_s(lambda: decode_batch(ploc, plabel, detector.dboxes, **reference), repeats, 0)
        boxes, scores, labels, counts = selection.select_detections(*candidates, **options)
        expected = decode_batch(ploc, plabel, detector.dboxes, **reference)
    mismatches = []
    for image, ref in enumerate(expected):
        n = int(counts[image])
        got_rows, got_scores = detection_set(boxes[image, :n], scores[image, :n], labels[image, :n])
        ref_rows, ref_scores = detection_set(ref.boxes, ref.scores, ref.labels)
        if got_rows != ref_rows:
            mismatches.append(f"image {image}: {len(got_rows ^ ref_rows)} of {n} detections differ")
        elif max((abs(a - b) for a, b in zip(got_scores, ref_scores)), default=0.0) > SCORE_TOLERANCE:
            mismatches.append(f"image {image}: scores differ by more than {SCORE_TOLERANCE}")
    return {
        "batch_size": len(images),
        "detections_per_image": [int(c) for c in counts.flatten()],
        "select_ms_per_image": 1000 * select_s / len(images),
        "reference_ms_per_image": 1000 * reference_s / len(images),
        "speedup": reference_s / select_s,
        "mismatches": mismatches,
    }


def onnx_session(path: Path) -> onnxruntime.InferenceSession:
    """Session options as the CPU runner (model_repository/ssd300/1/model.py) sets them."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_engines(repository: Path, images: torch.Tensor, batch_sizes, repeats: int) -> list[dict]:
    """Images/s of the build's model.pt and model.onnx per batch size, back to back, the order
    alternating between batch sizes so that a neighbour's load hits both alike."""
    folder = repository / contract.NETWORK_MODEL / "1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.load(str(folder / contract.ENGINE_FILES["torchscript"]), map_location="cpu")
    session = onnx_session(folder / contract.ENGINE_FILES["onnx"])
    engines = {"torchscript": traced, "onnx": lambda batch: session.run(None, {"images": batch.numpy()})}
    rows = []
    with torch.inference_mode():
        for index, size in enumerate(batch_sizes):
            batch = images[:size].contiguous()
            row = {"batch_size": size}
            for name in list(engines)[:: 1 if index % 2 == 0 else -1]:
                # Two untimed calls: TorchScript's profiling executor optimises the graph on them.
                row[name] = size / median_s(lambda: engines[name](batch), repeats, warmup=2)  # noqa: B023
            # Scores rank by rank: boxes are ranked too, and a near-tie may swap two of them.
            scores = traced(batch)[1] - torch.from_numpy(engines["onnx"](batch)[1])
            row["max_score_diff"] = float(scores.abs().max())
            rows.append(row)
    return rows
