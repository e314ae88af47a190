"""In-process yardsticks: the served postprocess against the per-class reference decode, and
the eager network's throughput with and without the reference decode."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from types import ModuleType

import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ssd300_build.default_boxes import dboxes300_coco, decode_boxes
from ssd300_build.detector import SSD300Detector, top_candidates
from ssd300_build.reference import decode_batch
from ssd300_common.contract import POSTPROCESS_MODEL
from ssd300_serving.served_code import load_selection

POSTPROCESS_DIR = Path(__file__).resolve().parents[2] / "model_repository" / POSTPROCESS_MODEL
SCORE_TOLERANCE = 1e-5


def load_selection_module() -> ModuleType:
    return load_selection()


def served_selection_options(selection: ModuleType) -> dict:
    """The thresholds the CPU server uses, read from the config the server reads, as
    ``select_detections`` arguments (the module's own parameter → argument table)."""
    config = text_format.Parse(
        (POSTPROCESS_DIR / "configs" / "cpu.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    return {
        name: cast(config.parameters[key].string_value) for key, (name, cast) in selection.SETTINGS.items()
    }


def timed(function, *, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def detection_set(boxes, scores, labels) -> tuple[set, list[float]]:
    """Detections as a set of (label, box rounded to 1e-4) plus their scores, sorted."""
    rows = {(int(label), *(round(float(v), 4) for v in box)) for box, label in zip(boxes, labels)}
    return rows, sorted(float(s) for s in scores)


def compare_postprocess(network, images: torch.Tensor, *, repeats: int) -> dict:
    """select_detections vs the per-class reference decode on one batch, plus an equality check.

    Both start from the network's raw outputs of the same batch. The served postprocess gets
    what the served graph gives it (each class's best decoded boxes and scores), so it is timed
    alone and also with that decode, softmax and ranking included, for a like-for-like figure.
    """
    selection = load_selection_module()
    options = served_selection_options(selection)
    detector = SSD300Detector(network).eval()
    dboxes = dboxes300_coco()
    with torch.inference_mode():
        ploc, plabel = network(detector.normalize(images))
        boxes, scores = _decode(detector, ploc, plabel)

        def served():
            return selection.select_detections(boxes, scores, **options)

        def served_with_decode():
            decoded_boxes, class_scores = _decode(detector, ploc, plabel)
            return selection.select_detections(decoded_boxes, class_scores, **options)

        def reference():
            return decode_batch(
                ploc,
                plabel,
                dboxes,
                criteria=options["iou_threshold"],
                max_output=options["max_detections"],
                score_threshold=options["score_threshold"],
            )

        served_s = timed(served, repeats=repeats * 3)
        nms_share = nms_share_of(selection, served)
        served_with_decode_s = timed(served_with_decode, repeats=repeats * 3)
        reference_s = timed(reference, repeats=repeats, warmup=0)
        out_boxes, out_scores, out_labels, counts = served()
        expected = reference()

    mismatches = []
    for image, ref in enumerate(expected):
        n = int(counts[image])
        got_rows, got_scores = detection_set(
            out_boxes[image, :n], out_scores[image, :n], out_labels[image, :n]
        )
        ref_rows, ref_scores = detection_set(ref.boxes, ref.scores, ref.labels)
        if n != len(ref.scores):
            mismatches.append(f"image {image}: {n} detections, reference {len(ref.scores)}")
        elif got_rows != ref_rows:
            mismatches.append(f"image {image}: {len(got_rows ^ ref_rows)} detections differ")
        elif max((abs(a - b) for a, b in zip(got_scores, ref_scores)), default=0.0) > SCORE_TOLERANCE:
            mismatches.append(f"image {image}: scores differ by more than {SCORE_TOLERANCE}")
    served_median, reference_median = statistics.median(served_s), statistics.median(reference_s)
    return {
        "batch_size": len(images),
        "options": options,
        "detections_per_image": [int(c) for c in counts.flatten()],
        "select_detections_s": served_s,
        "decode_and_select_s": served_with_decode_s,
        "reference_s": reference_s,
        "select_ms_per_image": 1000 * served_median / len(images),
        "decode_and_select_ms_per_image": 1000 * statistics.median(served_with_decode_s) / len(images),
        "reference_ms_per_image": 1000 * reference_median / len(images),
        "nms_share": nms_share,
        "speedup": reference_median / served_median,
        "speedup_with_decode": reference_median / statistics.median(served_with_decode_s),
        "identical": not mismatches,
        "mismatches": mismatches,
    }


def nms_share_of(selection: ModuleType, call) -> float | None:
    """Fraction of one ``call`` spent in the module's greedy-NMS step (to say where the time
    goes); None if the module no longer has that step under its current name."""
    step = getattr(selection, "_nms_per_group", None)
    if step is None:
        return None
    spent = 0.0

    def timed_step(*args, **kwargs):
        nonlocal spent
        start = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            spent += time.perf_counter() - start

    selection._nms_per_group = timed_step
    try:
        start = time.perf_counter()
        call()
        total = time.perf_counter() - start
    finally:
        selection._nms_per_group = step
    return spent / total


def _decode(detector: SSD300Detector, ploc: torch.Tensor, plabel: torch.Tensor):
    """What the served graph does after the network: box decode, softmax and each class's best
    candidates (detector.py)."""
    return top_candidates(decode_boxes(ploc, detector.dboxes), plabel.softmax(dim=1)[:, 1:, :])


def forward_throughput(
    network, images: torch.Tensor, *, batch_sizes: tuple[int, ...], repeats: int
) -> dict[int, dict]:
    """Eager SSD300Detector (uint8 in, decoded boxes and scores out), images/s per batch size."""
    detector = SSD300Detector(network).eval()
    results = {}
    with torch.inference_mode():
        for size in batch_sizes:
            batch = images[:size]
            # B023: the lambda is called at once, inside the loop.
            seconds = timed(lambda: detector(batch), repeats=repeats)  # noqa: B023
            results[size] = {"seconds": seconds, "images_per_s": size / statistics.median(seconds)}
    return results


def reference_pipeline_throughput(network, images: torch.Tensor, *, repeats: int) -> dict:
    """Forward plus the per-class reference decode (what serving without this project costs)."""
    detector = SSD300Detector(network).eval()
    dboxes = dboxes300_coco()

    def pipeline():
        ploc, plabel = network(detector.normalize(images))
        return decode_batch(ploc, plabel, dboxes)

    with torch.inference_mode():
        seconds = timed(pipeline, repeats=repeats, warmup=0)  # forward_throughput has warmed the network
    return {
        "batch_size": len(images),
        "seconds": seconds,
        "images_per_s": len(images) / statistics.median(seconds),
    }
