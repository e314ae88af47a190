"""The verdicts of ``make stock-torch`` (tools/stock_torch.py) on arrays with known differences;
the real run installs the stock container's torch (~3 GB), so it is an explicit target."""

from __future__ import annotations

import numpy as np

from tools.stock_torch import OUTPUT_TOLERANCE, SELECTIONS, compare


def runs(shift: float = 0.0, *, change_selection: bool = False) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    dev = {
        "boxes": rng.random((2, 8732, 4), dtype=np.float32),
        "scores": rng.random((2, 80, 8732), dtype=np.float32),
    }
    stock = {"boxes": dev["boxes"] + shift, "scores": dev["scores"].copy()}
    for name in SELECTIONS:
        detections = [
            rng.random((2, 5, 4)),
            rng.random((2, 5)),
            rng.integers(1, 81, (2, 5)),
            np.array([[5], [5]]),
        ]
        for index, array in enumerate(detections):
            dev[f"{name}_{index}"] = array
            stock[f"dev_{name}_{index}"] = array.copy()
            stock[f"own_{name}_{index}"] = array + shift if index < 2 else array.copy()
    if change_selection:
        stock["dev_select_detections_gpu_1"] = stock["dev_select_detections_gpu_1"] + 1e-7
    return dev, stock


def test_equal_runs_pass():
    result = compare(*runs())
    assert result["ok"] and result["max_abs_diff_boxes"] == 0.0


def test_network_differences_within_the_tolerance_pass_and_beyond_it_fail():
    assert compare(*runs(OUTPUT_TOLERANCE / 2))["ok"]
    result = compare(*runs(OUTPUT_TOLERANCE * 10))
    assert not result["ok"] and not result["outputs_match"]
    assert not result["select_detections_matches_on_own_outputs"]


def test_selection_must_be_bit_identical_on_the_same_outputs():
    result = compare(*runs(change_selection=True))
    assert not result["ok"]
    assert not result["select_detections_gpu_identical_on_same_outputs"]
    assert result["select_detections_identical_on_same_outputs"]
