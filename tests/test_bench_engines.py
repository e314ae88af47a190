"""The benchmark's engine comparison: which engine it calls faster, and how it reports both."""

from __future__ import annotations

from load_tests.benchmark import engines

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
