"""Throughput measurement: agebench against its baselines and its own limit, in one run."""
