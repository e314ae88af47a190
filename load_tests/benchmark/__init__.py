"""``make bench``: one run on one machine, every figure from that run.

In-process (the network and both postprocesses, no server) first, then the embedded Triton
server under perf_analyzer's closed-loop load (``load_tests.perf.analyzer``) over gRPC, HTTP,
gRPC with system shared memory, and the server-side-decode ensemble. Results go to
reports/bench/ (JSON, Markdown, PNG) and the Markdown is copied to load_tests/BENCHMARK.md.
"""
