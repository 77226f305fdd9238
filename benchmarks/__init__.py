"""Benchmarks of the provider against the alternatives a data engineer would pick (issue 7).

``python -m benchmarks.run --records 100000,1000000`` (or ``make bench``); see :mod:`benchmarks.run`.
"""
