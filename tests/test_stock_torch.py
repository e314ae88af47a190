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


def runs(shift: float = 0.0, *, move_score: float = 0.0) -> tuple[dict, dict]:
    """Two runs' outputs.npz arrays: the stock one's network outputs shifted by ``shift``, one
    detection of its select_detections_gpu moved by ``move_score``."""
    rng = np.random.default_rng(0)
    dev = {"boxes": rng.random((2, 80, 200, 4), dtype=np.float32), "scores": rng.random((2, 80, 200))}
    stock = {"boxes": dev["boxes"] + shift, "scores": dev["scores"].copy()}
    for name in SELECTIONS:
        scores = np.sort(rng.random((2, 5), dtype=np.float32))[:, ::-1] * 0.5 + 0.5  # highest first
        detections = [
            rng.random((2, 5, 4), dtype=np.float32),
            scores,
            rng.integers(1, 81, (2, 5)),
            np.full((2, 1), 5),
        ]
        for index, array in enumerate(detections):
            dev[f"{name}_{index}"], stock[f"{name}_{index}"] = array, array.copy()
    stock["select_detections_gpu_1"][0, 0] += move_score
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


def test_detections_must_match_within_the_output_tolerance():
    assert compare(*runs(move_score=OUTPUT_TOLERANCE / 2))["select_detections_gpu_detections_match"]
    result = compare(*runs(move_score=OUTPUT_TOLERANCE * 10))
    assert not result["select_detections_gpu_detections_match"]
    assert result["select_detections_detections_match"] and result["outputs_match"]


@pytest.mark.slow
def test_the_stock_torch_runs_model_pt_the_selections_and_gpu_check(tmp_path):
    """The real run, against a repository without model.pt (so both torches load one traced here)."""
    repository = tmp_path / "repository"
    repository.mkdir()
    status = main(["--repository", str(repository), "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert status == 0 and result["ok"], result
    assert result["stock_torch"].startswith("2.5.1") and result["max_abs_diff_scores"] <= OUTPUT_TOLERANCE
    report = json.loads((tmp_path / "out" / "gpu_check" / "gpu_check.json").read_text())
    assert [row["verdict"] for row in report["parity"]] == ["not run"] * 4  # fp32 and fp16: no GPU here
    assert len(report["forward"]) == 3 and all(row["value"] > 0 for row in report["forward"])
    # that venv is the lent machine's situation: torch, torchvision, numpy and Pillow, nothing of ours
    python = REPO_ROOT / ".tools" / "torch-2.5.1" / "bin" / "python"
    for module in ("tritonclient", "pytriton", "onnx", "ssd300_client"):
        command, env = [str(python), "-c", f"import {module}"], {"PATH": os.environ["PATH"]}  # no PYTHONPATH
        probe = subprocess.run(command, env=env, capture_output=True, text=True)
        assert f"No module named '{module}'" in probe.stderr
