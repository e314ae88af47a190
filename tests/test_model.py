"""SSD300's architecture and default boxes, as docs/reference-semantics.md specifies them."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from ssd300_build.default_boxes import BOXES_PER_LOCATION, FEATURE_SIZES, STEPS, dboxes300_coco, decode_boxes
from ssd300_build.model import SSD300

pytestmark = pytest.mark.model  # every test builds or runs the network


@pytest.fixture(scope="module")
def network():
    return SSD300().eval()


def test_state_dict_has_the_published_checkpoint_layout(network):
    state = network.state_dict()
    assert len(state) == 342
    assert sum(t.numel() for t in state.values()) == 22_930_923
    prefixes = {".".join(key.split(".")[:2]) for key in state}
    assert {p for p in prefixes if p.startswith("feature_extractor")} == {
        "feature_extractor.feature_extractor"
    }
    assert {key.split(".")[2] for key in state if key.startswith("feature_extractor")} == {
        "0",
        "1",
        "4",
        "5",
        "6",
    }
    assert {key.split(".")[2] for key in state if key.startswith("additional_blocks")} == {"0", "1", "3", "4"}
    assert state["conf.0.weight"].shape == (4 * 81, 1024, 3, 3)
    assert state["loc.5.weight"].shape == (4 * 4, 256, 3, 3)


def test_forward_gives_offsets_and_logits_for_8732_boxes(network):
    with torch.no_grad():
        ploc, plabel = network(torch.randn(2, 3, 300, 300))
    assert ploc.shape == (2, 4, 8732)
    assert plabel.shape == (2, 81, 8732)


def test_feature_maps_are_38_19_10_5_3_1(network):
    with torch.no_grad():
        maps = network.feature_maps(torch.randn(1, 3, 300, 300))
    assert [m.shape[-1] for m in maps] == list(FEATURE_SIZES)
    assert [m.shape[1] for m in maps] == [1024, 512, 512, 256, 256, 256]


def test_there_are_8732_default_boxes_in_unit_coordinates():
    boxes = dboxes300_coco()
    assert boxes.shape == (8732, 4)
    assert boxes.min() >= 0 and boxes.max() <= 1


@pytest.mark.parametrize(
    "index, expected",
    [
        # level 0: centres step 8/300 = 1/37.5; first size 21/300 = 0.07
        (0, (0.5 / 37.5, 0.5 / 37.5, 0.07, 0.07)),
        (1, (1.5 / 37.5, 0.5 / 37.5, 0.07, 0.07)),  # next column
        (38, (0.5 / 37.5, 1.5 / 37.5, 0.07, 0.07)),  # next row
        # second size of level 0: sqrt(21 * 45) / 300
        (38 * 38, (0.5 / 37.5, 0.5 / 37.5, math.sqrt(21 * 45) / 300, math.sqrt(21 * 45) / 300)),
        # third size: aspect ratio 2 -> (0.07 * sqrt 2, 0.07 / sqrt 2)
        (2 * 38 * 38, (0.5 / 37.5, 0.5 / 37.5, 0.07 * math.sqrt(2), 0.07 / math.sqrt(2))),
        # level 1 starts after 4 * 38 * 38 boxes: step 16 -> 1/18.75, size 45/300
        (4 * 38 * 38, (0.5 / 18.75, 0.5 / 18.75, 0.15, 0.15)),
        # the very last box: 1x1 map centred, (0.87 / sqrt 2, 0.87 * sqrt 2) with h clamped to 1
        (8731, (0.5, 0.5, 0.87 / math.sqrt(2), 1.0)),
    ],
)
def test_default_box_values(index, expected):
    assert_close(dboxes300_coco()[index], torch.tensor(expected), rtol=0, atol=1e-6)


def test_head_outputs_are_flattened_in_default_box_order():
    """Feed feature maps whose channel 0 holds the pixel index i*W + j, and loc heads that copy
    it (plus 10,000·anchor) to the x-offset of every anchor: box n's x-offset must then name the
    anchor and pixel that dboxes300_coco() says box n belongs to."""
    network = SSD300().eval()
    maps = []
    for size, channels in zip(FEATURE_SIZES, [1024, 512, 512, 256, 256, 256]):
        fmap = torch.zeros(1, channels, size, size)
        fmap[0, 0] = torch.arange(size * size, dtype=torch.float32).view(size, size)
        maps.append(fmap)
    network.feature_maps = lambda images: maps
    with torch.no_grad():
        for head, anchors in zip(network.loc, BOXES_PER_LOCATION):
            head.weight.zero_()
            head.bias.zero_()
            for anchor in range(anchors):
                # view(N, 4, -1) makes channel (coordinate * anchors + anchor)
                head.weight[0 * anchors + anchor, 0, 1, 1] = 1.0
                head.bias[0 * anchors + anchor] = 10_000.0 * anchor
        ploc, _ = network(torch.zeros(1, 3, 300, 300))

    x_offsets = ploc[0, 0]
    boxes = dboxes300_coco()
    start = 0
    for size, step, anchors in zip(FEATURE_SIZES, STEPS, BOXES_PER_LOCATION):
        count = anchors * size * size
        anchor = (x_offsets[start : start + count] // 10_000).long()
        pixel = (x_offsets[start : start + count] % 10_000).long()
        row, column = pixel // size, pixel % size
        cells = 300 / step
        assert_close(boxes[start : start + count, 0], ((column + 0.5) / cells).float().clamp(0, 1))
        assert_close(boxes[start : start + count, 1], ((row + 0.5) / cells).float().clamp(0, 1))
        # all boxes of one anchor share one size, and anchors appear in blocks of size*size
        assert torch.equal(anchor, torch.arange(anchors).repeat_interleave(size * size))
        start += count
    assert start == 8732


def test_decode_of_zero_offsets_gives_the_default_boxes_as_corners():
    dboxes = dboxes300_coco()
    corners = decode_boxes(torch.zeros(1, 4, 8732), dboxes)[0]
    assert_close(corners[:, :2], dboxes[:, :2] - dboxes[:, 2:] / 2)
    assert_close(corners[:, 2:], dboxes[:, :2] + dboxes[:, 2:] / 2)


def test_decode_scales_offsets_by_0_1_and_0_2():
    # one box (cx, cy, w, h) = (0.5, 0.5, 0.2, 0.4); offsets (1, -2, ln 2 / 0.2, 0):
    # cx = 0.5 + 0.1 * 1 * 0.2 = 0.52; cy = 0.5 + 0.1 * -2 * 0.4 = 0.42
    # w = 0.2 * exp(0.2 * ln2 / 0.2) = 0.4; h = 0.4 -> corners (0.32, 0.22, 0.72, 0.62)
    dbox = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    offsets = torch.tensor([[[1.0], [-2.0], [math.log(2) / 0.2], [0.0]]])
    assert_close(decode_boxes(offsets, dbox)[0, 0], torch.tensor([0.32, 0.22, 0.72, 0.62]))
