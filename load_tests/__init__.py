"""Load tests: ``locustfile.py`` (``make load``, ``python -m load_tests.run``, and the Helm chart's
in-cluster run), and the benchmarks of ``make bench``, ``perf``, ``gpu-check`` and ``analyze``."""
