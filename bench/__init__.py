"""Benchmarks, run by hand (``.venv/bin/python -m bench.<name>``), never by pytest.

``bench.harness`` starts gunicorn servers and drives a bounded load; each benchmark
prints its figures beside a baseline measured in the same run (see bench/README.md).
"""
