"""Running the built engines and comparing their detections (tests/test_onnx.py, test_fp16.py)."""

from __future__ import annotations

import collections
import shutil
import warnings
from pathlib import Path

import onnxruntime
import torch

from ssd300_build.onnx_export import ONNX_FILE
from ssd300_common import contract
from ssd300_serving.served_code import load_selection

REPO_ROOT = Path(__file__).resolve().parents[2]
selection = load_selection()
# The served defaults as select_detections arguments.
DEFAULTS = {
    argument: contract.POSTPROCESS_DEFAULTS[name] for name, (argument, _) in selection.SETTINGS.items()
}

# Parity tolerances between engines (same FP32 network, different kernels).
BOX_TOLERANCE = 2e-4
SCORE_TOLERANCE = 2e-4
# Detections this close to an image's cut (its 200th score, or the 0.05 threshold) may be in
# one engine's top 200 and not the other's: they are left out of the comparison.
CUT_MARGIN = 1e-3


def select(boxes, scores):
    """The served selection (CPU function) with the served defaults."""
    return selection.select_detections(boxes, scores, **DEFAULTS)


def copy_repository(tmp_path_factory, name: str) -> Path:
    """A copy of model_repository/ without anything the build generates."""
    repository = tmp_path_factory.mktemp(name) / "model_repository"
    shutil.copytree(
        REPO_ROOT / "model_repository",
        repository,
        ignore=shutil.ignore_patterns("model.pt", "model.onnx", "weights.json", "imaging.py", "__pycache__"),
    )
    return repository


def run_torchscript(repository, images: torch.Tensor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(repository / contract.NETWORK_MODEL / "1" / "model.pt"))
    with torch.inference_mode():
        return model(images)


def run_onnx(repository, images: torch.Tensor):
    session = onnxruntime.InferenceSession(
        str(repository / contract.NETWORK_MODEL / "1" / ONNX_FILE), providers=["CPUExecutionProvider"]
    )
    boxes, scores = session.run(None, {contract.IMAGES_INPUT: images.numpy()})
    return torch.from_numpy(boxes), torch.from_numpy(scores)


def rows_of(boxes, scores, labels, count):
    """One image's detections as (label, score, box) rows."""
    return [
        (int(label), float(score), box)
        for box, score, label in zip(boxes[:count], scores[:count], labels[:count])
    ]


def assert_rows_match(expected, actual, *, box_tol, score_tol, min_score=0.0, where=""):
    """Two detection lists of one image are the same set (labels equal, boxes and scores within
    tolerance) above the cut; returns how many rows were compared.

    The cut is the higher of ``min_score`` and the lowest score either list kept (its 200th,
    when full): a detection within a margin of it may be in one list and not the other."""
    cut = max([min_score, *(min(score for _, score, _ in rows) for rows in (expected, actual) if rows)])
    margin = max(CUT_MARGIN, 2 * score_tol)  # a row within tolerance of the cut may fall either side
    sides = [[row for row in rows if row[1] > cut + margin] for rows in (expected, actual)]
    for mine, theirs in (sides, sides[::-1]):
        for label, score, box in mine:
            assert any(
                other_label == label
                and abs(other_score - score) <= score_tol
                and float((other_box - box).abs().max()) <= box_tol
                for other_label, other_score, other_box in theirs
            ), f"{where}label {label} score {score:.5f} box {box.tolist()} has no match"
    return len(sides[0])


def assert_same_detections(expected_outputs, actual_outputs, *, box_tol, score_tol, min_score=0.0):
    """Network outputs of two engines → the served selection → the same detections per image."""
    expected, actual = select(*expected_outputs), select(*actual_outputs)
    compared = 0
    for image in range(len(expected[0])):
        rows = [
            rows_of(r[0][image], r[1][image], r[2][image], int(r[3][image, 0])) for r in (expected, actual)
        ]
        compared += assert_rows_match(
            *rows, box_tol=box_tol, score_tol=score_tol, min_score=min_score, where=f"image {image}: "
        )
    assert compared > 0, "nothing above the cut to compare"
    return compared


def nvidia_format_checkpoint(state: dict) -> dict:
    """A state dict wrapped like a DeepLearningExamples training checkpoint (DDP prefixes,
    optimizer and scheduler state, label map)."""
    return {
        "epoch": 64,
        "model": {f"module.{k}": v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 2.6e-3, "momentum": 0.9, "params": [0, 1]}]},
        "scheduler": {"milestones": collections.Counter({43: 1, 54: 1}), "gamma": 0.1, "last_epoch": 64},
        "label_map": {i: i for i in range(1, 81)},
    }
