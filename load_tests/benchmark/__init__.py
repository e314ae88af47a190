"""``make bench`` (one run, every figure from it: in process, the postprocess against NVIDIA's
reference decode and both engines; served, perf_analyzer over gRPC and to ``ssd300_image``) and
``make gpu-check``. Results go to reports/; the report is load_tests/BENCHMARK.md."""
