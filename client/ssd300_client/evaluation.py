"""COCO mAP of the served model, measured through the real pipeline (``make eval``).

Every image goes through a running Triton server with this package's client: the same
decoding, resizing, label mapping and box mapping users get. The server is asked for NVIDIA's
COCO evaluation settings (score > 0.05, NMS IoU 0.50, up to 200 detections per image) as
request parameters; the default serving path keeps the reference ``decode_batch`` defaults
(IoU 0.45). Results are scored with pycocotools' COCOeval.

    python -m ssd300_client.evaluation --coco /data/coco [--limit 500] [--url 127.0.0.1:8001]

``--coco`` holds ``val2017/`` and ``annotations/instances_val2017.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ssd300_common import contract

from .errors import SSD300Error

log = logging.getLogger(__name__)

# NVIDIA's COCO evaluation of SSD300 (DeepLearningExamples `evaluate`):
# decode_batch(criteria=0.50, max_output=200).
EVALUATION_SETTINGS = {
    contract.SCORE_THRESHOLD_PARAMETER: 0.05,
    contract.NMS_IOU_PARAMETER: 0.5,
    contract.MAX_DETECTIONS_PARAMETER: 200,
}
# COCOeval.stats, in the order COCOeval.summarize() prints them.
SUMMARY_NAMES = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR_1", "AR_10", "AR_100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip
IMAGES_DIR = "val2017"
ANNOTATIONS_FILE = "annotations/instances_val2017.json"


class DatasetError(ValueError):
    """The COCO folder is missing something the evaluation needs."""


@dataclass(frozen=True)
class CocoImage:
    image_id: int
    path: Path


def find_images(root: str | Path, *, limit: int | None = None) -> tuple[Path, list[CocoImage]]:
    """Check the dataset folder; return the annotation file and the images to evaluate (by id)."""
    root = Path(root)
    expected = f"expected {root}/{IMAGES_DIR}/ and {root}/{ANNOTATIONS_FILE} (COCO 2017 validation layout)"
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: {expected}")
    annotations, images_dir = root / ANNOTATIONS_FILE, root / IMAGES_DIR
    missing = [str(p) for p in (images_dir, annotations) if not p.exists()]
    if missing:
        raise DatasetError(f"missing {' and '.join(missing)}: {expected}")
    try:
        listed = json.loads(annotations.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{annotations} is not a COCO annotation file ({exc})") from exc
    images = sorted(
        (CocoImage(int(item["id"]), images_dir / item["file_name"]) for item in listed),
        key=lambda i: i.image_id,
    )
    images = images[:limit] if limit else images
    absent = [image.path.name for image in images if not image.path.is_file()]
    if absent:
        raise DatasetError(
            f"{len(absent)} of {len(images)} images listed in {annotations} are not in {images_dir}, "
            f"e.g. {', '.join(absent[:3])}"
        )
    if not images:
        raise DatasetError(f"{annotations} lists no images")
    return annotations, images


def coco_summary(annotations: Path, results: list[dict], image_ids: list[int]) -> dict[str, float]:
    """COCOeval's 12 numbers for ``results`` on ``image_ids``; COCOeval prints its usual table."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() chatters while indexing
        ground_truth = COCO(str(annotations))
    if not results:
        log.warning("no detections at all: every AP and AR is 0")
        return dict.fromkeys(SUMMARY_NAMES, 0.0)
    detections = ground_truth.loadRes(results)
    evaluator = COCOeval(ground_truth, detections, iouType="bbox")
    evaluator.params.imgIds = image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {name: float(value) for name, value in zip(SUMMARY_NAMES, evaluator.stats)}


def detect_all(
    detector, images: list[CocoImage], *, batch_size: int, concurrency: int, progress: bool = True
) -> list[dict]:
    """COCO results (category ids, [x, y, w, h] pixels) for every image; fails on any unreadable one."""
    from tqdm import tqdm

    results: list[dict] = []
    outcomes = detector.detect_iter(
        [image.path for image in images], batch_size=batch_size, concurrency=concurrency
    )
    for index, outcome in tqdm(
        outcomes, total=len(images), unit="img", desc="evaluating", disable=not progress
    ):
        if isinstance(outcome, SSD300Error):
            raise outcome
        results.extend(outcome.to_coco(images[index].image_id))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssd300_client.evaluation",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--coco", type=Path, required=True, help=f"folder with {IMAGES_DIR}/ and {ANNOTATIONS_FILE}"
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N images (by image id)")
    parser.add_argument(
        "--url", default="127.0.0.1:8001", help="Triton gRPC host:port (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/eval"), help="results folder (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .detector import Detector

    try:
        annotations, images = find_images(args.coco, limit=args.limit)
        print(f"{len(images)} images from {args.coco}; server settings {EVALUATION_SETTINGS}", flush=True)
        started = time.perf_counter()
        with Detector(args.url, parameters=EVALUATION_SETTINGS) as detector:
            results = detect_all(detector, images, batch_size=args.batch_size, concurrency=args.concurrency)
        seconds = time.perf_counter() - started
    except (DatasetError, SSD300Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(images)} images in {seconds:.1f} s ({len(images) / seconds:.2f} images/s), "
        f"{len(results)} detections",
        flush=True,
    )
    summary = coco_summary(annotations, results, [image.image_id for image in images])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detections.json").write_text(json.dumps(results))
    report = {
        "summary": summary,
        "images": len(images),
        "detections": len(results),
        "images_per_s": len(images) / seconds,
        "server_settings": EVALUATION_SETTINGS,
        "dataset": str(args.coco),
        "url": args.url,
    }
    (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"AP[.50:.95] = {summary['AP']:.3f}; results in {args.out}/ (summary.json, detections.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
