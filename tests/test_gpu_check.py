"""`make gpu-check` on CUDA machines; here its CPU dry run, so the script cannot rot."""

from __future__ import annotations

import json

from load_tests.benchmark import gpu_check


def test_gpu_check_dry_run_on_cpu_writes_every_figure(built_repository, tmp_path):
    out = tmp_path / "gpu_check"
    code = gpu_check.main(
        [
            "--device", "cpu",
            "--repository", str(built_repository),
            "--out", str(out),
            "--batch-sizes", "1", "2",
            "--postprocess-batches", "2",
            "--pipeline-batch", "2",
            "--precisions", "fp32",
            "--repeats", "1",
            "--warmup", "0",
        ]
    )  # fmt: skip
    results = json.loads((out / "gpu_check.json").read_text())
    assert code == 0 and results["parity"]["equal"]
    assert results["parity"]["images"] == 4 and all(
        p["detections"] > 0 for p in results["parity"]["per_image"]
    )
    # TF32 is a CUDA setting: on a CPU only the plain FP32 rows exist
    assert [(r["precision"], r["tf32"], r["batch_size"]) for r in results["forward"]] == [
        ("fp32", False, 1),
        ("fp32", False, 2),
    ]
    assert all(r["images_per_s"] > 0 for r in results["forward"])
    functions = {r["function"] for r in results["postprocess"]}
    assert {"select_detections", "torchvision batched_nms"} <= functions
    assert results["pipeline"]["batch_size"] == 2 and results["pipeline"]["images_per_s"] > 0
    assert (
        "no CUDA or TensorRT execution provider" in results["onnx"]["note"]
        or "missing" in results["onnx"]["note"]
    )
    table = (out / "gpu_check.md").read_text()
    assert "| model.pt cpu vs CPU, detections | 4 sample photos | 4 | equal (0 unmatched) |" in table
    assert "torchvision batched_nms" in table and "pipeline img/s" in table
