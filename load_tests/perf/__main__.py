"""``python -m load_tests.perf`` (``make perf``): the benchmark's command line without its
in-process part, over every scenario (load_tests/benchmark/__main__.py)."""

import sys

from load_tests.benchmark.__main__ import main

if __name__ == "__main__":
    sys.exit(main(perf=True))
