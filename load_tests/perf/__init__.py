"""``make perf``: Triton's own perf_analyzer (2.51, the server's release) against the embedded
server, over a concurrency range, for the detector's uint8 tensors (over gRPC, HTTP and through
system shared memory) and for JPEG bytes to ``ssd300_image``. perf_analyzer's CSVs go to
``reports/perf/``; a table and a plot go into ``load_tests/BENCHMARK.md``. ``make bench``
measures its served points with the same runner (``analyzer.Runner``).
"""
