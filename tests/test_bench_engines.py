"""The benchmark's engine comparison: which engine it calls faster, and how it reports both."""

from __future__ import annotations

import json
from contextlib import ExitStack

from load_tests.benchmark import engines, serving
from ssd300_serving.provenance import read_provenance

from .helpers.perf_points import perf_point


def row(size, torchscript, onnx):
    return {
        "batch_size": size,
        "torchscript_images_per_s": torchscript,
        "onnx_images_per_s": onnx,
        "onnx_vs_torchscript": onnx / torchscript,
        "max_abs_diff_scores": 1e-6,
        "max_abs_diff_boxes": 2e-6,
    }


def point(concurrency, images_per_s):
    return perf_point(concurrency, images_per_s, p95_ms=150.0, foreign_cpu_share=0.05)


def results(rows):
    inprocess = {"threads": 2, "onnxruntime": "1.32.0", "rows": rows, "foreign_cpu_share": 0.1}
    return {"inprocess": inprocess, "triton": [point(1, 3.5), point(4, 4.0)]}


def test_the_engine_faster_at_most_batch_sizes_wins():
    assert engines.faster_engine(results([row(1, 2.0, 3.0), row(4, 2.0, 2.5), row(8, 2.0, 1.9)])) == "onnx"
    assert (
        engines.faster_engine(results([row(1, 2.0, 3.0), row(4, 2.0, 1.5), row(8, 2.0, 1.9)]))
        == "torchscript"
    )


def test_report_section_puts_both_engines_side_by_side_with_the_cpu_share():
    lines = engines.markdown(results([row(1, 2.0, 3.0)]), [point(1, 2.5)])
    text = "\n".join(lines)
    assert "| 1 | 2.00 | 3.00 | 1.50× |" in text
    assert "| TorchScript (torch) | 1 | 2.50 |" in text and "| ONNX Runtime | 4 | 4.00 |" in text
    assert "other processes used 10" in text
    assert "Faster here in process: **ONNX Runtime**" in text


def built_repository(root, engine: str, precision: str = "fp32"):
    """A repository as `make model` leaves it (stand-in model files: nothing loads them here)."""
    version = root / "model_repository" / "ssd300" / "1"
    version.mkdir(parents=True)
    (version / "model.pt").write_bytes(b"traced")
    if engine == "onnx":
        (version / "model.onnx").write_bytes(b"exported")
    provenance = {"weights": "file", "engine": engine, "precision": precision}
    (version / "weights.json").write_text(json.dumps(provenance))
    (root / "model_repository" / "ssd300_postprocess").mkdir()
    return root / "model_repository"


def test_the_main_run_serves_torchscript_whichever_engine_the_build_chose(tmp_path):
    as_built = built_repository(tmp_path / "torchscript", "torchscript")
    with ExitStack() as stack:
        assert serving.served_repository(as_built, None, {}, stack) == as_built
    onnx_build = built_repository(tmp_path / "onnx", "onnx")
    with ExitStack() as stack:
        view = serving.served_repository(onnx_build, None, {}, stack)
        assert view != onnx_build
        assert read_provenance(view) == {"weights": "file", "engine": "torchscript", "precision": "fp32"}
        assert (view / "ssd300" / "1" / "model.pt").resolve() == onnx_build / "ssd300" / "1" / "model.pt"
        assert (view / "ssd300_postprocess").resolve() == onnx_build / "ssd300_postprocess"
    assert read_provenance(onnx_build)["engine"] == "onnx"  # the build itself is untouched
    assert not view.exists()  # the view lives as long as the run


def test_an_fp16_build_is_not_served_on_cpus_the_run_builds_its_own(tmp_path, monkeypatch):
    fp16_build = built_repository(tmp_path, "torchscript", precision="fp16")
    written = []
    monkeypatch.setattr(serving, "write_model", lambda network, copy, metadata: written.append(copy))
    with ExitStack() as stack:
        copy = serving.served_repository(fp16_build, "network", {"weights": "random"}, stack)
        assert copy != fp16_build and written == [copy]
        assert not (copy / "ssd300" / "1" / "model.pt").exists()  # write_model's to write
