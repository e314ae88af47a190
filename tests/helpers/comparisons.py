"""Comparing detections: the client's ``Detections`` and raw (boxes, scores, labels) rows."""

from __future__ import annotations

from numpy.testing import assert_allclose, assert_array_equal

from ssd300_client import Detections


def assert_same_detections(actual: Detections, expected: Detections) -> None:
    """Classes identical, scores within 1e-5, boxes within a pixel."""
    assert actual.image_size == expected.image_size
    assert_array_equal(actual.class_id, expected.class_id)
    assert_allclose(actual.confidence, expected.confidence, atol=1e-5)
    assert_allclose(actual.xyxy, expected.xyxy, atol=1.0)


def as_set(boxes, scores, labels, digits=4):
    """Detections as sorted (label, score, x1, y1, x2, y2) rows: order-free comparison."""
    return sorted(
        (int(label), round(float(s), 5), *[round(float(v), digits) for v in b])
        for b, s, label in zip(boxes, scores, labels)
    )
