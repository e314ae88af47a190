"""``make perf``: perf_analyzer 2.51 (the server's release) against the embedded server for the
detector's uint8 tensors over gRPC, HTTP and system shared memory, and for JPEG bytes to
``ssd300_image``. Its files go to ``reports/perf/``; its table, its commands and a plot to
``load_tests/BENCHMARK.md``. ``make bench`` measures its served points with the same runner.
"""
