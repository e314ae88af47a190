"""Detections of one image: access, filtering, COCO results, drawing."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd300_client import DEFAULT_DISPLAY_THRESHOLD, Detection, Detections, drawing


def make_detections(**overrides) -> Detections:
    """Three detections on a 200×100 (width × height) white picture."""
    fields = dict(
        xyxy=[[10, 20, 60, 80], [100, 10, 190, 90], [0, 0, 5, 5]],
        confidence=[0.9, 0.5, 0.1],
        class_id=[1, 12, 80],  # person, stop sign (category 13), toothbrush (category 90)
        image_size=(100, 200),
        name="street.jpg",
    )
    fields.update(overrides)
    return Detections(**fields)


def white_picture() -> Image.Image:
    """The 200×100 picture that ``make_detections`` describes."""
    return Image.new("RGB", (200, 100), "white")


def test_length_is_the_number_of_detections():
    assert len(make_detections()) == 3


def test_iteration_yields_detection_records_with_names_and_category_ids():
    first, second, third = make_detections()
    assert first == Detection((10.0, 20.0, 60.0, 80.0), pytest.approx(0.9), 1, "person", 1)
    assert (second.class_name, second.coco_category_id) == ("stop sign", 13)
    assert (third.class_name, third.coco_category_id) == ("toothbrush", 90)


def test_array_views_match_the_records():
    detections = make_detections()
    assert detections.class_name == ["person", "stop sign", "toothbrush"]
    assert detections.coco_category_id.tolist() == [1, 13, 90]
    assert detections.xyxy.shape == (3, 4) and detections.xyxy.dtype == np.float32


def test_arrays_are_read_only():
    with pytest.raises(ValueError):
        make_detections().confidence[0] = 1.0


def test_filter_keeps_detections_at_or_above_the_threshold():
    kept = make_detections().filter(0.5)
    assert kept.confidence.tolist() == pytest.approx([0.9, 0.5])
    assert kept.image_size == (100, 200) and kept.name == "street.jpg"


def test_default_display_threshold_is_the_hub_notebooks():
    assert DEFAULT_DISPLAY_THRESHOLD == 0.40


def test_coco_results_have_xywh_boxes_and_category_ids():
    # Box (100, 10, 190, 90) → x 100, y 10, w 190 − 100 = 90, h 90 − 10 = 80.
    results = make_detections().to_coco(image_id=42)
    assert results[1] == {"image_id": 42, "category_id": 13, "bbox": [100.0, 10.0, 90.0, 80.0], "score": 0.5}
    assert [r["category_id"] for r in results] == [1, 13, 90]


def test_coco_results_are_json_serialisable():
    assert json.loads(json.dumps(make_detections().to_coco(image_id=1)))[0]["bbox"] == [
        10.0,
        20.0,
        50.0,
        60.0,
    ]


def test_to_dict_describes_the_image_and_each_detection():
    description = json.loads(json.dumps(make_detections().to_dict()))
    assert (description["image"], description["width"], description["height"]) == ("street.jpg", 200, 100)
    assert description["detections"][0] == {
        "xyxy": [10.0, 20.0, 60.0, 80.0],
        "confidence": 0.9,
        "class_id": 1,
        "class_name": "person",
        "coco_category_id": 1,
    }


def test_an_image_without_detections_is_empty_everywhere():
    empty = make_detections(xyxy=np.zeros((0, 4)), confidence=[], class_id=[])
    assert len(empty) == 0 and list(empty) == [] and empty.to_coco(image_id=1) == []


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="same length"):
        make_detections(confidence=[0.9])


def test_draw_marks_boxes_above_the_display_threshold_only():
    drawn = np.asarray(make_detections().draw(white_picture(), threshold=0.4))
    assert drawn.shape == (100, 200, 3)
    assert drawn[50, 10].tolist() != [255, 255, 255]  # left edge of the person box (0.9)
    assert drawn[50, 100].tolist() != [255, 255, 255]  # left edge of the stop sign box (0.5)
    assert drawn[3, 3].tolist() == [255, 255, 255]  # inside the toothbrush box (0.1): not drawn


def test_draw_accepts_what_detect_accepts(tmp_path):
    path = tmp_path / "street.png"
    white_picture().save(path)
    from_file = np.asarray(make_detections().draw(path))
    from_array = np.asarray(make_detections().draw(np.asarray(white_picture())))
    assert (from_file == from_array).all() and from_file.min() < 255


def test_draw_leaves_the_given_image_untouched():
    picture = white_picture()
    make_detections().draw(picture)
    assert np.asarray(picture).min() == 255


def test_draw_refuses_an_image_of_another_size():
    with pytest.raises(ValueError, match="200×100"):
        make_detections().draw(Image.new("RGB", (50, 50)))


def test_detections_hold_no_image():
    # What they describe may be a video frame: keeping it would keep every frame of a long run alive.
    assert not any(isinstance(value, (Image.Image, bytes)) for value in vars(make_detections()).values())


def test_drawing_does_not_import_results():
    # results.py draws through drawing.py; an import back, even for type hints, is a cycle.
    tree = ast.parse(Path(drawing.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert imported and not {name for name in imported if name and name.endswith("results")}
