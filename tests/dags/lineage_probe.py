"""A DAG whose tasks report OpenLineage metadata through ``airflow_provider_activities.lineage``,
for the end-to-end lineage test (``tests/test_lineage.py``).

Each task writes a few real Parquet rows below ``{output_path}/{dataset}`` (one partition, two
files) and returns :func:`~airflow_provider_activities.lineage.run_lineage` from both
OpenLineage methods: on start the API endpoint, the dataset root and its schema; on complete
the same plus what was written. ``extract_activities`` stands for the activities operator
(flat schema), ``export_raw_activities`` for the export operator (the nested raw schema).

``output_path`` comes from the Variable ``lineage_output_path``
(``AIRFLOW_VAR_LINEAGE_OUTPUT_PATH``), the API's base URL from ``lineage_base_url``: the test
gives it user info and a query to check that neither reaches an event.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import DAG

from airflow_provider_activities.compat import BaseOperator, ObjectStoragePath
from airflow_provider_activities.lineage import OutputStatistics, run_lineage
from airflow_provider_activities.records.schemas import ACTIVITY_SCHEMA, RAW_ACTIVITY_SCHEMA

ROWS_PER_FILE = (3, 2)


class LineageProbeOperator(BaseOperator):
    """Writes ``sum(ROWS_PER_FILE)`` rows of ``schema`` in ``len(ROWS_PER_FILE)`` files below
    ``{output_path}/{dataset}/activity_date=2026-11-01`` and reports its lineage.
    """

    template_fields = ("output_path", "base_url")

    def __init__(
        self, *, output_path: str, base_url: str, endpoint_path: str, dataset: str, schema: pa.Schema, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.output_path = output_path
        self.base_url = base_url
        self.endpoint_path = endpoint_path
        self.dataset = dataset
        self.schema = schema
        self.statistics: OutputStatistics | None = None

    def _root(self) -> ObjectStoragePath:
        return ObjectStoragePath(self.output_path) / self.dataset

    def execute(self, context: Any) -> dict[str, int]:
        partition = self._root() / "activity_date=2026-11-01"
        partition.mkdir(parents=True, exist_ok=True)
        size = 0
        for number, rows in enumerate(ROWS_PER_FILE):
            table = pa.Table.from_pylist(
                [{"uid": f"u{number}-{row}", "timestamp": datetime(2026, 11, 1, tzinfo=timezone.utc)} for row in range(rows)],
                schema=self.schema,
            )
            target = partition / f"part-{number:05d}.parquet"
            with target.open("wb") as sink:
                pq.write_table(table, sink)
            size += target.stat().st_size
        self.statistics = OutputStatistics(rows=sum(ROWS_PER_FILE), bytes=size, files=len(ROWS_PER_FILE))
        return {"rows": self.statistics.rows, "bytes": size}

    def get_openlineage_facets_on_start(self) -> Any:
        return run_lineage(base_url=self.base_url, endpoint_path=self.endpoint_path, root=self._root(), schema=self.schema)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return run_lineage(
            base_url=self.base_url,
            endpoint_path=self.endpoint_path,
            root=self._root(),
            schema=self.schema,
            statistics=self.statistics,
        )


with DAG(
    dag_id="peopleai_lineage_probe",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["peopleai", "test"],
) as dag:
    LineageProbeOperator(
        task_id="extract_activities",
        output_path="{{ var.value.lineage_output_path }}",
        base_url="{{ var.value.lineage_base_url }}",
        endpoint_path="/v0/public/activities",
        dataset="activities",
        schema=ACTIVITY_SCHEMA,
    )
    LineageProbeOperator(
        task_id="export_raw_activities",
        output_path="{{ var.value.lineage_output_path }}",
        base_url="{{ var.value.lineage_base_url }}",
        endpoint_path="/pull/v1/export/activities/jobs",
        dataset="raw_activities",
        schema=RAW_ACTIVITY_SCHEMA,
    )
