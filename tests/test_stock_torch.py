"""``make stock-torch`` (tools/stock_torch.py): its verdicts on arrays with known differences, and,
marked ``slow`` because it installs the stock container's torch (~3 GB into .tools/ on its first
run), the real run: model.pt, the selections and gpu-check under torch 2.5.1."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from tools.stock_torch import OUTPUT_TOLERANCE, REPO_ROOT, SELECTIONS, compare, main


def runs(shift: float = 0.0, *, change_selection: bool = False) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    dev = {"boxes": rng.random((2, 80, 200, 4), dtype=np.float32), "scores": rng.random((2, 80, 200))}
    stock = {"boxes": dev["boxes"] + shift, "scores": dev["scores"].copy()}
    for name in SELECTIONS:
        detections = [
            rng.random((2, 5, 4)),
            rng.random((2, 5)),
            rng.integers(1, 81, (2, 5)),
            np.full((2, 1), 5),
        ]
        for index, array in enumerate(detections):
            dev[f"{name}_{index}"], stock[f"{name}_{index}"] = array, array.copy()
    if change_selection:
        stock["select_detections_gpu_1"][0, 0] += 1e-7
    return dev, stock


def test_equal_runs_pass():
    result = compare(*runs())
    assert all(value is True for key, value in result.items() if not key.startswith("max_abs_diff"))
    assert result["max_abs_diff_boxes"] == 0.0


def test_network_differences_within_the_tolerance_pass_and_beyond_it_fail():
    assert compare(*runs(OUTPUT_TOLERANCE / 2))["outputs_match"]
    result = compare(*runs(OUTPUT_TOLERANCE * 10))
    assert not result["outputs_match"]
    assert result["max_abs_diff_boxes"] == pytest.approx(OUTPUT_TOLERANCE * 10, rel=1e-3)  # float32 boxes


def test_selection_must_be_bit_identical_on_the_same_outputs():
    result = compare(*runs(change_selection=True))
    assert not result["select_detections_gpu_identical_on_same_outputs"]
    assert result["select_detections_identical_on_same_outputs"] and result["outputs_match"]


@pytest.mark.slow
def test_the_stock_torch_runs_model_pt_the_selections_and_gpu_check(tmp_path):
    """The real run, against a repository without model.pt (so both torches load one traced here)."""
    repository = tmp_path / "repository"
    repository.mkdir()
    status = main(["--repository", str(repository), "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert status == 0 and result["ok"], result
    assert result["stock_torch"].startswith("2.5.1") and result["gpu_check_torch"] == result["stock_torch"]
    report = json.loads((tmp_path / "out" / "gpu_check" / "gpu_check.json").read_text())
    assert [row["verdict"] for row in report["parity"]] == ["not run"] * 4  # fp32 and fp16: no GPU here
    assert len(report["forward"]) == 3 and all(row["value"] > 0 for row in report["forward"])
    # that venv is the lent machine's situation: torch, torchvision, numpy and Pillow, nothing of ours
    python = REPO_ROOT / ".tools" / "torch-2.5.1" / "bin" / "python"
    for module in ("tritonclient", "pytriton", "onnx", "ssd300_client"):
        command, env = [str(python), "-c", f"import {module}"], {"PATH": os.environ["PATH"]}  # no PYTHONPATH
        probe = subprocess.run(command, env=env, capture_output=True, text=True)
        assert f"No module named '{module}'" in probe.stderr
