"""perf_analyzer, Triton's load generator: the runner (``analyzer``), its input files and its report,
shared by ``make bench`` and ``make perf`` (``python -m load_tests.benchmark [--perf]``)."""
