"""Load tests (Locust) and the benchmark for the SSD300 Triton deployment.

``locustfile.py`` is what Locust (and the Helm chart's in-cluster load test) runs;
``python -m load_tests.run`` is ``make load``; ``python -m load_tests.benchmark`` is ``make bench``.
"""
