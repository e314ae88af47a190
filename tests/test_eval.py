"""`make eval`: COCO mAP through the served pipeline, checked on a tiny generated dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ssd300_client import Detections, Detector, label_for_category_id
from ssd300_client.evaluation import (
    EVALUATION_SETTINGS,
    SUMMARY_NAMES,
    DatasetError,
    coco_summary,
    find_images,
    main,
)

# Real COCO category ids: around the gaps (11 | 12 unused | 13, 25 | 26 unused | 27) and above
# 80 (88 teddy bear, 90 toothbrush), where a label/category-id mix-up would show.
CATEGORIES = [1, 11, 13, 25, 27, 88, 90]


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory, sample_paths):
    """Four images (different sizes, one portrait) with boxes in COCO's [x, y, w, h] pixels."""
    root = tmp_path_factory.mktemp("coco")
    (root / "val2017").mkdir()
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    sizes = [(480, 640), (640, 427), (300, 300), (333, 500)]  # (height, width)
    for index, ((height, width), photo) in enumerate(zip(sizes, sample_paths)):
        image_id = 1000 + 7 * index  # ids that are not positions in the list
        name = f"{image_id:012d}.jpg"
        Image.open(photo).convert("RGB").resize((width, height)).save(root / "val2017" / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for _ in range(3):
            w, h = float(rng.uniform(20, width / 2)), float(rng.uniform(20, height / 2))
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORIES[len(annotations) % len(CATEGORIES)],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": str(c), "supercategory": "thing"} for c in CATEGORIES]
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return root


def test_ground_truth_fed_back_as_detections_scores_ap_1(tiny_coco):
    """Through the client's own result types: image ids, category ids and [x, y, w, h] pixel
    boxes must all be mapped correctly for this to reach 1.0."""
    annotations_path, images = find_images(tiny_coco)
    ground_truth = json.loads(annotations_path.read_text())
    results = []
    for image in ground_truth["images"]:
        objects = [a for a in ground_truth["annotations"] if a["image_id"] == image["id"]]
        detections = Detections(
            xyxy=[[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objects)],
            confidence=[0.9 - 0.1 * i for i in range(len(objects))],
            class_id=[label_for_category_id(a["category_id"]) for a in objects],
            image_size=(image["height"], image["width"]),
        )
        results += detections.to_coco(image["id"])
    summary = coco_summary(annotations_path, results, [image.image_id for image in images])
    assert summary["AP"] == pytest.approx(1.0)
    assert summary["AP50"] == pytest.approx(1.0)


def served_ground_truth(tiny_coco, server_url, root):
    """``tiny_coco``'s images with, as ground truth, each image's three most confident
    detections under the evaluation settings, read through the client from the server."""
    shutil.copytree(tiny_coco, root)
    document = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    annotations = []
    with Detector(server_url, parameters=EVALUATION_SETTINGS) as detector:
        for image in document["images"]:
            detections = detector.detect(root / "val2017" / image["file_name"])
            for result in sorted(detections.to_coco(image["id"]), key=lambda r: -r["score"])[:3]:
                x, y, w, h = result["bbox"]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image["id"],
                        "category_id": result["category_id"],
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
    categories = sorted({a["category_id"] for a in annotations})
    document["annotations"] = annotations
    document["categories"] = [{"id": c, "name": str(c), "supercategory": "thing"} for c in categories]
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    return annotations


@pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")
def test_eval_finds_every_served_detection_taken_as_ground_truth(tiny_coco, triton_server, tmp_path, capsys):
    """With random weights precision means nothing, but recall does: ground truth made of the
    server's own detections must all be found again (AR = 1) through `make eval`'s path, which
    needs image ids, category ids and [x, y, w, h] pixel boxes all mapped correctly."""
    annotations = served_ground_truth(tiny_coco, triton_server.grpc_url, tmp_path / "coco")
    assert len(annotations) == 12, "each photo should give at least three detections"
    out = tmp_path / "out"
    code = main(["--coco", str(tmp_path / "coco"), "--url", triton_server.grpc_url, "--out", str(out)])
    assert code == 0
    report = json.loads((out / "summary.json").read_text())
    summary = report["summary"]
    assert list(summary) == list(SUMMARY_NAMES)
    assert summary["AR_10"] == pytest.approx(1.0) and summary["AR_100"] == pytest.approx(1.0), summary
    # COCO's size ranges (area in pixels²): -1 exactly where the ground truth has no object.
    for size, (low, high) in {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e10)}.items():
        present = any(low <= a["area"] < high for a in annotations)
        assert summary[f"AR_{size}"] == (pytest.approx(1.0) if present else -1.0), (size, summary)
    assert report["images"] == 4 and report["server_settings"] == EVALUATION_SETTINGS
    detections = json.loads((out / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == {1000, 1007, 1014, 1021}
    assert all(len(d["bbox"]) == 4 and d["score"] > 0.05 for d in detections)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in capsys.readouterr().out


def test_limit_takes_the_first_images_by_id(tiny_coco):
    _, images = find_images(tiny_coco, limit=2)
    assert [image.image_id for image in images] == [1000, 1007]


def test_missing_annotations_are_named(tiny_coco, tmp_path):
    (tmp_path / "val2017").mkdir()
    with pytest.raises(DatasetError, match=r"missing .*annotations/instances_val2017\.json"):
        find_images(tmp_path)


def test_missing_image_files_are_counted_and_named(tiny_coco, tmp_path):
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(
        (tiny_coco / "annotations" / "instances_val2017.json").read_text()
    )
    with pytest.raises(
        DatasetError, match=r"4 of 4 images .* are not in .*val2017, e\.g\. 000000001000\.jpg"
    ):
        find_images(tmp_path)


def test_cli_reports_a_broken_dataset_in_one_line(tmp_path, capsys):
    assert main(["--coco", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nowhere'} is not a folder")
