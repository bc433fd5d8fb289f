"""Benchmarks behind ``vmpc bench ...``: each measures side by side in one run."""
