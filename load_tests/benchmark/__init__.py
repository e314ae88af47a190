"""``make bench``: one run on one machine, every figure from that run, in about ten minutes.

In process, on the calibrated random network: the served postprocess against NVIDIA's per-class
reference decode, and both engines of one build back to back. Served: perf_analyzer over gRPC
and to the server-side-decode ensemble (``load_tests.perf.analyzer``, the runner of ``make
perf``). Results go to reports/bench/; the report is load_tests/BENCHMARK.md's bench section.
"""
