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


class StandInSession:
    """What gpu_check reads of an onnxruntime.InferenceSession: the providers it registered."""

    def __init__(self, providers: list[str]):
        self.providers = providers

    def get_providers(self) -> list[str]:
        return list(self.providers)


def test_onnx_rows_are_labelled_by_the_provider_the_session_really_got():
    trt, cuda, cpu = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    assert gpu_check.provider_chain(trt, {"trt_fp16_enable": True}) == [
        (trt, {"trt_fp16_enable": True}),
        cuda,
        cpu,
    ]
    assert gpu_check.provider_chain(cuda, {}) == [(cuda, {}), cpu]  # CUDA not listed twice

    running = gpu_check.session_providers(trt, StandInSession([trt, cuda, cpu]))
    assert running["provider"] == trt and not running["fell_back"] and running["label"] == trt
    assert running["session_providers"] == [trt, cuda, cpu]
    # TensorRT could not start (its libraries missing, say): ONNX Runtime only warns and runs CUDA.
    fallen = gpu_check.session_providers(trt, StandInSession([cuda, cpu]))
    assert fallen["provider"] == cuda and fallen["fell_back"]
    assert fallen["label"] == f"{cuda} ({trt} requested: ONNX Runtime fell back)"
    on_cpu = gpu_check.session_providers(cuda, StandInSession([cpu]))
    assert on_cpu["provider"] == cpu and on_cpu["fell_back"]

    rows = [
        {**running, "batch_size": 64, "images_per_s": 900.0, "first_call_s": 80.0},
        {**fallen, "batch_size": 64, "images_per_s": 400.0, "first_call_s": 2.0},
    ]
    report = "\n".join(gpu_check.onnx_markdown({"available": [trt, cuda, cpu], "providers": rows}))
    assert f"| ONNX Runtime img/s | {trt} (first call 80.0 s) | 64 | 900.0 |" in report
    assert f"| ONNX Runtime img/s | {cuda} ({trt} requested: ONNX Runtime fell back) (first call" in report
    assert f"{trt} requested: the session's providers were {cuda} > {cpu}." in report
