"""Benchmark matrix and report: methods × tasks × weight sources × seeds, resumable, with CIs.

Entry point: ``python -m downstream.benchmark --config configs/benchmark/<name>.yaml``. Python API:
:func:`downstream.benchmark.api.run_benchmark`.
"""
