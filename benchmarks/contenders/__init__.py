"""One module per contender (the two transports share one); each runs as ``python -m benchmarks.contenders.<name> '<spec json>'``.

A contender reads its :class:`~benchmarks.contenders.common.Spec`, imports its libraries, then
times the extraction alone (``extract_seconds``: from the first thing the run does to the last
file written, imports excluded) and prints one ``BENCH_RESULT {json}`` line. The runner
measures the process from outside (wall time, peak RSS via ``wait4``).

Five contenders, four modules: ``transport`` and ``transport-arrow`` are both
:mod:`benchmarks.contenders.transport`, with ``options.parser`` ``json`` and ``arrow``
(:data:`CONTENDER_OPTIONS`).
"""

CONTENDERS = ("provider", "naive", "dlt", "transport", "transport-arrow")
"""Every contender, in the order the runner runs and reports them."""

MODULES = {
    "provider": "benchmarks.contenders.provider",
    "naive": "benchmarks.contenders.naive",
    "dlt": "benchmarks.contenders.dlt_rest",
    "transport": "benchmarks.contenders.transport",
    "transport-arrow": "benchmarks.contenders.transport",
}
"""The module each contender runs as (``python -m <module> <spec>``)."""

CONTENDER_OPTIONS: dict[str, dict[str, object]] = {
    "transport": {"parser": "json"},
    "transport-arrow": {"parser": "arrow"},
}
"""``Spec.options`` each contender runs with (the runner's own options, such as ``parse``, are added)."""

TRANSPORTS = ("transport", "transport-arrow")
"""The transport-limit contenders: the faster of them, in a regime and size, is the floor."""
