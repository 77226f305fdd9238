"""Contender 1, this provider: ``PeopleAIActivitiesToParquetOperator.execute`` for one day into ``file://`` Parquet.

The operator's own code path, end to end: connection lookup, hook (OAuth2 client credentials,
rate limiter, read-ahead pagination), record filter, Arrow conversion, partitioned Parquet
writer, publish with manifests. Only the Airflow task runner around it is left out
(``execute`` gets ``{"run_id": "bench"}`` as its context).

The connection carries the spec's ``page_size``, ``max_concurrency`` and ``requests_per_second``
as extras, or, with ``options.connection_defaults`` (the API-bound regime), no extras at all:
the provider then runs as a connection with only host, key and secret does (page sizes learnt
from the server, 5 requests/s, 10 in flight).
"""

from __future__ import annotations

from datetime import date, timedelta

from benchmarks.contenders.common import Clock, Spec, emit, provider_process

CPU_BOUND_RATE = 10_000.0
"""``requests_per_second`` when the spec sets no rate: high enough that the client never paces."""


def connection_extras(spec: Spec) -> dict[str, object]:
    """The connection's extras: none with ``options.connection_defaults``, else the spec's settings."""
    if spec.options.get("connection_defaults"):
        return {}
    return {
        "page_size": spec.page_size,
        "max_concurrency": spec.concurrency,
        "requests_per_second": spec.requests_per_second or CPU_BOUND_RATE,
    }


def main() -> None:
    spec = Spec.from_argv()
    provider_process(spec.base_url, spec.client_id, spec.client_secret, connection_extras(spec), spec.out_dir)
    from airflow_provider_activities.operators.peopleai import PeopleAIActivitiesToParquetOperator

    day = date.fromisoformat(spec.day)
    clock = Clock()
    clock.start()
    operator = PeopleAIActivitiesToParquetOperator(
        task_id="bench",
        output_path=f"file://{spec.out_dir}",
        start=f"{day.isoformat()}T00:00:00+00:00",
        end=f"{(day + timedelta(days=1)).isoformat()}T00:00:00+00:00",
    )
    summary = operator.execute({"run_id": "bench"})
    clock.stop()
    emit(clock, summary["rows"], partitions=len(summary["partitions"]))


if __name__ == "__main__":
    main()
