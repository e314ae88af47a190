"""The one COCO label table the client ships (docs/reference-semantics.md, "Labels")."""

from __future__ import annotations

import numpy as np
import pytest

from ssd300_client import COCO_CATEGORY_IDS, COCO_NAMES, class_name, coco_category_id, label_for_category_id
from ssd300_common.labels import coco_category_ids

UNUSED_CATEGORY_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


def test_the_table_has_80_classes_with_distinct_names():
    assert len(COCO_NAMES) == len(COCO_CATEGORY_IDS) == 80
    assert len(set(COCO_NAMES)) == 80


def test_category_ids_are_1_to_90_in_order_without_the_ten_unused_ones():
    assert list(COCO_CATEGORY_IDS) == [i for i in range(1, 91) if i not in UNUSED_CATEGORY_IDS]


def test_model_label_1_is_person_with_category_1():
    assert (class_name(1), coco_category_id(1)) == ("person", 1)


def test_model_label_80_is_toothbrush_with_category_90():
    assert (class_name(80), coco_category_id(80)) == ("toothbrush", 90)


def test_label_and_category_part_at_the_first_gap():
    # Category 12 is unused, so label 12 ("stop sign") is category 13.
    assert (class_name(11), coco_category_id(11)) == ("fire hydrant", 11)
    assert (class_name(12), coco_category_id(12)) == ("stop sign", 13)


def test_label_for_category_id_inverts_coco_category_id():
    assert [label_for_category_id(coco_category_id(label)) for label in range(1, 81)] == list(range(1, 81))


@pytest.mark.parametrize("category_id", [*sorted(UNUSED_CATEGORY_IDS), 0, 91])
def test_unused_category_ids_have_no_label(category_id):
    with pytest.raises(ValueError, match="not one of the 80"):
        label_for_category_id(category_id)


@pytest.mark.parametrize("label", [0, 81])
def test_padding_and_out_of_range_labels_have_no_name(label):
    with pytest.raises(ValueError, match="1..80"):
        class_name(label)


def test_vectorised_category_ids_match_the_scalar_ones():
    labels = np.array([1, 12, 45, 80], dtype=np.int32)
    assert coco_category_ids(labels).tolist() == [coco_category_id(int(label)) for label in labels]
