"""One module per contender; each runs as ``python -m benchmarks.contenders.<name> '<spec json>'``.

A contender reads its :class:`~benchmarks.contenders.common.Spec`, imports its libraries, then
times the extraction alone (``extract_seconds``: from the first thing the run does to the last
file written, imports excluded) and prints one ``BENCH_RESULT {json}`` line. The runner
measures the process from outside (wall time, peak RSS via ``wait4``).
"""

CONTENDERS = ("provider", "naive", "dlt", "transport")
