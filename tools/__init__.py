"""Developer tools run from the repository root: ``python -m tools.demo`` (``make demo``),
``python -m tools.reliability_report`` (``make reliability``)."""
